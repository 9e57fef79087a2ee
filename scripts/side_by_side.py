"""The reference half of scripts/side_by_side.sh (docs/side-by-side.md).

Runs one workload of issue 14 on a reference implementation fetched into a scratch folder
(never into this repository) and prints one JSON line:

    python side_by_side.py --ref DIR two-layer NTR [REPS]          # authors' MadVamp (parthe/ML-Mat-VAMP)
    python side_by_side.py --vampyre DIR vamp-sparse NZ NY [ITERS] [REPS]
    python side_by_side.py --vampyre DIR mlvamp-probit NZ0 NZ1 [ITERS] [REPS]

The problems are generated here (as the references' own test scripts do, with numpy's global
generator) and only the solver is timed: `solver.solve()` for vampyre (per iteration), the whole
20-iteration trial with its per-iteration test metric for the authors' code.

vampyre's rows give two per-iteration times: the run's time over its ITERS iterations
(`seconds_per_iteration`, one-time work included: vampyre's initial estimate, for example) and
the marginal time of an iteration, `(T(ITERS) - T(1)) / (ITERS - 1)` from a second run of one
iteration on the same data (`seconds_per_marginal_iteration`, one-time work cancelled).
"""

import argparse
import json
import sys
import time
import types

import numpy as np


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def two_layer(ref, ntr, reps):
    # The authors' modules import matplotlib.pyplot at top level but do not use it to solve.
    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = types.ModuleType("matplotlib.pyplot")
    sys.modules.setdefault("matplotlib", mpl)
    sys.modules.setdefault("matplotlib.pyplot", mpl.pyplot)
    sys.path.insert(0, ref + "/diy_expts")
    import neural_est
    from madvamp import MadVamp
    from matrix_msg import MsgHandler

    nin, d, nout, nts, snr, wcorr = 100, 4, 1, 1000, 10.0, 0.25
    times, mses = [], []
    for rep in range(reps):
        np.random.seed(1000 + rep)
        # The data of the paper's Section 5 (spec section 7.1).
        w1 = np.random.normal(0, 1, (nin, d))
        w2 = np.random.normal(0, 1, (d, nout))
        w1init = np.sqrt(wcorr) * w1 + np.random.normal(0, np.sqrt(1 - wcorr), w1.shape)
        w1err = (1 - np.sqrt(wcorr)) ** 2
        x = np.random.normal(0, np.sqrt(1 / nin), (ntr + nts, nin))
        z0 = x.dot(w1)
        y0 = (1 / (1 + np.exp(-z0))).dot(w2)
        yvar = np.mean(y0 ** 2) * 10 ** (-0.1 * snr)
        y = y0 + np.random.normal(0, np.sqrt(yvar), y0.shape)
        xtr, ytr, xts, yts = x[:ntr], y[:ntr], x[ntr:], y[ntr:]
        est0 = neural_est.NeuralInEst(X=xtr, d=d, wvar=np.mean(w1 ** 2), Winit=w1init, werr=w1err)
        est1 = neural_est.NeuralOutEst(Y=ytr, shape=z0[:ntr].shape, yvar=yvar,
                                       act_type="sigmoid", wtrain=False, Winit=w2)
        msg0 = MsgHandler(lam_min=1e-3, lam_max=1e3, damp=0.0)
        msg1 = MsgHandler(lam_min=1e-3, lam_max=1e3, damp=0.0)

        def metric():
            yhat = (1 / (1 + np.exp(-xts.dot(est0.What)))).dot(est1.What)
            return np.mean((yhat - yts) ** 2) / yvar

        solver = MadVamp(est0, est1, msg0, msg1, Z0=z0[:ntr], nit=20, metric_cb=metric,
                         hist_list=["metric"])
        t = time.perf_counter()
        try:
            solver.solve()
            mse = float(solver.hist_dict["metric"][-1])
        except Exception as e:  # the reference fails on some draws; record it, keep the time
            mse = float("nan")
            print("reference trial failed: %r" % (e,), file=sys.stderr)
        times.append(time.perf_counter() - t)
        mses.append(mse)
    return {"workload": "two-layer", "ntr": ntr, "reps": reps,
            "seconds_per_trial": median(times), "final_test_mse_median": median(mses)}


def timed_with_marginal(build, nit):
    """Times `build(nit).solve()` and `build(1).solve()` (fresh solvers on the same data):
    the first run's seconds, the marginal seconds of an iteration (T(nit) - T(1)) / (nit - 1),
    the first run's solver."""
    def run(k):
        solver = build(k)
        t = time.perf_counter()
        solver.solve()
        return time.perf_counter() - t, solver

    t_one, _ = run(1)
    t_all, solver = run(nit)
    return t_all, (t_all - t_one) / (nit - 1), solver


def vampyre(path):
    # vampyre imports sklearn at top level for its GMM estimator only (not used here).
    if "sklearn" not in sys.modules:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            sk = types.ModuleType("sklearn")
            sk.mixture = types.ModuleType("sklearn.mixture")
            sys.modules["sklearn"] = sk
            sys.modules["sklearn.mixture"] = sk.mixture
    # vampyre (2017-2019) uses numpy aliases removed in numpy 1.24; restore them at run time.
    for name, alias in [("complex", complex), ("float", float), ("int", int), ("bool", bool),
                        ("object", object)]:
        if name not in np.__dict__:
            setattr(np, name, alias)
    sys.path.insert(0, path)
    import vampyre as vp
    return vp


def vamp_sparse(path, nz, ny, nit, reps):
    vp = vampyre(path)
    np.random.seed(7)
    a = np.random.normal(0, np.sqrt(1 / nz), (ny, nz))
    per_it, marginal, db = [], [], float("nan")
    for rep in range(reps):
        np.random.seed(100 + rep)
        z = np.random.normal(0, 1, (nz, 1)) * (np.random.uniform(0, 1, (nz, 1)) < 0.1)
        y0 = a.dot(z)
        wvar = 1e-3 * np.mean(y0 ** 2)
        y = y0 + np.random.normal(0, np.sqrt(wvar), y0.shape)

        def build(k):
            est_in = vp.estim.MixEst([vp.estim.DiscreteEst(0, 1, (nz, 1)),
                                      vp.estim.GaussEst(0, 1, (nz, 1))], w=np.array([0.9, 0.1]))
            est_out = vp.estim.LinEst(vp.trans.MatrixLT(a, (nz, 1)), y, wvar, map_est=False)
            msg = vp.estim.MsgHdlSimp(map_est=False, shape=(nz, 1))
            return vp.solver.Vamp(est_in, est_out, hist_list=[], nit=k, msg_hdl=msg)

        t_all, dt, solver = timed_with_marginal(build, nit)
        per_it.append(t_all / nit)
        marginal.append(dt)
        db = 10 * np.log10(np.sum((solver.zhat - z) ** 2) / np.sum(z ** 2))
    return {"workload": "vamp-sparse", "nz": nz, "ny": ny, "iterations": nit, "reps": reps,
            "seconds_per_iteration": median(per_it),
            "seconds_per_marginal_iteration": median(marginal), "final_nmse_db": float(db)}


def mlvamp_probit(path, nz0, nz1, nit, reps):
    vp = vampyre(path)
    rho, zvar0 = 0.1, 20.0
    np.random.seed(11)
    a = np.random.normal(0, np.sqrt(1 / nz0), (nz1, nz0))
    b = np.random.normal(0, 1, (nz1,))
    per_it, marginal, db = [], [], float("nan")
    for rep in range(reps):
        np.random.seed(300 + rep)
        z0 = np.random.normal(0, np.sqrt(zvar0), (nz0,)) * (np.random.uniform(0, 1, (nz0,)) < rho)
        az = a.dot(z0) + b
        wvar = 1e-3 * np.mean(az ** 2)
        z1 = az + np.random.normal(0, np.sqrt(wvar), (nz1,))
        y = z1 > 0

        def build(k):
            est_in = vp.estim.MixEst([vp.estim.GaussEst(0, zvar0, (nz0,)),
                                      vp.estim.DiscreteEst(0, 1, (nz0,))], [rho, 1 - rho])
            est_out = vp.estim.BinaryQuantEst(y, (nz1,), thresh=0)
            est_lin = vp.estim.LinEstTwo(vp.trans.MatrixLT(a, (nz0,)), b, wvar, est_meth="svd")
            msgs = [vp.estim.MsgHdlSimp(map_est=False, shape=(nz0,), damp=1),
                    vp.estim.MsgHdlSimp(map_est=False, shape=(nz1,), damp=1)]
            return vp.solver.mlvamp.MLVamp([est_in, est_lin, est_out], msgs, nit=k,
                                           hist_list=[])

        t_all, dt, solver = timed_with_marginal(build, nit)
        per_it.append(t_all / nit)
        marginal.append(dt)
        zh = solver.zhat[0]
        db = 10 * np.log10(1 - zh.dot(z0) ** 2 / (zh.dot(zh) * z0.dot(z0)))
    return {"workload": "mlvamp-probit", "nz0": nz0, "nz1": nz1, "iterations": nit,
            "reps": reps, "seconds_per_iteration": median(per_it),
            "seconds_per_marginal_iteration": median(marginal),
            "final_debiased_nmse_db": float(db)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ref")
    p.add_argument("--vampyre")
    p.add_argument("mode")
    p.add_argument("args", nargs="*", type=int)
    o = p.parse_args()
    a = o.args
    if o.mode == "two-layer":
        r = two_layer(o.ref, a[0], a[1] if len(a) > 1 else 5)
    elif o.mode in ("vamp-sparse", "mlvamp-probit") and len(a) > 2 and a[2] < 2:
        sys.exit("ITERS must be at least 2 (the marginal time of an iteration needs two runs)")
    elif o.mode == "vamp-sparse":
        r = vamp_sparse(o.vampyre, a[0], a[1], a[2] if len(a) > 2 else 10,
                        a[3] if len(a) > 3 else 3)
    elif o.mode == "mlvamp-probit":
        r = mlvamp_probit(o.vampyre, a[0], a[1], a[2] if len(a) > 2 else 10,
                          a[3] if len(a) > 3 else 3)
    else:
        sys.exit("unknown mode " + o.mode)
    print(json.dumps(r))


if __name__ == "__main__":
    main()

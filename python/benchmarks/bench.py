"""Speed of the Python package against the Rust program and against pure-numpy VAMP.

Two problems:

1. **The paper's two-layer trial** (Figure 2 at ``ntr = 1000``, SNR 10 dB, ML-Mat-VAMP only:
   ``mlmatvamp::apps::two_layer_vamp`` through ``experiments::fig2::run_two_layer``):
   ``mlmatvamp.two_layer(...)`` against ``mlmatvamp two-layer --methods ml-mat-vamp``.
2. **Compressed sensing, d = 1**: ``x`` (``n``) Bernoulli–Gaussian (``rho = 0.1``),
   ``A`` (``m x n``) Gaussian, ``y = A x + noise`` at 30 dB; ML-Mat-VAMP as a network (prior,
   one SVD linear layer, AWGN output) through ``mlmatvamp.solve`` against ``mlmatvamp run`` on
   the same data in a configuration file, and against a vampyre-style VAMP written here in
   numpy (SVD-based LMMSE, vectorised Bernoulli–Gaussian denoiser; Rangan, Schniter and
   Fletcher, 2019), the same number of iterations.

"Binding overhead" is the Python call's wall time minus the time spent inside the core's call
(``mlmatvamp._core._last_call_seconds()``: the driver, or the solver without the binding's
per-iteration hook), as a percentage of the solve: argument conversion, the GIL re-acquired
and Ctrl-C checked after every iteration, a helper thread for the experiments, JSON and numpy
conversion of the results. Every time is the median of ``--repeats`` runs (``--trial-repeats``
for the two-layer trial, whose solve takes about 0.1 s).

Run from the repository root after ``cargo build --release`` and ``pip install ./python``::

    python python/benchmarks/bench.py [--repeats 5] [--trial-repeats 15] [--n 4000] [--m 2000] [--iterations 30]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import tempfile
import time
from statistics import median

import numpy as np

import mlmatvamp as mv

REPO = pathlib.Path(__file__).resolve().parents[2]
CLI = REPO / "target" / "release" / "mlmatvamp"


def timed(f):
    t = time.perf_counter()
    out = f()
    return time.perf_counter() - t, out


# ----------------------------------------------------------------------------------------------
# 1. The two-layer trial
# ----------------------------------------------------------------------------------------------


def two_layer(repeats: int) -> dict:
    py_wall, py_rust, py_solve, cli_wall, cli_rust, cli_solve = [], [], [], [], [], []
    results = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as d:
            t, _ = timed(lambda: subprocess.run(
                [str(CLI), "--quiet", "two-layer", "--ntr", "1000", "--snr", "10", "--seed", "0",
                 "--methods", "ml-mat-vamp", "--out", d], check=True))
            rep = json.loads((pathlib.Path(d) / "two_layer.json").read_text())
            cli_wall.append(t)
            cli_rust.append(rep["meta"]["seconds"])
            cli_solve.append(rep["ml_mat_vamp"]["seconds"])
            results.append(rep["ml_mat_vamp"]["test_mse"])
        t, rep = timed(lambda: mv.two_layer(problem={"ntr": 1000, "snr_db": 10.0}, seed=0,
                                            methods=["ml-mat-vamp"]))
        py_wall.append(t)
        py_rust.append(mv._core._last_call_seconds())
        py_solve.append(float(rep["ml_mat_vamp"]["seconds"]))
        results.append(float(rep["ml_mat_vamp"]["test_mse"]))
    assert len(set(results)) == 1, f"the two front doors disagree: {set(results)}"
    return dict(
        name="two-layer trial (ntr 1000, d = 4, 20 iterations)",
        cli_wall=median(cli_wall), cli_solve=median(cli_solve),
        py_wall=median(py_wall), py_solve=median(py_solve),
        overhead=median(w - r for w, r in zip(py_wall, py_rust)),
        overhead_min=min(w - r for w, r in zip(py_wall, py_rust)),
        overhead_max=max(w - r for w, r in zip(py_wall, py_rust)),
        test_mse=results[0],
    )


# ----------------------------------------------------------------------------------------------
# 2. Compressed sensing, d = 1
# ----------------------------------------------------------------------------------------------


def cs_problem(n: int, m: int, rho: float = 0.1, snr_db: float = 30.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)) / np.sqrt(n)
    x = rng.standard_normal(n) * (rng.random(n) < rho)
    z = A @ x
    noise_var = np.mean(z ** 2) * 10 ** (-snr_db / 10)
    y = z + rng.standard_normal(m) * np.sqrt(noise_var)
    return A, x, y, noise_var


def bg_denoise(r: np.ndarray, gamma: float, rho: float, var_x: float = 1.0):
    """The Bernoulli–Gaussian MMSE denoiser for r = x + N(0, 1/gamma): mean and variance."""
    v = 1.0 / gamma
    s = var_x + v
    log_odds = np.log(rho / (1 - rho)) + 0.5 * np.log(v / s) + 0.5 * r ** 2 * (1 / v - 1 / s)
    pi = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -500, 500)))
    m = r * var_x / s
    var_slab = var_x * v / s
    xhat = pi * m
    var = pi * (var_slab + m ** 2) - xhat ** 2
    return xhat, var


def numpy_vamp(A, y, noise_var, rho, iterations, gamma_init=1e-6):
    """VAMP (vampyre-style, two factors: the prior and the linear-Gaussian likelihood) in numpy,
    the LMMSE step through one SVD of A. Returns the estimate and the setup/solve seconds."""
    t0 = time.perf_counter()
    m, n = A.shape
    U, s, Vt = np.linalg.svd(A, full_matrices=False)
    Uty = U.T @ y
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    gw = 1.0 / noise_var
    r1, g1 = np.zeros(n), gamma_init
    x1 = r1
    for _ in range(iterations):
        x1, var1 = bg_denoise(r1, g1, rho)
        a1 = np.mean(var1) * g1
        eta1 = g1 / a1
        g2 = eta1 - g1
        r2 = (eta1 * x1 - g1 * r1) / g2
        # LMMSE: (gw AᵀA + g2 I)^{-1} (gw Aᵀy + g2 r2) in the SVD basis.
        Vr2 = Vt @ r2
        x2 = r2 + Vt.T @ (gw * s * (Uty - s * Vr2) / (gw * s ** 2 + g2))
        a2 = (np.sum(g2 / (gw * s ** 2 + g2)) + (n - len(s))) / n
        eta2 = g2 / a2
        g1 = eta2 - g2
        r1 = (eta2 * x2 - g2 * r2) / g1
    return x1, setup, time.perf_counter() - t0


def cs(n: int, m: int, iterations: int, repeats: int) -> dict:
    rho = 0.1
    A, x, y, noise_var = cs_problem(n, m, rho)
    nmse = lambda xh: float(np.sum((xh - x) ** 2) / np.sum(x ** 2))  # noqa: E731

    # Python: the network (the SVD is done once, at construction).
    svd_py, layer = timed(lambda: mv.LinearLayer(A, 1))
    net = mv.Network(mv.BernoulliGaussianPrior(rho, d=1), n, [layer], mv.AwgnOutput(y, 1.0 / noise_var))
    py_wall, py_rust = [], []
    for _ in range(repeats):
        t, sol = timed(lambda: mv.solve(net, iterations=iterations))
        py_wall.append(t)
        py_rust.append(mv._core._last_call_seconds())
    z_py = sol.estimates[0][:, 0]

    # The program, on the same arrays.
    cli_wall, cli_solve, cli_setup = [], [], []
    with tempfile.TemporaryDirectory() as d:
        d = pathlib.Path(d)
        np.save(d / "A.npy", A)
        np.save(d / "y.npy", y)
        (d / "cs.toml").write_text(
            f"d = 1\niterations = {iterations}\n"
            f'[prior]\nkind = "row-sparse"\nrows = {n}\nsparsity = {rho}\n'
            f'[[layer]]\nkind = "linear"\nweight = "A.npy"\nmethod = "svd"\n'
            f'[output]\nkind = "awgn"\ny = "y.npy"\nnoise_precision = [[{float(1.0 / noise_var)!r}]]\n'
        )
        for _ in range(repeats):
            t, _ = timed(lambda: subprocess.run(
                [str(CLI), "--quiet", "run", str(d / "cs.toml"), "--out", str(d / "out")], check=True))
            h = json.loads((d / "out" / "history.json").read_text())
            cli_wall.append(t)
            cli_solve.append(h["solve_seconds"])
            cli_setup.append(h["setup_seconds"])
        z_cli = np.load(d / "out" / "z_0.npy")[:, 0]
        # The same configuration through Python is bit-identical to the program.
        z_toml = mv.from_toml(d / "cs.toml").solve().estimates[0][:, 0]
        assert np.array_equal(z_toml, z_cli)

    np_setup, np_solve, np_nmse = [], [], None
    for _ in range(repeats):
        xh, su, so = numpy_vamp(A, y, noise_var, rho, iterations)
        np_setup.append(su)
        np_solve.append(so)
        np_nmse = nmse(xh)
    return dict(
        name=f"compressed sensing, d = 1 (n = {n}, m = {m}, {iterations} iterations)",
        cli_wall=median(cli_wall), cli_solve=median(cli_solve), cli_setup=median(cli_setup),
        py_wall=median(py_wall), py_solve=median(py_rust), py_setup=svd_py,
        overhead=median(w - r for w, r in zip(py_wall, py_rust)),
        numpy_setup=median(np_setup), numpy_solve=median(np_solve),
        nmse_py=nmse(z_py), nmse_cli=nmse(z_cli), nmse_numpy=np_nmse,
        same_as_cli=bool(np.array_equal(z_py, z_cli)),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--trial-repeats", type=int, default=15,
                   help="runs of the two-layer trial (0.1 s each: more runs steady the median)")
    p.add_argument("--n", type=int, default=4000)
    p.add_argument("--m", type=int, default=2000)
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--json", type=pathlib.Path, help="also write the numbers here")
    a = p.parse_args()
    if not CLI.exists():
        raise SystemExit(f"{CLI} not found: run `cargo build --release` first")
    print(f"mlmatvamp {mv.__version__}, {mv.threads()} threads, numpy {np.__version__}; "
          f"load average before: {os.getloadavg()[0]:.2f}")
    rows = [two_layer(a.trial_repeats), cs(a.n, a.m, a.iterations, a.repeats)]
    for r in rows:
        print(f"\n{r['name']}")
        print(f"  Rust program: {r['cli_wall']:.3f} s wall (process), solve {r['cli_solve']:.3f} s")
        print(f"  Python call:  {r['py_wall']:.3f} s wall, solve {r['py_solve']:.3f} s"
              + (f" (+ SVD at construction {r['py_setup']:.3f} s; program's setup {r['cli_setup']:.3f} s)"
                 if "py_setup" in r else ""))
        print(f"  binding overhead: {r['overhead'] * 1e3:.2f} ms = {100 * r['overhead'] / r['py_solve']:.2f}% of the solve"
              + (f" (min {r['overhead_min'] * 1e3:.2f} ms, max {r['overhead_max'] * 1e3:.2f} ms)"
                 if "overhead_min" in r else ""))
        if "numpy_solve" in r:
            print(f"  numpy VAMP:   solve {r['numpy_solve']:.3f} s (+ SVD {r['numpy_setup']:.3f} s); "
                  f"time numpy / Rust: solve {r['numpy_solve'] / r['py_solve']:.2f}, "
                  f"SVD {r['numpy_setup'] / r['py_setup']:.2f}")
            print(f"  NMSE: Python {r['nmse_py']:.4e}, program {r['nmse_cli']:.4e}, numpy VAMP {r['nmse_numpy']:.4e}; "
                  f"Python == program: {r['same_as_cli']}")
        else:
            print(f"  normalized test MSE {r['test_mse']:.4f} (identical through both)")
    print(f"\nload average after: {os.getloadavg()[0]:.2f} (1 min)")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

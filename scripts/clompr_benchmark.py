"""CL-OMPR (pycle) and ML-Mat-VAMP (`mlmatvamp cluster`) on the same sketches.

For every seed and sketch length M/(Kp): a Gaussian mixture (K centroids N(0, (1.5 K^(1/p))^2 I),
sigma^2 = 1, the setting of Keriven et al.) of T points is generated with numpy, written to
x.npy and sketched once by `mlmatvamp sketch` (sigma^2 given, so the frequencies are the
adapted-radius law for the true within-cluster variance). The same sketch.npy / frequencies.npy
are decoded by `mlmatvamp cluster` (its decoding time from cluster.json) and by pycle's
CLOMP_CKM (CL-OMPR with 2K iterations; --clompr-trials independent fits, the one with the
smallest sketch residual kept, as pycle's fit_several_times does; wall time of the fits).
`mlmatvamp cluster` runs its default seeded restarts (4), or --restarts. Both sets of centroids
are scored by the SSE on the full data divided by the SSE of k-means++ (numpy, best of 3 seeded
runs of Lloyd's algorithm, the same denominator for both methods).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def kmeans_pp(x, k, runs, rng, iters=100):
    best = None
    for _ in range(runs):
        c = [x[rng.integers(len(x))]]
        d2 = ((x - c[0]) ** 2).sum(1)
        for _ in range(1, k):
            c.append(x[rng.choice(len(x), p=d2 / d2.sum())])
            d2 = np.minimum(d2, ((x - c[-1]) ** 2).sum(1))
        c = np.array(c)
        for _ in range(iters):
            lab = (-2 * x @ c.T + (c ** 2).sum(1)).argmin(1)
            new = np.array([x[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        s = sse(x, c)
        if best is None or s < best[0]:
            best = (s, c)
    return best


def sse(x, c):
    total = 0.0
    for start in range(0, len(x), 200_000):
        xb = x[start:start + 200_000]
        d = (xb ** 2).sum(1)[:, None] - 2 * xb @ c.T + (c ** 2).sum(1)[None, :]
        total += np.maximum(d.min(1), 0).sum()
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--p", type=int, default=10)
    ap.add_argument("--t", type=int, default=100_000)
    ap.add_argument("--ratios", default="2,5")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--clompr-trials", type=int, default=1)
    ap.add_argument("--restarts", type=int, default=None)
    args = ap.parse_args()
    import pycle.compressive_learning as cl
    import pycle.sketching as sk

    os.makedirs(args.out, exist_ok=True)
    k, p = args.k, args.p
    rows = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rng = np.random.default_rng(seed)
        cents = rng.standard_normal((k, p)) * 1.5 * k ** (1.0 / p)
        lab = rng.integers(k, size=args.t)
        x = cents[lab] + rng.standard_normal((args.t, p))
        xpath = os.path.join(args.out, f"x_{seed}.npy")
        np.save(xpath, x)
        km_sse, _ = kmeans_pp(x, k, 3, np.random.default_rng(1000 + seed))
        for ratio in [float(r) for r in args.ratios.split(",")]:
            m = int(round(ratio * k * p))
            sdir = os.path.join(args.out, f"sketch_{seed}_{m}")
            cdir = os.path.join(args.out, f"cluster_{seed}_{m}")
            subprocess.run([args.bin, "--quiet", "sketch", xpath, "--k", str(k), "--m", str(m),
                            "--sigma2", "1", "--seed", str(seed), "--out", sdir], check=True)
            subprocess.run([args.bin, "--quiet", "cluster", sdir, "--seed", str(seed),
                            "--out", cdir]
                           + ([] if args.restarts is None else ["--restarts", str(args.restarts)]),
                           check=True)
            rep = json.load(open(os.path.join(cdir, "cluster.json")))
            ours = np.load(os.path.join(cdir, "centroids.npy"))
            # CL-OMPR on the same (centred) sketch and frequencies.
            meta = json.load(open(os.path.join(sdir, "sketch.json")))
            y = np.load(os.path.join(sdir, "sketch.npy"))
            z = y[:, 0] + 1j * y[:, 1]
            omega = np.load(os.path.join(sdir, "frequencies.npy"))  # M x p
            mean = np.array(meta["mean"])
            sd = np.sqrt(np.array(meta["variance"]))
            phi = sk.SimpleFeatureMap("ComplexExponential", omega.T.copy())
            bounds = np.array([-3 * sd, 3 * sd])
            np.random.seed(seed)
            solver = cl.CLOMP_CKM(phi, k, bounds, z)
            t0 = time.perf_counter()
            if args.clompr_trials == 1:
                solver.fit_once()
            else:
                solver.fit_several_times(args.clompr_trials, forget_current_sol=True)
            clompr_seconds = time.perf_counter() - t0
            theirs = solver.get_centroids() + mean
            row = {
                "seed": seed, "M": m, "ratio": ratio, "T": args.t,
                "vamp_relative_sse": sse(x, ours) / km_sse,
                "vamp_decode_seconds": rep["decode_seconds"],
                "clompr_relative_sse": sse(x, theirs) / km_sse,
                "clompr_decode_seconds": clompr_seconds,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    summary = {}
    for ratio in sorted({r["ratio"] for r in rows}):
        sel = [r for r in rows if r["ratio"] == ratio]
        med = lambda key: float(np.median([r[key] for r in sel]))
        summary[str(ratio)] = {
            "vamp_relative_sse_median": med("vamp_relative_sse"),
            "clompr_relative_sse_median": med("clompr_relative_sse"),
            "vamp_success": float(np.mean([r["vamp_relative_sse"] <= 1.1 for r in sel])),
            "clompr_success": float(np.mean([r["clompr_relative_sse"] <= 1.1 for r in sel])),
            "vamp_decode_seconds_median": med("vamp_decode_seconds"),
            "clompr_decode_seconds_median": med("clompr_decode_seconds"),
            "speed_up_median": med("clompr_decode_seconds") / med("vamp_decode_seconds"),
        }
    json.dump({"rows": rows, "summary": summary, "args": vars(args)},
              open(os.path.join(args.out, "clompr_benchmark.json"), "w"), indent=1)
    print("M/(Kp)  rel. SSE ML-Mat-VAMP  rel. SSE CL-OMPR  success VAMP/CL-OMPR  decode s VAMP  decode s CL-OMPR  speed-up")
    for ratio, s in summary.items():
        print(f"{float(ratio):6.1f}  {s['vamp_relative_sse_median']:19.4f}  {s['clompr_relative_sse_median']:16.4f}"
              f"  {s['vamp_success']:9.2f}/{s['clompr_success']:.2f}  {s['vamp_decode_seconds_median']:13.2f}"
              f"  {s['clompr_decode_seconds_median']:16.2f}  {s['speed_up_median']:8.1f}x")


if __name__ == "__main__":
    sys.exit(main())

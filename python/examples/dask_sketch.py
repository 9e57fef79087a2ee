"""Sketched clustering of a ``dask.array`` on a ``distributed`` cluster: map = sketch a block
(``mlmatvamp.sketch.sketch_block``), reduce = merge two partial sketches
(``mlmatvamp.sketch.merge``) in a binary tree; the result equals the single-process sketch of
the same points to rounding (``≤ 1e-12`` required, about ``1e-16`` measured).

Run from the repository root (after ``pip install ./python`` and ``pip install "dask[array]"
distributed``)::

    python python/examples/dask_sketch.py                 # N = 10^8 points, p = 10, M = 500
    python python/examples/dask_sketch.py --n 1000000     # smaller

The points are a Gaussian mixture (``K`` clusters of variance ``σ²`` per coordinate) generated
**block by block from seeds** (block ``i`` from ``numpy.random.default_rng([seed, 1, i])``), so
the ``N x p`` array (8 GB at ``N = 10^8``, ``p = 10``) never exists in one process: the Dask
array's blocks are generated on the workers, where they are sketched, and the single-process
reference regenerates the same blocks one at a time and streams them through
``PartialSketch.add_block``. The script starts a local cluster (worker processes, TCP on the
loopback interface, no dashboard), prints the largest difference between the two sketches, the
throughput of both (point-frequency pairs per second) and, with ``--cluster``, the centroids
recovered from the sketch against the true ones. On a real cluster pass ``--scheduler
tcp://host:8786``; nothing else changes. The guide is ``docs/python.md`` (section "Sketched
clustering").
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np

from mlmatvamp import sketch as sk


# ----------------------------------------------------------------------------------------------
# The data: a Gaussian mixture, generated block by block from seeds
# ----------------------------------------------------------------------------------------------

def mixture_centroids(k: int, p: int, seed: int) -> np.ndarray:
    """The ``K x p`` true centroids, ``N(0, (1.5 K^{1/p})² I_p)`` (the setting of Keriven et al.
    used by ``mlmatvamp sketched-clustering``)."""
    rng = np.random.default_rng([seed, 0])
    return rng.standard_normal((k, p)) * (1.5 * k ** (1.0 / p))


def block_rows(n: int, chunk: int) -> List[int]:
    """The row counts of the blocks of ``n`` points in blocks of ``chunk`` rows."""
    return [min(chunk, n - s) for s in range(0, n, chunk)]


def make_block(i: int, rows: int, centroids: np.ndarray, sigma2: float, seed: int) -> np.ndarray:
    """Block ``i`` of the data (``rows x p``): equal-weight labels, then
    ``x = c_label + σ · N(0, I_p)``, from the seed ``[seed, 1, i]`` (the same bits wherever it
    runs)."""
    rng = np.random.default_rng([seed, 1, i])
    k, p = centroids.shape
    labels = rng.integers(0, k, rows)
    x = rng.standard_normal((rows, p))
    x *= np.sqrt(sigma2)
    x += centroids[labels]
    return x


def dask_mixture(n: int, chunk: int, centroids: np.ndarray, sigma2: float, seed: int):
    """The mixture as a ``dask.array`` (``n x p``, row blocks of ``chunk``), every block
    generated where it is computed."""
    import dask
    import dask.array as da

    p = centroids.shape[1]
    blocks = [
        da.from_delayed(dask.delayed(make_block, pure=True)(i, r, centroids, sigma2, seed),
                        shape=(r, p), dtype=np.float64)
        for i, r in enumerate(block_rows(n, chunk))
    ]
    return da.concatenate(blocks, axis=0)


# ----------------------------------------------------------------------------------------------
# Map-reduce over a dask array
# ----------------------------------------------------------------------------------------------

def sketch_dask(x, freqs: sk.Frequencies, client=None) -> sk.PartialSketch:
    """The partial sketch of a ``dask.array`` (``T x p``): one ``sketch_block`` task per row
    block (map), then ``merge`` tasks pairing ``(0, 1), (2, 3), …`` level by level (a binary
    tree, reduce). The pairing is fixed, so the result does not depend on which worker finishes
    first. ``client``: a ``distributed.Client`` (default: Dask's current scheduler).
    ``.finish(freqs)`` of the result is the sketch."""
    import dask

    if len(x.chunks[1]) != 1:
        x = x.rechunk({1: -1})  # whole rows in every block
    f = dask.delayed(freqs, pure=True)  # one copy of Ω in the graph, pickled to the workers
    level = [dask.delayed(sk.sketch_block, pure=True)(b, f) for b in x.to_delayed().ravel()]
    if not level:
        return sk.PartialSketch(freqs)
    while len(level) > 1:
        nxt = [dask.delayed(sk.merge, pure=True)(level[i], level[i + 1], f)
               for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    if client is not None:
        return client.compute(level[0]).result()
    return level[0].compute()


def sketch_streamed(n: int, chunk: int, centroids: np.ndarray, sigma2: float, seed: int,
                    freqs: sk.Frequencies) -> Dict[str, Any]:
    """The single-process reference: the same blocks regenerated one at a time and streamed
    through ``PartialSketch.add_block`` (one block in memory at a time)."""
    part = sk.PartialSketch(freqs)
    sketch_s = 0.0
    t0 = time.perf_counter()
    for i, r in enumerate(block_rows(n, chunk)):
        x = make_block(i, r, centroids, sigma2, seed)
        t1 = time.perf_counter()
        part.add_block(x, freqs)
        sketch_s += time.perf_counter() - t1
    return {"partial": part, "seconds": time.perf_counter() - t0, "sketch_seconds": sketch_s}


def match_distance(found: np.ndarray, truth: np.ndarray) -> float:
    """The largest distance from a true centroid to the nearest recovered one."""
    d = np.linalg.norm(truth[:, None, :] - found[None, :, :], axis=2)
    return float(d.min(axis=1).max())


def run(n: int = 10**8, p: int = 10, k: int = 10, m: Optional[int] = None, chunk: int = 10**6,
        sigma2: float = 1.0, seed: int = 0, client=None, reference: bool = True,
        cluster: bool = False, restarts: int = 5, quiet: bool = True) -> Dict[str, Any]:
    """Sketches ``n`` mixture points through Dask (on ``client``) and, with ``reference``, in
    this process; returns the sketches, the difference and the timings."""
    m = 5 * k * p if m is None else m
    centroids = mixture_centroids(k, p, seed)
    freqs = sk.Frequencies.draw(m, p, sigma2, seed)
    out: Dict[str, Any] = {"n": n, "p": p, "k": k, "m": m, "chunk": chunk,
                           "blocks": len(block_rows(n, chunk)), "centroids": centroids,
                           "freqs": freqs}
    x = dask_mixture(n, chunk, centroids, sigma2, seed)
    t0 = time.perf_counter()
    part = sketch_dask(x, freqs, client)
    out["dask_seconds"] = time.perf_counter() - t0
    out["dask_partial"] = part
    out["sketch"] = part.finish(freqs)
    out["dask_pairs_per_second"] = n * m / out["dask_seconds"]
    if not quiet:
        print(f"dask: {n} points x {m} frequencies in {out['blocks']} blocks: "
              f"{out['dask_seconds']:.1f} s ({out['dask_pairs_per_second']:.3g} pairs/s, "
              f"generation included)", flush=True)
    if reference:
        ref = sketch_streamed(n, chunk, centroids, sigma2, seed, freqs)
        out["reference"] = ref["partial"].finish(freqs)
        out["reference_seconds"] = ref["seconds"]
        out["reference_sketch_seconds"] = ref["sketch_seconds"]
        out["reference_pairs_per_second"] = n * m / ref["sketch_seconds"]
        out["max_abs_diff"] = float(np.max(np.abs(out["sketch"].y - out["reference"].y)))
        out["mean_diff"] = float(np.max(np.abs(out["sketch"].mean - out["reference"].mean)))
        if not quiet:
            print(f"single process: {ref['seconds']:.1f} s ({ref['sketch_seconds']:.1f} s "
                  f"sketching, {out['reference_pairs_per_second']:.3g} pairs/s)")
            print(f"max |y_dask - y_single| = {out['max_abs_diff']:.3e} "
                  f"(mean: {out['mean_diff']:.3e}); T = {out['sketch'].count}", flush=True)
    if cluster:
        res = sk.cluster(out["sketch"], freqs, k, restarts=restarts, seed=seed)
        out["cluster"] = res
        out["centroid_distance"] = match_distance(res.centroids, centroids)
        if not quiet:
            print(f"recovered {k} centroids in {res.seconds:.1f} s: residual {res.residual:.4f}, "
                  f"farthest true centroid {out['centroid_distance']:.4f} from a recovered one")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=float, default=1e8, help="points (default 1e8)")
    ap.add_argument("--p", type=int, default=10, help="dimension (default 10)")
    ap.add_argument("--k", type=int, default=10, help="clusters (default 10)")
    ap.add_argument("--m", type=int, default=None, help="frequencies (default 5 K p)")
    ap.add_argument("--chunk", type=float, default=1e6, help="rows per block (default 1e6)")
    ap.add_argument("--sigma2", type=float, default=1.0, help="cluster variance (default 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2, help="local worker processes (default 2)")
    ap.add_argument("--worker-threads", type=int, default=1,
                    help="Dask threads and core threads per worker (default 1)")
    ap.add_argument("--scheduler", default=None, help="address of an existing scheduler")
    ap.add_argument("--no-reference", action="store_true", help="skip the single-process sketch")
    ap.add_argument("--cluster", action="store_true", help="recover the centroids afterwards")
    args = ap.parse_args(argv)
    n, chunk = int(args.n), int(args.chunk)

    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    if args.scheduler:
        client, cluster = Client(args.scheduler), None
    else:
        # Worker processes on the loopback interface; each computes on `worker_threads` core
        # threads (RAYON_NUM_THREADS is read by a worker's first computation).
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=args.worker_threads,
                               processes=True, host="127.0.0.1", protocol="tcp://",
                               dashboard_address=None,
                               env={"RAYON_NUM_THREADS": str(args.worker_threads)})
        client = Client(cluster)
    print(f"cluster: {len(client.scheduler_info()['workers'])} workers at "
          f"{client.scheduler.address} (started in {time.perf_counter() - t0:.1f} s); "
          f"this process computes on {os.environ.get('RAYON_NUM_THREADS', 'all')} core threads",
          flush=True)
    try:
        out = run(n=n, p=args.p, k=args.k, m=args.m, chunk=chunk, sigma2=args.sigma2,
                  seed=args.seed, client=client, reference=not args.no_reference,
                  cluster=args.cluster, quiet=False)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    if "max_abs_diff" in out and not out["max_abs_diff"] <= 1e-12:
        print("FAILED: the sketches differ by more than 1e-12", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

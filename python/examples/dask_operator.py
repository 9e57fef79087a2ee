"""ML-Mat-VAMP with a distributed linear layer: W is a Dask array chunked by rows, held by the
workers of a ``distributed`` cluster, and enters the algorithm only through the products
``W X`` and ``Wᵀ Y`` on ``n x d`` blocks (the ``scipy.sparse.linalg.LinearOperator`` protocol).

Run from the repository root (after ``pip install ./python`` and ``pip install "dask[array]"
distributed``)::

    python python/examples/dask_operator.py [N_IN] [N_OUT] [CHUNKS]

It starts a local cluster on the loopback interface (no dashboard), builds the same problem in
memory and on the cluster, runs both, and prints the largest difference between the estimates
(about 1e-13: the cluster changes only the order of the floating-point sums). On a real
cluster, pass ``Client("tcp://scheduler:8786")`` instead of the local one; nothing else
changes. The guide is ``docs/python.md`` (section "Distributed operators with Dask").
"""

from __future__ import annotations

import sys
import time
from typing import Optional

import numpy as np

import mlmatvamp as mv


def _tdot(block: np.ndarray, y: np.ndarray) -> np.ndarray:
    return block.T @ y


def _gram(block: np.ndarray, x: np.ndarray) -> np.ndarray:
    return block.T @ (block @ x)


class DaskRowOperator:
    """A Dask array ``W`` (``n_out x n_in``, chunked by rows) as a linear operator on a
    ``distributed`` cluster.

    The row blocks ``W_b`` are persisted on the workers once. Every product is one round of
    tasks, one per block, run where the block lives:

    * ``matmat(X) = W X``: the blocks ``W_b X``, stacked;
    * ``rmatmat(Y) = Wᵀ Y``: ``Σ_b W_bᵀ Y_b`` (``Y`` split like the rows of ``W``);
    * ``gram(X) = WᵀW X``: ``Σ_b W_bᵀ (W_b X)`` in one round (an optional method that the
      conjugate gradients use instead of ``rmatmat(matmat(X))``, halving the round trips).

    The sums run in block order, so the result does not depend on which worker finishes first.
    ML-Mat-VAMP calls these a few times per iteration (conjugate gradients) and, once,
    ``probes x lanczos_steps`` times to estimate the spectral law of ``WᵀW``.
    """

    def __init__(self, W, client) -> None:  # W: dask.array.Array, client: distributed.Client
        if len(W.chunks[1]) != 1:
            W = W.rechunk({1: -1})  # whole rows in every block
        W = client.persist(W)
        self.client = client
        self.blocks = [client.compute(b) for b in W.to_delayed().ravel()]
        self.bounds = np.cumsum((0,) + tuple(W.chunks[0]))
        self.shape = tuple(int(s) for s in W.shape)
        self.dtype = np.dtype(np.float64)
        self.calls = 0

    def _run(self, f, args):
        self.calls += 1
        futures = [self.client.submit(f, b, a, pure=False) for b, a in zip(self.blocks, args)]
        return self.client.gather(futures)

    def matmat(self, X: np.ndarray) -> np.ndarray:
        return np.vstack(self._run(np.dot, [X] * len(self.blocks)))

    def rmatmat(self, Y: np.ndarray) -> np.ndarray:
        parts = self._run(_tdot, [Y[lo:hi] for lo, hi in zip(self.bounds[:-1], self.bounds[1:])])
        return _ordered_sum(parts)

    def gram(self, X: np.ndarray) -> np.ndarray:
        return _ordered_sum(self._run(_gram, [X] * len(self.blocks)))


def _ordered_sum(parts):
    total = parts[0].copy()
    for p in parts[1:]:
        total += p
    return total


def design(n_out: int, n_in: int, kind: str = "gaussian", seed: int = 0) -> np.ndarray:
    """The weight ``W``: i.i.d. ``N(0, 1/n_in)`` entries (``"gaussian"``), or random singular
    vectors with the three singular values 0.5, 1 and 1.5 (``"three-values"``: every
    conjugate-gradient solve then takes at most four products, which keeps a test quick when
    every product is a round trip to the cluster)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)
    r = min(n_out, n_in)
    U, _ = np.linalg.qr(rng.standard_normal((n_out, r)))
    V, _ = np.linalg.qr(rng.standard_normal((n_in, r)))
    s = np.array([0.5, 1.0, 1.5])[np.arange(r) % 3]
    return (U * s) @ V.T


def problem(W: np.ndarray, d: int = 3, seed: int = 0):
    """A row-sparse multi-task regression problem on ``W``: ``(prior, truth, output)``."""
    n_out, n_in = W.shape
    cov = np.array([[1.0, 0.4, 0.0], [0.4, 1.0, 0.2], [0.0, 0.2, 1.0]])[:d, :d]
    prior = mv.BernoulliGaussianPrior(0.2, covariance=cov)
    model = mv.Network(prior, n_in, [mv.LinearLayer(W, d)], mv.AwgnOutput(np.zeros((n_out, d)), 100.0))
    truth, net = model.sample(seed=seed + 1)
    return prior, truth, net.output


def run(n_in: int = 2000, n_out: int = 1200, chunks: int = 4, client=None, iterations: int = 15,
        kind: str = "gaussian", **layer_options) -> float:
    """Solves the same problem in memory and through Dask; returns the largest relative
    difference between the estimates. ``layer_options`` go to both ``LinearLayer``s."""
    import dask.array as da

    d = 3
    W = design(n_out, n_in, kind)
    prior, truth, output = problem(W, d)
    options = dict(method="cg", tolerance=1e-12)  # tight CG: the two runs agree to rounding
    options.update(layer_options)

    t0 = time.perf_counter()
    local = mv.Network(prior, n_in, [mv.LinearLayer(W, d, **options)], output)
    sol_local = mv.solve(local, iterations=iterations, truth=truth)
    t_local = time.perf_counter() - t0

    t0 = time.perf_counter()
    Wd = da.from_array(W, chunks=(-(-n_out // chunks), n_in))
    op = DaskRowOperator(Wd, client)
    remote = mv.Network(prior, n_in, [mv.LinearLayer(op, d, **options)], output)
    sol_remote = mv.solve(remote, iterations=iterations, truth=truth)
    t_remote = time.perf_counter() - t0

    diff = max(
        float(np.max(np.abs(a - b)) / np.max(np.abs(a)))
        for a, b in zip(sol_local.estimates, sol_remote.estimates)
    )
    print(f"W: {n_out} x {n_in} ({kind}) in {chunks} row blocks, d = {d}, {iterations} iterations")
    print(f"in memory: {t_local:.2f} s; through Dask: {t_remote:.2f} s ({op.calls} rounds of tasks)")
    print(f"final MSE of Z_0: {sol_local.history['mse'][-1, 0]:.4e} (in memory), "
          f"{sol_remote.history['mse'][-1, 0]:.4e} (Dask)")
    print(f"largest relative difference of the estimates: {diff:.2e}")
    return diff


def main() -> None:
    from distributed import Client, LocalCluster

    args = [int(a) for a in sys.argv[1:]]
    n_in, n_out, chunks = (args + [2000, 1200, 4][len(args):])[:3]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        diff = run(n_in, n_out, chunks, client)
    assert diff < 1e-10, diff


if __name__ == "__main__":
    main()

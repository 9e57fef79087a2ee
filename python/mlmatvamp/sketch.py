"""Sketched clustering (paper §2.2; ``docs/sketched-clustering.md``): a dataset of ``T`` points
``x_t ∈ R^p`` compressed in one pass to ``M`` complex numbers, samples of its empirical
characteristic function at the frequencies ``w_m`` (the rows of ``Ω``), and ``K`` centroids
recovered from the sketch alone by ML-Mat-VAMP::

    import numpy as np
    from mlmatvamp import sketch as sk

    freqs = sk.Frequencies.draw(m=500, p=10, sigma2=1.0, seed=0)   # or sigma2=sk.estimate_sigma2(sample, k)
    s = sk.sketch(X, freqs)                                          # X: T x p numpy array
    res = sk.cluster(s, freqs, k=10)
    res.centroids                                                    # K x p, data coordinates

**Map-reduce.** ``sketch_block(block, freqs)`` is the partial sketch of one block of points,
``merge(a, b, freqs)`` the one of the union of two disjoint shards, and ``PartialSketch.finish``
the finished sketch; partial sketches pickle to plain ints and numpy arrays, so Dask (or any
engine) ships them between processes. ``reduce_tree`` merges a list of partial sketches
pairwise in a fixed order. ``python/examples/dask_sketch.py`` sketches a ``dask.array`` on a
``distributed`` cluster this way. For data that do not fit in memory in one process, stream the
blocks through ``PartialSketch(freqs).add_block(block, freqs)``.

Every function computes in the Rust core with the GIL released; data blocks are read in place
when they are float64 (any layout) and converted otherwise (the rules of ``docs/python.md``).
Bad inputs are the package's named exceptions: a non-finite entry a ``NonFiniteError`` naming
its row, a block of another ``p`` a ``ShapeError``, partial sketches of other frequencies or a
``σ² ≤ 0`` an ``InvalidArgumentError``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from . import _core
from ._core import Frequencies, PartialSketch, Sketch, estimate_sigma2, merge, sketch, sketch_block

__all__ = [
    "Frequencies", "PartialSketch", "Sketch", "ClusterResult", "sketch_block", "merge",
    "reduce_tree", "sketch", "estimate_sigma2", "cluster",
]


def reduce_tree(parts: Sequence[PartialSketch], freqs: Frequencies) -> PartialSketch:
    """Merges partial sketches of disjoint shards pairwise, ``(0, 1), (2, 3), …`` then the
    results likewise, in a fixed order (the result does not depend on when each part was made);
    an empty list gives the sketch of no points."""
    level: List[PartialSketch] = list(parts)
    if not level:
        return PartialSketch(freqs)
    while len(level) > 1:
        nxt = [merge(level[i], level[i + 1], freqs) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


@dataclass
class ClusterResult:
    """The centroids recovered from a sketch (``cluster``).

    Attributes:
        centroids: ``K x p`` array, in data coordinates.
        weights: the cluster weights ``α`` (length ``K``, non-negative, summing to 1).
        residual: the relative sketch residual ``‖y − ŷ‖/‖y‖`` of the kept restart.
        best: the index of the kept restart.
        restarts: every restart as a dict (``seed``, ``residual``, ``weights``, ``seconds``,
            ``iterations``: its Algorithm-1 iterations, ``stalled``: the last round's iteration
            at which the optional stall stop ended it, or ``None``, ``error``: the error that
            stopped it, or ``None``).
        history: the kept restart's Algorithm-1 history as arrays per field (``mlmatvamp.history_arrays``).
        records: the same history as a list of dicts.
        sigma2: the ``σ²`` of the gains used.
        noise: the output noise variance per real component (mean over rows).
        prior_variance: the prior variance ``s²`` of a centroid coordinate.
        seconds: the decoding time.
    """

    centroids: np.ndarray
    weights: np.ndarray
    residual: float
    best: int
    restarts: List[Dict[str, Any]]
    history: Dict[str, Any]
    records: List[Dict[str, Any]]
    sigma2: float
    noise: float
    prior_variance: float
    seconds: float


def cluster(
    sketch: Sketch,
    freqs: Frequencies,
    k: int,
    *,
    estimator: str = "map",
    restarts: Optional[int] = None,
    iterations: Optional[int] = None,
    rounds: Optional[int] = None,
    seed: int = 0,
    sigma2: Optional[float] = None,
    noise: Optional[float] = None,
    init: Optional[Any] = None,
    options: Optional[Mapping[str, Any]] = None,
) -> ClusterResult:
    """Recovers ``k`` centroids from a sketch by ML-Mat-VAMP, as ``mlmatvamp cluster`` does.

    Algorithm 1 on the two-layer network ``Z_0 = C`` (Gaussian prior), ``Z_1 = Ω C``,
    ``y_m = g_m Σ_k α_k e^{i z_mk} + ξ_m``; the weights ``α`` by non-negative least squares
    between rounds; seeded random restarts, the one with the smallest sketch residual kept.

    Args:
        sketch: the finished sketch (``PartialSketch.finish``, ``sketch``).
        freqs: the frequencies it was made with.
        k: the number of clusters ``K``.
        estimator: ``"map"`` (default) or ``"mmse"`` (the approximate MMSE; slower).
        restarts: seeded random restarts (default 4).
        iterations: Algorithm-1 iterations per round (default 100).
        rounds: rounds of (Algorithm 1, weights) (default 2).
        seed: base seed of the restarts.
        sigma2: ``σ²`` of the gains (default: the frequencies').
        noise: output noise variance per real component (default: from ``T`` and the sketch).
        init: starting centroids (``K x p``, data coordinates) for every restart instead of
            draws from the prior.
        options: any other field of the core's ``ClusterConfig`` (``noise_floor``, ``anneal``,
            ``tolerance``, ``prior_variance``, ``start_precision``, ``policy``, ``cexp``,
            ``stop_residual``, ``restart_batch``, ``stall_improvement``, ``stall_window``,
            ``stall_residual``);
            unknown keys are rejected. The explicit arguments take precedence.

    Raises:
        InvalidArgumentError: ``K < 1``, ``σ² ≤ 0``, a sketch and frequencies that do not match, …
        NumericalError: every restart failed (their errors are in the message).
    """
    from . import history_arrays

    r = _core._cluster(
        sketch, freqs, k, estimator=estimator, restarts=restarts, iterations=iterations,
        rounds=rounds, seed=seed, sigma2=sigma2, noise=noise, init=init,
        options=dict(options) if options is not None else None,
    )
    records = r["history"]
    return ClusterResult(
        centroids=np.ascontiguousarray(r["centroids"]),
        weights=np.asarray(r["weights"], dtype=float),
        residual=float(r["residual"]),
        best=int(r["best"]),
        restarts=list(r["restarts"]),
        history=history_arrays(records),
        records=records,
        sigma2=float(r["sigma2"]),
        noise=float(r["noise"]),
        prior_variance=float(r["prior_variance"]),
        seconds=float(r["seconds"]),
    )

"""ML-Mat-VAMP — Multi-Layer Matrix VAMP (Pandit, Sahraee-Ardakan, Rangan, Schniter and
Fletcher, *Matrix Inference and Estimation in Multi-Layer Models*, NeurIPS 2020) — and its
state evolution, computed by the project's Rust core.

The model (eq. 1 of the paper)::

    Z_0 (n_0 x d)                   rows i.i.d. from a prior
    Z_l = W_l Z_{l-1} + B_l + Ξ_l   l = 1, 3, …   linear layers
    Z_l = φ_l(Z_{l-1}, Ξ_l)         l = 2, 4, …   row-wise layers
    Y   = Z_L                       observed; estimate Z_0 … Z_{L-1}

A minimal run::

    import numpy as np, mlmatvamp as mv
    rng = np.random.default_rng(0)
    W = rng.standard_normal((400, 500)) / np.sqrt(500)
    prior = mv.BernoulliGaussianPrior(0.2, d=2)
    model = mv.Network(prior, 500, [mv.LinearLayer(W, d=2)], mv.AwgnOutput(np.zeros((400, 2)), 100.0))
    truth, net = model.sample(seed=1)          # a teacher: draws Z_0, Z_1 and Y
    sol = mv.solve(net, iterations=30, truth=truth)
    sol.estimates[0]                           # (500, 2) numpy array
    sol.history["mse"][:, 0]                   # empirical MSE of Z_0, per iteration

Sketched clustering (sketch a dataset in one mergeable pass, on numpy blocks or a Dask array,
and recover the centroids from the sketch) is the submodule ``mlmatvamp.sketch``.

The guide (errors, zero-copy rules, threads and Ctrl-C, operators, Dask) is ``docs/python.md``.
"""

from __future__ import annotations

import atexit as _atexit
import os as _os
import shutil as _shutil
import tempfile as _tempfile
import threading as _threading
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from ._errors import (  # noqa: F401  (re-exported)
    ConfigurationError,
    DataFileError,
    DivergenceError,
    InputError,
    InvalidArgumentError,
    MlmatvampError,
    NonFiniteError,
    NotPositiveDefiniteError,
    NotSymmetricError,
    NumericalError,
    ShapeError,
    StoppedError,
)
from . import _core
from ._core import (  # noqa: F401  (re-exported)
    ActivationLayer,
    AwgnOutput,
    BernoulliGaussianPrior,
    DctOperator,
    DenseOperator,
    GaussianPrior,
    GroupLassoPrior,
    Layer,
    LinearLayer,
    MismatchedPrior,
    MixedRegressionOutput,
    Network,
    Operator,
    Output,
    Prior,
    SparseOperator,
    TwoLayerOutput,
    threads,
)

__version__: str = _core.__version__

__all__ = [
    # factors
    "Prior", "GaussianPrior", "BernoulliGaussianPrior", "RowSparsePrior", "GroupLassoPrior",
    "MismatchedPrior", "Layer", "LinearLayer", "ActivationLayer", "ReluLayer", "IdentityLayer",
    "Operator", "DenseOperator", "SparseOperator", "DctOperator", "Output", "AwgnOutput",
    "TwoLayerOutput", "MixedRegressionOutput", "Network",
    # running
    "MessagePolicy", "Solution", "solve", "state_evolution", "compare", "from_toml", "Problem",
    # experiments
    "fig2", "two_layer", "mmv", "mixed", "inpaint",
    # sketched clustering (the submodule mlmatvamp.sketch)
    "sketch",
    # utilities
    "history_arrays", "columns", "threads",
    # errors
    "MlmatvampError", "InputError", "ShapeError", "NonFiniteError", "NotSymmetricError",
    "NotPositiveDefiniteError", "InvalidArgumentError", "ConfigurationError", "DataFileError",
    "NumericalError", "DivergenceError", "StoppedError",
]

#: The row-sparse prior of the configuration files (``kind = "row-sparse"``).
RowSparsePrior = BernoulliGaussianPrior

PathLike = Union[str, "_os.PathLike[str]"]
ArrayLike = Any


def ReluLayer(
    d: int,
    *,
    noise_precision: Optional[ArrayLike] = None,
    estimator: str = "mmse",
    mmse_nodes: Optional[int] = None,
) -> ActivationLayer:
    """A row-wise relu layer ``Z_l = relu(Z_{l-1}) + Ξ`` (``d ≤ 6``): ``ActivationLayer("relu", …)``."""
    return ActivationLayer(
        "relu", d, noise_precision=noise_precision, estimator=estimator, mmse_nodes=mmse_nodes
    )


def IdentityLayer(
    d: int, *, noise_precision: Optional[ArrayLike] = None, estimator: str = "mmse"
) -> ActivationLayer:
    """A row-wise noisy identity layer ``Z_l = Z_{l-1} + Ξ``: ``ActivationLayer("identity", …)``."""
    return ActivationLayer("identity", d, noise_precision=noise_precision, estimator=estimator)


class MessagePolicy:
    """The message rule's safeguards: every outgoing precision's eigenvalues are clipped into
    ``[lam_min, lam_max]``; precisions and means are damped by ``damp_precision`` and
    ``damp_mean`` in ``[0, 1)`` (0 = none). A dict with these keys is accepted too."""

    __slots__ = ("lam_min", "lam_max", "damp_precision", "damp_mean")

    def __init__(
        self,
        lam_min: float = 1e-12,
        lam_max: float = 1e12,
        damp_precision: float = 0.0,
        damp_mean: float = 0.0,
    ) -> None:
        self.lam_min = float(lam_min)
        self.lam_max = float(lam_max)
        self.damp_precision = float(damp_precision)
        self.damp_mean = float(damp_mean)

    def _asdict(self) -> Dict[str, float]:
        return {k: getattr(self, k) for k in self.__slots__}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__)
        return f"MessagePolicy({args})"


# ----------------------------------------------------------------------------------------------
# Records to arrays
# ----------------------------------------------------------------------------------------------


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, list) and len(v) == 0)


def _to_array(values: Sequence[Any]) -> Optional[np.ndarray]:
    """``values`` as one numeric array (``None`` → NaN), or ``None`` if they are not numeric or
    not rectangular."""
    flat = list(values)
    if not flat:
        return np.zeros(0)
    kinds = {type(v) for v in flat}
    if kinds == {bool}:
        return np.asarray(flat, dtype=bool)
    if kinds == {int}:
        for dtype in (np.int64, np.uint64):  # seeds are unsigned 64-bit
            try:
                return np.asarray(flat, dtype=dtype)
            except OverflowError:
                pass
        return np.asarray(flat, dtype=object)
    if kinds == {str}:
        return np.asarray(flat, dtype=str)
    if kinds & {str, dict, bool}:
        return None
    present = [i for i, v in enumerate(flat) if not _missing(v)]
    if not present:
        return np.full(len(flat), np.nan)
    try:
        arr = np.asarray([flat[i] for i in present], dtype=float)
    except (TypeError, ValueError):  # ragged, or not numbers
        return None
    if len(present) == len(flat):
        return arr
    out = np.full((len(flat),) + arr.shape[1:], np.nan)
    out[present] = arr
    return out


def columns(obj: Any) -> Any:
    """Turns a JSON-like result into dicts of arrays: a list of records (dicts) becomes a dict of
    columns (one entry per field, recursively); a list of numbers, or of equal-shaped nested
    lists, becomes a numpy array (``None`` → NaN); strings become string arrays; a solver or
    state-evolution history (records with ``iteration`` and ``variables``) becomes
    :func:`history_arrays`; anything else is kept as it is."""
    if isinstance(obj, dict):
        return {k: columns(v) for k, v in obj.items()}
    if isinstance(obj, list):
        if obj and all(isinstance(x, dict) and "variables" in x and "iteration" in x for x in obj):
            return history_arrays(obj)
        if obj and all(isinstance(x, dict) for x in obj):
            keys: List[str] = []
            for x in obj:
                for k in x:
                    if k not in keys:
                        keys.append(k)
            return {k: columns([x.get(k) for x in obj]) for k in keys}
        arr = _to_array(obj)
        if arr is not None:
            return arr
        return [columns(x) for x in obj]
    return obj


def _record(rec: Dict[str, Any]) -> Dict[str, Any]:
    """One iteration record with its numeric lists as arrays."""
    out = dict(rec)
    out["variables"] = [
        {k: (np.asarray(v, dtype=float) if isinstance(v, list) else v) for k, v in var.items()}
        for var in rec.get("variables", [])
    ]
    return out


def history_arrays(records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """A history (one record per iteration, as in ``history.json`` or ``se.json``) as arrays per
    field: ``iteration`` and ``seconds`` of shape ``(K,)``; every per-variable field (``mse``,
    ``predicted_mse``, ``cov``, ``gamma_plus``, …, or the SE's ``se_mse``, ``k_plus``, …) of
    shape ``(K, L)`` or ``(K, L, d, d)``, NaN where a value is absent; ``warnings`` and
    ``solves`` as lists (one list per iteration)."""
    out: Dict[str, Any] = {
        "iteration": np.asarray([r["iteration"] for r in records], dtype=np.int64),
        "seconds": np.asarray([r.get("seconds", np.nan) for r in records], dtype=float),
    }
    fields: List[str] = []
    for r in records:
        for v in r.get("variables", []):
            for k in v:
                if k not in fields and k not in ("variable", "rows"):
                    fields.append(k)
    for f in fields:
        per_iteration = [[v.get(f) for v in r.get("variables", [])] for r in records]
        flat = [x for row in per_iteration for x in row]
        arr = _to_array(flat)
        if arr is None:
            out[f] = per_iteration
            continue
        depth = len(per_iteration[0]) if per_iteration else 0
        out[f] = arr.reshape((len(records), depth) + arr.shape[1:]).astype(float)
    if records and "warnings" not in out:
        out["warnings"] = [list(r.get("warnings", [])) for r in records]
        out["solves"] = [list(r.get("solves", [])) for r in records]
    return out


# ----------------------------------------------------------------------------------------------
# Algorithm 1
# ----------------------------------------------------------------------------------------------


class Solution:
    """The result of :func:`solve`.

    Attributes:
        estimates: the primary estimates ``Ẑ_0 … Ẑ_{L-1}`` (numpy arrays ``n_l x d``).
        covariances: their predicted average posterior row covariances ``Σ̄_l`` (``d x d``).
        history: the per-iteration records as arrays per field (:func:`history_arrays`):
            ``history["mse"]`` is ``(iterations, L)``, ``history["cov"]`` is
            ``(iterations, L, d, d)``, …
        records: the same records as dicts (the format of ``history.json``'s ``iterations``).
        converged: whether the tolerance stop fired.
        iterations: the number of iterations run.
    """

    __slots__ = ("estimates", "covariances", "history", "records", "converged")

    def __init__(
        self,
        estimates: List[np.ndarray],
        covariances: List[np.ndarray],
        records: List[Dict[str, Any]],
        converged: bool,
    ) -> None:
        self.estimates = estimates
        self.covariances = covariances
        self.records = records
        self.history = history_arrays(records)
        self.converged = converged

    @property
    def iterations(self) -> int:
        """The number of iterations run."""
        return len(self.records)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{z.shape[0]}x{z.shape[1]}" for z in self.estimates)
        return (
            f"<Solution: {self.iterations} iterations"
            f"{' (converged)' if self.converged else ''}, estimates {shapes}>"
        )


def _solution(raw: Any) -> Solution:
    estimates, covariances, history, converged = raw
    records = [_record(r) for r in history]
    return Solution(list(estimates), list(covariances), records, bool(converged))


def _wrap_callback(
    callback: Optional[Callable[[Dict[str, Any]], Any]]
) -> Optional[Callable[[Dict[str, Any]], Any]]:
    if callback is None:
        return None

    def call(record: Dict[str, Any]) -> Any:
        return callback(_record(record))

    return call


def _policy(policy: Union[None, MessagePolicy, Mapping[str, float]]) -> Any:
    if isinstance(policy, MessagePolicy):
        return policy._asdict()
    return policy


def solve(
    network: Network,
    iterations: int = 50,
    tol: Optional[float] = None,
    truth: Optional[Sequence[ArrayLike]] = None,
    policy: Union[None, MessagePolicy, Mapping[str, float]] = None,
    gamma_init: float = 1e-6,
    callback: Optional[Callable[[Dict[str, Any]], Any]] = None,
    init: Optional[Mapping[str, float]] = None,
) -> Solution:
    """Runs ML-Mat-VAMP (Algorithm 1) on ``network`` (which holds the observation).

    Args:
        network: the model.
        iterations: the maximum number of iterations.
        tol: stop when every primary estimate changes by less than this (relative Frobenius
            norm); ``None``: run all iterations.
        truth: optional ground truth ``[Z_0, …, Z_{L-1}]``: adds the empirical ``mse`` and
            ``error_cov`` to every record.
        policy: clipping and damping of the messages (:class:`MessagePolicy` or a dict).
        gamma_init: initial backward precisions ``gamma_init · I``.
        callback: ``callback(record)`` after every iteration (a dict as in ``history.json``,
            numeric fields as arrays); returning ``True`` stops the run after this iteration;
            an exception raised by it stops the run and propagates.
        init: a random asymmetric start ``{"seed": …, "precision": …, "scale": …}`` instead of
            ``R⁻ = 0`` (as ``[init]`` in a configuration; needed for mixed regression).

    Returns:
        a :class:`Solution`.

    The GIL is released while the core iterates; Ctrl-C stops the run within one iteration
    (``KeyboardInterrupt``). Errors: :class:`ShapeError` (a truth of the wrong shape),
    :class:`DivergenceError` (a message turned non-finite), the exception of a Python operator.
    """
    raw = _core._solve(
        network,
        int(iterations),
        tol,
        truth,
        _policy(policy),
        float(gamma_init),
        _wrap_callback(callback),
        init,
    )
    return _solution(raw)


# ----------------------------------------------------------------------------------------------
# Configuration files
# ----------------------------------------------------------------------------------------------


class Problem:
    """A configuration file read and built by the same code as ``mlmatvamp run``
    (:func:`from_toml`).

    Attributes:
        network: the :class:`Network`, holding the observation (drawn in teacher mode).
        truth: the ground truth (given by ``truth``, or drawn in teacher mode), or ``None``.
        teacher: whether the observation was drawn from the model (no ``y``).
        solver: the effective solver options (``iterations``, ``tolerance``, ``gamma_init``,
            ``policy``).
        config: the configuration as a dict (the parsed TOML).
        path: the configuration file.
        setup_seconds: seconds spent building it (reading, SVDs, sampling).
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.network: Network = inner.network
        self.truth: Optional[List[np.ndarray]] = inner.truth
        self.teacher: bool = inner.teacher
        self.solver: Dict[str, Any] = inner.solver
        self.config: Dict[str, Any] = inner.config
        self.path: Optional[str] = None if inner.path is None else str(inner.path)
        self.setup_seconds: float = inner.setup_seconds

    def solve(self, callback: Optional[Callable[[Dict[str, Any]], Any]] = None) -> Solution:
        """Runs ML-Mat-VAMP exactly as ``mlmatvamp run`` does (the configuration's options,
        start and truth); ``callback`` as in :func:`solve`. The estimates are bit-identical to
        the ``z_l.npy`` files of ``mlmatvamp run``."""
        return _solution(self._inner._solve(_wrap_callback(callback)))

    def __repr__(self) -> str:
        return repr(self._inner)


def from_toml(path: PathLike) -> Problem:
    """Reads and builds a configuration file (``docs/configuration.md``) through the core's
    ``config::load`` — the one resolver behind ``mlmatvamp run``, ``se`` and ``compare``.
    Relative file names are taken from the file's directory. Errors: :class:`ConfigurationError`
    (naming the key), :class:`DataFileError`, :class:`ShapeError`, ``FileNotFoundError``, …"""
    return Problem(_core._from_toml(_os.fspath(path)))


# ----------------------------------------------------------------------------------------------
# State evolution and comparison
# ----------------------------------------------------------------------------------------------


def state_evolution(
    model: Union[Network, PathLike],
    iterations: int = 50,
    n_mc: Optional[int] = None,
    seed: Optional[int] = None,
    psi_mode: Optional[str] = None,
    gamma_init: float = 1e-6,
    policy: Union[None, MessagePolicy, Mapping[str, float]] = None,
    callback: Optional[Callable[[Dict[str, Any]], Any]] = None,
) -> Dict[str, Any]:
    """The state evolution's prediction of ML-Mat-VAMP's error, per iteration and variable.

    Args:
        model: a :class:`Network`, or a configuration file (as ``mlmatvamp se``: law weights
            enter through their spectral laws, ``y`` may be omitted, and the file's
            ``iterations``, ``gamma_init``, ``[policy]`` and ``[se]`` apply).
        iterations, gamma_init, policy: for a network, as in :func:`solve`.
        n_mc: Monte-Carlo rows per sampled step (default 20000, or the file's ``[se] n_mc``).
        seed: seed of the Monte-Carlo draws (default 0, or the file's).
        psi_mode: ``"general"`` (default) or ``"identity"``.
        callback: ``callback(record)`` after every iteration; ``True`` stops.

    Returns:
        the records as arrays per field (:func:`history_arrays`): ``se_mse``, ``se_nmse``,
        ``se_mse_per_entry``, ``predicted_mse`` of shape ``(K, L)``; ``cov``, ``se_error_cov``,
        ``gamma_plus``, … of shape ``(K, L, d, d)``; and ``records``, the records as dicts.
    """
    cb = _wrap_callback(callback)
    if isinstance(model, Network):
        raw = _core._state_evolution(
            model,
            int(iterations),
            20000 if n_mc is None else int(n_mc),
            0 if seed is None else int(seed),
            "general" if psi_mode is None else psi_mode,
            float(gamma_init),
            _policy(policy),
            cb,
        )
    else:
        raw = _core._state_evolution_config(_os.fspath(model), n_mc, psi_mode, seed, cb)
    records = [_record(r) for r in raw]
    out = history_arrays(records)
    out.pop("warnings", None)
    out.pop("solves", None)
    out["records"] = records
    return out


_scratch = _threading.local()


def _scratch_dir() -> str:
    """A private directory for the files of drivers called without ``out`` (one per thread,
    reused by later calls of that thread, removed when the interpreter exits)."""
    path = getattr(_scratch, "path", None)
    if path is None or not _os.path.isdir(path):
        path = _tempfile.mkdtemp(prefix="mlmatvamp-")
        _atexit.register(_shutil.rmtree, path, True)
        _scratch.path = path
    return path


def _run_with_dir(out: Optional[PathLike], run: Callable[[str], Any]) -> Dict[str, Any]:
    return columns(run(_scratch_dir() if out is None else _os.fspath(out)))


def compare(
    config: PathLike,
    seeds: int = 1,
    out: Optional[PathLike] = None,
    empirical_se: bool = False,
    n_mc: Optional[int] = None,
    psi_mode: Optional[str] = None,
    seed: Optional[int] = None,
    callback: Optional[Callable[[str, int, int, Optional[str]], Any]] = None,
) -> Dict[str, Any]:
    """``mlmatvamp compare``: the algorithm (``seeds`` teacher draws) and the state evolution on
    the same configuration. Writes ``compare.json`` and ``compare.csv`` to ``out`` (a private
    temporary directory if ``None``) and returns the content of ``compare.json`` as dicts of
    arrays (``rows`` holds one column per field over the (iteration, variable) rows).
    ``callback(label, done, total, error)`` is called after every trial; ``True`` stops (then
    :class:`StoppedError`)."""
    return _run_with_dir(
        out,
        lambda d: _core._compare(
            _os.fspath(config), d, int(seeds), bool(empirical_se), n_mc, psi_mode, seed, callback
        ),
    )


# ----------------------------------------------------------------------------------------------
# Experiments
# ----------------------------------------------------------------------------------------------


def fig2(
    out: Optional[PathLike] = None,
    callback: Optional[Callable[[str, int, int, Optional[str]], Any]] = None,
    **options: Any,
) -> Dict[str, Any]:
    """The paper's Figure 2 (``mlmatvamp fig2``): ML-Mat-VAMP, ADAM and the SE learning the
    input layer of a two-layer network over the number of training samples.

    ``options`` are the fields of the core's ``Fig2Config`` (defaults: the paper's sweep), e.g.
    ``fig2(ntr=[500, 1000], trials=2, snr_db=[10.0], methods=["ml-mat-vamp", "adam"],
    vamp={"iterations": 10})``. Writes ``fig2.json``/``fig2.csv`` to ``out`` (a temporary
    directory if ``None``). Returns ``fig2.json`` as dicts of arrays: ``points`` has one column
    per field over the (snr, ntr, method) points: ``snr_db``, ``ntr``, ``method``, the
    normalized test MSE's ``median``, ``q25``, ``q75``, ``values`` (points x trials), …
    ``callback(label, done, total, error)`` after every trial; ``True`` stops."""
    return _run_with_dir(out, lambda d: _core._fig2(options, d, callback))


def two_layer(out: Optional[PathLike] = None, **options: Any) -> Dict[str, Any]:
    """One Figure-2 trial with its histories (``mlmatvamp two-layer``). ``options`` are the
    fields of the core's ``TwoLayerRunConfig``, e.g. ``two_layer(problem={"ntr": 1000,
    "snr_db": 10.0}, methods=["ml-mat-vamp"])``. Returns ``two_layer.json`` as dicts of arrays
    (``ml_mat_vamp["iterations"]["test_mse"]``, …)."""
    return _run_with_dir(out, lambda d: _core._two_layer(options, d))


def mmv(
    out: Optional[PathLike] = None,
    callback: Optional[Callable[[str, int, int, Optional[str]], Any]] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Multi-task regression (``mlmatvamp mmv``): ML-Mat-VAMP (MMSE, group lasso) vs FISTA vs the
    SE over the sampling ratio. ``options``: the fields of the core's ``MmvSweepConfig``.
    Returns ``mmv.json`` as dicts of arrays."""
    return _run_with_dir(out, lambda d: _core._mmv(options, d, callback))


def mixed(
    out: Optional[PathLike] = None,
    callback: Optional[Callable[[str, int, int, Optional[str]], Any]] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Mixed linear regression (``mlmatvamp mixed``): ML-Mat-VAMP vs alternating minimisation vs
    the SE over ``n/p``. ``options``: the fields of the core's ``MixedExperimentConfig``.
    Returns ``mixed.json`` as dicts of arrays."""
    return _run_with_dir(out, lambda d: _core._mixed(options, d, callback))


def inpaint(
    out: Optional[PathLike] = None,
    callback: Optional[Callable[[str, int, int, Optional[str]], Any]] = None,
    **options: Any,
) -> Dict[str, Any]:
    """Inpainting with a deep generative prior (``mlmatvamp inpaint``): ML-Mat-VAMP vs latent
    Adam vs the SE over the observed fraction. ``options``: the fields of the core's
    ``InpaintExperiment``. Returns ``inpaint.json`` as dicts of arrays."""
    return _run_with_dir(out, lambda d: _core._inpaint(options, d, callback))


# The submodule ``mlmatvamp.sketch`` (sketched clustering), imported last: it uses
# ``history_arrays`` above.
from . import sketch  # noqa: E402

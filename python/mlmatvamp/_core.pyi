"""Type stubs of the extension module ``mlmatvamp._core`` (the Rust part of the package).

Use the classes through ``mlmatvamp``; the ``_``-prefixed functions are wrapped there.
"""

import os
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union, final

import numpy as np
import numpy.typing as npt

_ArrayLike = npt.ArrayLike
_PathLike = Union[str, os.PathLike[str]]

__version__: str

# ----------------------------------------------------------------------------------------------
# Priors
# ----------------------------------------------------------------------------------------------

class Prior:
    """The prior ``p_0`` of the rows of ``Z_0`` (base class of every prior)."""

    @property
    def d(self) -> int:
        """The number of columns ``d``."""
    def describe(self) -> str:
        """A one-line description."""

@final
class GaussianPrior(Prior):
    """A Gaussian prior: the rows of ``Z_0`` are i.i.d. ``N(mean, covariance)``.

    Args:
        mean: length-``d`` vector (default zeros).
        covariance: ``d x d`` symmetric positive-definite matrix, or a scalar ``s`` for ``s I``
            (default identity).
        d: the number of columns, when neither ``mean`` nor ``covariance`` gives it.
    """

    def __new__(
        cls,
        mean: Optional[_ArrayLike] = None,
        covariance: Optional[_ArrayLike] = None,
        *,
        d: Optional[int] = None,
    ) -> GaussianPrior: ...
    @staticmethod
    def isotropic(d: int, variance: float = 1.0) -> "GaussianPrior":
        """The zero-mean prior with covariance ``variance · I_d``."""

@final
class BernoulliGaussianPrior(Prior):
    """A row-sparse (Bernoulli–Gaussian) prior: a row is zero with probability
    ``1 - sparsity``, else drawn from ``N(mean, covariance)``; MMSE denoiser."""

    def __new__(
        cls,
        sparsity: float,
        mean: Optional[_ArrayLike] = None,
        covariance: Optional[_ArrayLike] = None,
        *,
        d: Optional[int] = None,
    ) -> BernoulliGaussianPrior: ...

@final
class GroupLassoPrior(Prior):
    """The group-lasso prior ``∝ exp(-lam ‖z‖₂)`` on rows of length ``d``; MAP denoiser."""

    def __new__(cls, d: int, lam: float) -> GroupLassoPrior: ...

@final
class MismatchedPrior(Prior):
    """A teacher draws from ``data``, the algorithm denoises with ``estimator``."""

    def __new__(cls, data: Prior, estimator: Prior) -> MismatchedPrior: ...

# ----------------------------------------------------------------------------------------------
# Operators
# ----------------------------------------------------------------------------------------------

class Operator:
    """A linear operator ``W`` for matrix-free layers (base class); it follows the
    ``scipy.sparse.linalg.LinearOperator`` protocol."""

    @property
    def shape(self) -> Tuple[int, int]:
        """``(n_out, n_in)``."""
    @property
    def dtype(self) -> Any:
        """``numpy.float64``."""
    def describe(self) -> str:
        """A one-line description."""
    def matmat(self, x: _ArrayLike) -> npt.NDArray[np.float64]:
        """``W X`` for ``X`` of ``n_in`` rows (a vector is one column)."""
    def rmatmat(self, y: _ArrayLike) -> npt.NDArray[np.float64]:
        """``Wᵀ Y`` for ``Y`` of ``n_out`` rows (a vector is one column)."""
    def matvec(self, x: _ArrayLike) -> npt.NDArray[np.float64]:
        """``W x``."""
    def rmatvec(self, y: _ArrayLike) -> npt.NDArray[np.float64]:
        """``Wᵀ y``."""

@final
class DenseOperator(Operator):
    """A dense ``W`` as an operator (one copy, stored row by row; ``WᵀW X`` in one pass)."""

    def __new__(cls, weight: _ArrayLike) -> DenseOperator: ...

@final
class SparseOperator(Operator):
    """A sparse ``W`` (CSR) from a scipy sparse matrix or array of any format."""

    def __new__(cls, matrix: Any) -> SparseOperator: ...
    @staticmethod
    def from_csr(
        data: _ArrayLike, indices: _ArrayLike, indptr: _ArrayLike, shape: Tuple[int, int]
    ) -> "SparseOperator":
        """From CSR arrays (validated: each inconsistency is a named error)."""

@final
class DctOperator(Operator):
    """``W = scale · S D diag(σ)``: ``rows`` seeded rows of the orthonormal ``cols``-point DCT-II
    with seeded random signs; ``W Wᵀ = scale² I`` (a closed-form layer)."""

    def __new__(cls, rows: int, cols: int, *, seed: int = 0, scale: float = 1.0) -> DctOperator: ...

# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

class Layer:
    """A hidden layer (base class): linear for odd ``l``, row-wise for even ``l``."""

    @property
    def d(self) -> int:
        """The number of columns ``d``."""
    @property
    def kind(self) -> str:
        """``"linear"`` or ``"row-wise"``."""
    def describe(self) -> str:
        """A one-line description."""

@final
class LinearLayer(Layer):
    """A linear layer ``Z_l = W Z_{l-1} + B + Ξ`` (rows of ``Ξ`` ~ ``N(0, N^{-1})``, or
    noiseless).

    ``weight`` is a dense array (read without a copy by the SVD), a scipy sparse matrix, an
    :class:`Operator`, or any object with ``shape``, ``matmat(X)`` and ``rmatmat(Y)``.

    Args:
        weight: ``W`` (``n_l x n_{l-1}``).
        d: the number of columns.
        bias: ``B`` (``n_l x d``, or a row of length ``d``).
        noise_precision: ``N`` (``d x d`` or a scalar for ``s I``); ``None`` = noiseless.
        method: ``"svd"``, ``"cg"`` or ``"auto"``.
        tolerance, max_iterations, form: conjugate-gradient options.
        probes, lanczos_steps, law_seed: the stochastic Lanczos estimate of the spectral law.
        singular_values: the singular values of ``W``, if known.
    """

    def __new__(
        cls,
        weight: Any,
        d: int,
        *,
        bias: Optional[_ArrayLike] = None,
        noise_precision: Optional[_ArrayLike] = None,
        method: str = "auto",
        tolerance: float = 1e-8,
        max_iterations: int = 1000,
        form: str = "auto",
        probes: int = 10,
        lanczos_steps: int = 40,
        law_seed: int = 0,
        singular_values: Optional[_ArrayLike] = None,
    ) -> LinearLayer: ...
    @property
    def method(self) -> str:
        """``"svd"``, ``"cg"`` or ``"closed form"``."""
    @property
    def shape(self) -> Tuple[int, int]:
        """``(n_l, n_{l-1})``."""
    @property
    def setup_seconds(self) -> float:
        """Seconds spent at construction (the SVD or the spectral-law estimate)."""

@final
class ActivationLayer(Layer):
    """A row-wise layer ``Z_l = σ(Z_{l-1}) + Ξ`` (``"identity"`` or ``"relu"``)."""

    def __new__(
        cls,
        activation: str,
        d: int,
        *,
        noise_precision: Optional[_ArrayLike] = None,
        estimator: str = "mmse",
        mmse_nodes: Optional[int] = None,
    ) -> ActivationLayer: ...

# ----------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------

class Output:
    """The output channel ``p(Y | Z_{L-1})`` with its observation (base class)."""

    @property
    def d(self) -> int:
        """The number of columns of ``Z_{L-1}``."""
    @property
    def rows(self) -> int:
        """``n_{L-1}``."""
    @property
    def observation(self) -> npt.NDArray[np.float64]:
        """The observation ``Y`` (a copy)."""
    def describe(self) -> str:
        """A one-line description."""

@final
class AwgnOutput(Output):
    """``Y = Z_{L-1} + Ξ`` on the observed entries; ``mask`` (1 = observed) optional."""

    def __new__(cls, y: _ArrayLike, noise_precision: _ArrayLike, mask: Optional[_ArrayLike] = None
    ) -> AwgnOutput: ...

@final
class TwoLayerOutput(Output):
    """``Y = σ(Z_1) F_2 + N(0, noise_variance I)`` with known ``F_2`` (``d x n_out``)."""

    def __new__(
        cls,
        y: _ArrayLike,
        f2: _ArrayLike,
        noise_variance: float,
        *,
        activation: str = "sigmoid",
        estimator: Union[None, str, dict[str, Any]] = None,
        hessian: str = "exact",
    ) -> TwoLayerOutput: ...

@final
class MixedRegressionOutput(Output):
    """``y_i = [Z_{L-1}]_{i q_i} + N(0, noise_variance)``, ``q_i`` ~ ``weights``."""

    def __new__(
        cls,
        y: _ArrayLike,
        d: int,
        noise_variance: float,
        *,
        weights: Optional[_ArrayLike] = None,
        estimator: str = "mmse",
    ) -> MixedRegressionOutput: ...

# ----------------------------------------------------------------------------------------------
# Network and runs
# ----------------------------------------------------------------------------------------------

@final
class Network:
    """The model: a prior on ``Z_0`` (``rows`` rows), the hidden layers (linear, row-wise, …,
    linear) and an output holding the observation."""

    def __new__(cls, prior: Prior, rows: int, layers: Sequence[Layer], output: Output) -> Network: ...
    @property
    def rows(self) -> List[int]:
        """``n_0 … n_{L-1}``."""
    @property
    def d(self) -> int:
        """The number of columns."""
    @property
    def depth(self) -> int:
        """``L``."""
    @property
    def prior(self) -> Prior: ...
    @property
    def layers(self) -> List[Layer]: ...
    @property
    def output(self) -> Output: ...
    def describe(self) -> str:
        """One line per variable and the output."""
    def with_output(self, output: Output) -> "Network":
        """The same network with another output."""
    def sample(self, seed: int = 0) -> Tuple[List[npt.NDArray[np.float64]], "Network"]:
        """A teacher: ``(truth, network holding the drawn observation)``."""

@final
class Problem:
    """A configuration file built by the core (wrapped by ``mlmatvamp.Problem``)."""

    @property
    def network(self) -> Network: ...
    @property
    def truth(self) -> Optional[List[npt.NDArray[np.float64]]]: ...
    @property
    def teacher(self) -> bool: ...
    @property
    def path(self) -> Optional[str]: ...
    @property
    def setup_seconds(self) -> float: ...
    @property
    def solver(self) -> dict[str, Any]:
        """The effective solver options."""
    @property
    def config(self) -> dict[str, Any]:
        """The configuration as parsed TOML."""
    def _solve(
        self, callback: Optional[Callable[[dict[str, Any]], Any]] = None
    ) -> Tuple[List[npt.NDArray[np.float64]], List[npt.NDArray[np.float64]], List[dict[str, Any]], bool]: ...

def _solve(
    network: Network,
    iterations: int,
    tol: Optional[float],
    truth: Optional[Sequence[_ArrayLike]],
    policy: Any,
    gamma_init: float,
    callback: Optional[Callable[[dict[str, Any]], Any]],
    init: Any,
) -> Tuple[List[npt.NDArray[np.float64]], List[npt.NDArray[np.float64]], List[dict[str, Any]], bool]: ...
def _from_toml(path: _PathLike) -> Problem: ...
def _state_evolution(
    network: Network,
    iterations: int,
    n_mc: int,
    seed: int,
    psi_mode: str,
    gamma_init: float,
    policy: Any,
    callback: Optional[Callable[[dict[str, Any]], Any]],
) -> List[dict[str, Any]]: ...
def _state_evolution_config(
    path: _PathLike,
    n_mc: Optional[int],
    psi_mode: Optional[str],
    seed: Optional[int],
    callback: Optional[Callable[[dict[str, Any]], Any]],
) -> List[dict[str, Any]]: ...
def _fig2(options: Any, out: _PathLike, callback: Optional[Callable[..., Any]]) -> dict[str, Any]: ...
def _two_layer(options: Any, out: _PathLike) -> dict[str, Any]: ...
def _mmv(options: Any, out: _PathLike, callback: Optional[Callable[..., Any]]) -> dict[str, Any]: ...
def _mixed(options: Any, out: _PathLike, callback: Optional[Callable[..., Any]]) -> dict[str, Any]: ...
def _inpaint(options: Any, out: _PathLike, callback: Optional[Callable[..., Any]]) -> dict[str, Any]: ...
def _compare(
    path: _PathLike,
    out: _PathLike,
    seeds: int,
    empirical_se: bool,
    n_mc: Optional[int],
    psi_mode: Optional[str],
    seed: Optional[int],
    callback: Optional[Callable[..., Any]],
) -> dict[str, Any]: ...
# ----------------------------------------------------------------------------------------------
# Sketched clustering (wrapped by ``mlmatvamp.sketch``)
# ----------------------------------------------------------------------------------------------

@final
class Frequencies:
    """The frequency matrix ``Ω`` (``M x p``) of a sketch with the ``σ²`` it was adapted to.
    ``Frequencies(matrix, sigma2)`` takes given frequencies; ``Frequencies.draw`` draws them.
    Picklable."""

    def __new__(cls, matrix: _ArrayLike, sigma2: float) -> Frequencies: ...
    @staticmethod
    def draw(m: int, p: int, sigma2: float, seed: int = 0) -> "Frequencies":
        """``m`` frequencies in ``R^p`` from the adapted-radius law for ``sigma2``, seeded."""
    @property
    def matrix(self) -> npt.NDArray[np.float64]:
        """``Ω`` (``M x p``), a new array."""
    @property
    def sigma2(self) -> float:
        """The ``σ²`` the frequencies were adapted to."""
    @property
    def fingerprint(self) -> int:
        """The identifier of ``Ω`` stored in partial sketches."""
    @property
    def m(self) -> int:
        """``M``."""
    @property
    def p(self) -> int:
        """``p``."""
    def prefix(self, m: int) -> "Frequencies":
        """The first ``m`` frequencies."""
    def gains(self, sigma2: Optional[float] = None) -> npt.NDArray[np.float64]:
        """The gains ``exp(−σ² ‖w_m‖²/2)`` (length ``M``)."""
    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]: ...

@final
class PartialSketch:
    """The mergeable sums behind the sketch of the points seen so far; ``PartialSketch(freqs)``
    is the sketch of no points. Picklable (its ``state``)."""

    def __new__(cls, freqs: Frequencies) -> PartialSketch: ...
    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "PartialSketch":
        """The partial sketch with the given ``state`` (inverse of ``state``)."""
    def add_block(self, data: _ArrayLike, freqs: Frequencies, first_row: Optional[int] = None) -> None:
        """Adds a block of points (``n x p``, finite) in place."""
    def finish(self, freqs: Frequencies) -> Sketch:
        """The finished sketch (centred at the data mean)."""
    def merge(self, other: "PartialSketch", freqs: Frequencies) -> "PartialSketch":
        """The partial sketch of the union with ``other``."""
    def copy(self) -> "PartialSketch":
        """A copy."""
    @property
    def count(self) -> int:
        """The number of points ``T``."""
    @property
    def m(self) -> int:
        """``M``."""
    @property
    def p(self) -> int:
        """``p``."""
    @property
    def fingerprint(self) -> int:
        """The fingerprint of the frequencies."""
    @property
    def shift(self) -> npt.NDArray[np.float64]:
        """The shift ``s`` of the sums (length ``p``)."""
    @property
    def sums(self) -> npt.NDArray[np.complex128]:
        """``Σ_t e^{i w_mᵀ(x_t − s)}`` (length ``M``)."""
    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """The running mean (length ``p``)."""
    @property
    def m2(self) -> npt.NDArray[np.float64]:
        """``Σ_t (x_tj − mean_j)²`` per coordinate."""
    @property
    def state(self) -> dict[str, Any]:
        """Everything it holds as ints and float64 arrays."""
    def __eq__(self, other: object) -> bool: ...
    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]: ...

@final
class Sketch:
    """A finished sketch ``y`` (centred at the data mean) with ``T``, the mean and the variance
    of the data. Picklable."""

    def __new__(cls, y: _ArrayLike, count: int, mean: _ArrayLike, variance: _ArrayLike) -> Sketch: ...
    @property
    def y(self) -> npt.NDArray[np.float64]:
        """``M x 2``: real and imaginary parts."""
    @property
    def values(self) -> npt.NDArray[np.complex128]:
        """``y`` as a complex array (length ``M``)."""
    @property
    def count(self) -> int:
        """``T``."""
    @property
    def mean(self) -> npt.NDArray[np.float64]:
        """The data mean (length ``p``)."""
    @property
    def variance(self) -> npt.NDArray[np.float64]:
        """The per-coordinate variance of the data."""
    @property
    def m(self) -> int:
        """``M``."""
    @property
    def p(self) -> int:
        """``p``."""
    def prefix(self, m: int) -> "Sketch":
        """The sketch at the first ``m`` frequencies."""
    def __reduce__(self) -> Tuple[Any, Tuple[Any, ...]]: ...

def sketch_block(data: _ArrayLike, freqs: Frequencies) -> PartialSketch:
    """The partial sketch of one block of points (the "map")."""
def merge(a: PartialSketch, b: PartialSketch, freqs: Frequencies) -> PartialSketch:
    """The partial sketch of the union of two disjoint shards (the "reduce")."""
def sketch(data: _ArrayLike, freqs: Frequencies) -> Sketch:
    """The sketch of an in-memory dataset (``T x p``)."""
def estimate_sigma2(sample: _ArrayLike, k: int, rounds: int = 10, seed: int = 0) -> float:
    """The within-cluster variance ``σ²`` by seeded k-means++ and Lloyd on a subsample."""
def _cluster(
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
    init: Optional[_ArrayLike] = None,
    options: Any = None,
) -> dict[str, Any]: ...
def _conversion_log(clear: bool = False) -> List[Tuple[str, str]]:
    """``(argument, mode)`` of recent array conversions: ``"view"`` (no copy), ``"copy"`` (one
    copy into the core's storage), ``"converted"`` (a new float64 array first)."""
def _last_call_seconds() -> float:
    """Seconds the last solve, state evolution or experiment spent inside the core."""
def threads() -> int:
    """The number of threads the core computes on."""

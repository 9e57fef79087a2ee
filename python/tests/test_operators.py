"""Operators from Python: scipy sparse matrices, the core's operators, and any object with
`shape`, `matmat(X)` and `rmatmat(Y)`; an exception raised inside a user's operator surfaces as
that exception."""

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.linalg import aslinearoperator

import mlmatvamp as mv

D = 3


def problem(W, seed=0):
    """A row-sparse prior, W, an AWGN output with a drawn observation (from the SVD network)."""
    n_out, n_in = W.shape
    dense = W.toarray() if sp.issparse(W) else W
    prior = mv.BernoulliGaussianPrior(0.3, covariance=np.array([[1.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 1.0]]))
    model = mv.Network(prior, n_in, [mv.LinearLayer(dense, D)], mv.AwgnOutput(np.zeros((n_out, D)), 200.0))
    truth, net = model.sample(seed=seed)
    return prior, truth, net.output


def solve_with(weight, prior, output, truth, **options):
    layer = mv.LinearLayer(weight, D, **options)
    net = mv.Network(prior, weight.shape[1], [layer], output)
    return layer, mv.solve(net, iterations=15, truth=truth)


class NumpyOperator:
    """A pure-Python operator over a numpy matrix."""

    def __init__(self, W):
        self.W = W
        self.shape = W.shape
        self.calls = 0

    def matmat(self, X):
        self.calls += 1
        assert X.ndim == 2 and X.shape[0] == self.shape[1]
        return self.W @ X

    def rmatmat(self, Y):
        self.calls += 1
        return self.W.T @ Y


@pytest.fixture(scope="module")
def dense():
    rng = np.random.default_rng(11)
    return rng.standard_normal((150, 200)) / np.sqrt(200)


def test_python_operator_equals_core_dense_operator(dense):
    prior, truth, output = problem(dense)
    opts = dict(method="cg", tolerance=1e-12)
    _, ref = solve_with(dense, prior, output, truth, **opts)
    op = NumpyOperator(dense)
    layer, sol = solve_with(op, prior, output, truth, **opts)
    assert layer.method == "cg" and op.calls > 100
    for a, b in zip(ref.estimates, sol.estimates):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-10 * np.abs(a).max())
    # With the exact spectral law, the matrix-free run equals the SVD layer.
    sv = np.linalg.svd(dense, compute_uv=False)
    _, exact = solve_with(NumpyOperator(dense), prior, output, truth, method="cg", tolerance=1e-12, singular_values=sv)
    _, svd = solve_with(dense, prior, output, truth, method="svd")
    for a, b in zip(svd.estimates, exact.estimates):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-8 * np.abs(a).max())


def test_scipy_linear_operator_protocol(dense):
    prior, truth, output = problem(dense)
    _, ref = solve_with(NumpyOperator(dense), prior, output, truth, method="cg", tolerance=1e-12)
    _, sol = solve_with(aslinearoperator(dense), prior, output, truth, method="cg", tolerance=1e-12)
    np.testing.assert_allclose(sol.estimates[0], ref.estimates[0], atol=1e-10)


def test_scipy_sparse_matrix():
    W = sp.random(300, 400, density=0.05, random_state=3, format="csc") * np.sqrt(1 / (0.05 * 400))
    prior, truth, output = problem(W)
    layer, sol = solve_with(W, prior, output, truth, tolerance=1e-12)  # auto: CG for sparse weights
    assert layer.method == "cg" and "sparse" in layer.describe()
    _, ref = solve_with(W.toarray(), prior, output, truth, method="cg", tolerance=1e-12)
    np.testing.assert_allclose(sol.estimates[0], ref.estimates[0], atol=1e-9)
    assert sol.history["mse"][-1, 0] < 0.2 * np.mean(truth[0] ** 2) * D
    # The core's SparseOperator from the matrix or from CSR arrays.
    op = mv.SparseOperator(W)
    X = np.random.default_rng(1).standard_normal((400, D))
    np.testing.assert_allclose(op.matmat(X), W @ X, atol=1e-13)
    np.testing.assert_allclose(op.rmatvec(np.ones(300)), W.T @ np.ones(300), atol=1e-13)
    csr = W.tocsr()
    op2 = mv.SparseOperator.from_csr(csr.data, csr.indices, csr.indptr, csr.shape)
    np.testing.assert_array_equal(op2.matmat(X), op.matmat(X))
    with pytest.raises(mv.InvalidArgumentError, match="indptr"):
        mv.SparseOperator.from_csr(csr.data, csr.indices, csr.indptr[:-1], csr.shape)


def test_core_operators_follow_the_protocol(dense):
    op = mv.DenseOperator(dense)
    X = np.random.default_rng(2).standard_normal((200, 2))
    np.testing.assert_allclose(op.matmat(X), dense @ X, atol=1e-13)
    np.testing.assert_allclose(op.rmatmat(dense @ X), dense.T @ (dense @ X), atol=1e-12)
    assert op.shape == (150, 200) and "dense" in op.describe()
    dct = mv.DctOperator(64, 256, seed=3)
    Wd = dct.matmat(np.eye(256))
    np.testing.assert_allclose(Wd @ Wd.T, np.eye(64), atol=1e-12)  # W Wᵀ = I
    lin = aslinearoperator(dct)  # scipy accepts it
    np.testing.assert_allclose(lin.matvec(np.ones(256)), Wd @ np.ones(256), atol=1e-12)
    # A DCT layer has a closed form (no conjugate gradients).
    layer = mv.LinearLayer(dct, 2)
    assert layer.method == "closed form"


class OperatorFailure(Exception):
    pass


class Failing(NumpyOperator):
    def __init__(self, W, after):
        super().__init__(W)
        self.after = after

    def matmat(self, X):
        if self.calls >= self.after:
            raise OperatorFailure(f"matmat failed at call {self.calls}")
        return super().matmat(X)


def test_exception_in_operator_surfaces_unchanged(dense):
    prior, truth, output = problem(dense)
    # During the spectral-law estimate (at construction).
    with pytest.raises(OperatorFailure, match="call 0"):
        mv.LinearLayer(Failing(dense, 0), D)
    # During the iterations.
    sv = np.linalg.svd(dense, compute_uv=False)
    op = Failing(dense, 25)
    layer = mv.LinearLayer(op, D, singular_values=sv)
    net = mv.Network(prior, 200, [layer], output)
    with pytest.raises(OperatorFailure, match="call 25") as e:
        mv.solve(net, iterations=30)
    assert e.value.__traceback__ is not None
    # Nothing is left behind: the same network runs once the operator works again.
    op.after = 10**9
    assert mv.solve(net, iterations=3).iterations == 3


def test_bad_operator_results(dense):
    class WrongShape(NumpyOperator):
        def matmat(self, X):
            return (self.W @ X)[:-1]

    class Complex(NumpyOperator):
        def rmatmat(self, Y):
            return (self.W.T @ Y).astype(complex)

    with pytest.raises(mv.ShapeError, match="matmat") as e:
        mv.LinearLayer(WrongShape(dense), D)
    assert e.value.expected.startswith("150 x ")  # the Lanczos probes are one block
    with pytest.raises(TypeError, match="rmatmat"):
        mv.LinearLayer(Complex(dense), D)


def test_svd_needs_a_matrix(dense):
    with pytest.raises(mv.InvalidArgumentError, match="svd"):
        mv.LinearLayer(NumpyOperator(dense), D, method="svd")
    # A scipy sparse matrix is densified for an SVD the user asks for.
    layer = mv.LinearLayer(sp.csr_matrix(dense), D, method="svd")
    assert layer.method == "svd"


def test_optional_gram_is_used(dense):
    """An operator with `gram(X)` (WᵀW X in one call) gets one call per conjugate-gradient
    product instead of two; the result is the same."""
    prior, truth, output = problem(dense)

    class WithGram(NumpyOperator):
        grams = 0

        def gram(self, X):
            self.grams += 1
            return self.W.T @ (self.W @ X)

    plain, with_gram = NumpyOperator(dense), WithGram(dense)
    _, a = solve_with(plain, prior, output, truth, method="cg", tolerance=1e-12)
    _, b = solve_with(with_gram, prior, output, truth, method="cg", tolerance=1e-12)
    assert with_gram.grams > 50 and with_gram.calls < plain.calls / 2
    np.testing.assert_allclose(b.estimates[0], a.estimates[0], atol=1e-10)

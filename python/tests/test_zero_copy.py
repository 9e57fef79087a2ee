"""numpy conventions: float64 arrays in C order, Fortran order or any strided view are read in
place (the binding's conversion log says "view"); other real dtypes and array-likes are
converted; the results do not depend on the layout."""

import numpy as np
import pytest

import mlmatvamp as mv
from mlmatvamp import _core


def weight_modes():
    return [mode for arg, mode in _core._conversion_log() if arg == "weight"]


@pytest.fixture
def W():
    return np.random.default_rng(5).standard_normal((60, 80)) / np.sqrt(80)


def layer_estimate(weight, d=2):
    rng = np.random.default_rng(9)
    n_out, n_in = np.shape(weight)
    net = mv.Network(mv.BernoulliGaussianPrior(0.3, d=d), n_in, [mv.LinearLayer(weight, d)],
                     mv.AwgnOutput(rng.standard_normal((n_out, d)), 50.0))
    return mv.solve(net, iterations=15).estimates[0]


@pytest.mark.parametrize("layout", ["C", "F", "strided", "transposed", "negative"])
def test_float64_layouts_are_views(W, layout):
    big = np.random.default_rng(5).standard_normal((180, 170))
    arr = {
        "C": np.ascontiguousarray(W),
        "F": np.asfortranarray(W),
        "strided": big[::3, ::2][:60, :80],
        "transposed": np.ascontiguousarray(W.T).T,
        "negative": big[::-3, ::-2][:60, :80],
    }[layout]
    assert arr.dtype == np.float64
    _core._conversion_log(clear=True)
    mv.LinearLayer(arr, 2)
    assert weight_modes() and set(weight_modes()) == {"view"}, _core._conversion_log()


def test_layout_does_not_change_the_result(W):
    reference = layer_estimate(np.ascontiguousarray(W))
    for arr in [np.asfortranarray(W), np.pad(W, 3)[3:-3, 3:-3], W.astype(">f8")]:
        np.testing.assert_array_equal(layer_estimate(arr), reference)


@pytest.mark.parametrize("make", [
    lambda W: W.astype(np.float32),
    lambda W: (W * 10).astype(np.int64),
    lambda W: W.astype(">f8"),  # byte-swapped
    lambda W: W.tolist(),       # array-like
    lambda W: W > 0,            # bool
])
def test_other_inputs_are_converted(W, make):
    _core._conversion_log(clear=True)
    layer = mv.LinearLayer(make(W), 2)
    assert layer.shape == (60, 80)
    assert set(weight_modes()) == {"converted"}


def test_kept_inputs_are_copied_once(W):
    """The observation is kept by the core: copied once from the caller's memory, so changing
    the caller's array afterwards does not change the output."""
    y = np.ones((60, 2))
    _core._conversion_log(clear=True)
    out = mv.AwgnOutput(y, 1.0)
    assert ("y", "copy") in _core._conversion_log()
    y[0, 0] = 5.0
    assert out.observation[0, 0] == 1.0


def test_matrix_free_dense_view_then_core_copy(W):
    _core._conversion_log(clear=True)
    layer = mv.LinearLayer(W, 2, method="cg")
    assert layer.method == "cg"
    assert "copy" in weight_modes()  # DenseOperator stores W row by row (its own copy)


def test_results_are_fresh_numpy_arrays(W):
    net = mv.Network(mv.GaussianPrior(d=2), 80, [mv.LinearLayer(W, 2)], mv.AwgnOutput(np.zeros((60, 2)), 1.0))
    sol = mv.solve(net, iterations=3)
    z = sol.estimates[0]
    assert isinstance(z, np.ndarray) and z.dtype == np.float64 and z.shape == (80, 2)
    assert z.flags.writeable and z.flags.owndata
    assert sol.covariances[0].shape == (2, 2)


def test_scalars_and_vectors():
    """A scalar precision is s I; a 1-D observation is one column (d = 1)."""
    W = np.random.default_rng(1).standard_normal((30, 40)) / np.sqrt(40)
    y = W @ np.random.default_rng(2).standard_normal(40)
    net = mv.Network(mv.GaussianPrior(d=1), 40, [mv.LinearLayer(W, 1)], mv.AwgnOutput(y, 1e4))
    sol = mv.solve(net, iterations=20)
    assert sol.estimates[1].shape == (30, 1)
    np.testing.assert_allclose(sol.estimates[1][:, 0], y, atol=0.05)

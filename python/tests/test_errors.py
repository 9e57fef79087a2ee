"""Every exception class, raised by a bad input, with the core's message and attributes."""

import numpy as np
import pytest

import mlmatvamp as mv


def small_net(W=None, noise=100.0, d=2):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((8, 6)) if W is None else W
    return mv.Network(mv.GaussianPrior(d=d), W.shape[1], [mv.LinearLayer(W, d)],
                      mv.AwgnOutput(rng.standard_normal((W.shape[0], d)), noise))


def test_hierarchy():
    for cls in [mv.ShapeError, mv.NonFiniteError, mv.NotSymmetricError, mv.NotPositiveDefiniteError,
                mv.InvalidArgumentError, mv.ConfigurationError, mv.DataFileError]:
        assert issubclass(cls, mv.MlmatvampError) and issubclass(cls, ValueError)
    assert issubclass(mv.DivergenceError, mv.NumericalError)
    assert issubclass(mv.NumericalError, RuntimeError)
    assert issubclass(mv.StoppedError, mv.MlmatvampError)


def test_shape_error_names_the_matrix():
    with pytest.raises(mv.ShapeError) as e:
        mv.AwgnOutput(np.zeros((5, 2)), np.eye(3))
    assert e.value.what == "noise_precision"
    assert e.value.expected == "2 x 2" and e.value.got == "3 x 3"
    assert str(e.value) == "shape mismatch for noise_precision: expected 2 x 2, got 3 x 3"
    # Network shapes: the output has 7 rows where the layer gives 8.
    rng = np.random.default_rng(0)
    with pytest.raises(mv.ShapeError, match="rows of the output observation"):
        mv.Network(mv.GaussianPrior(d=2), 6, [mv.LinearLayer(rng.standard_normal((8, 6)), 2)],
                   mv.AwgnOutput(np.zeros((7, 2)), 1.0))
    with pytest.raises(mv.ShapeError, match="weight"):
        mv.LinearLayer(np.zeros(5), 2)  # 1-D weight
    with pytest.raises(mv.ShapeError, match="truth Z_0"):
        mv.solve(small_net(), iterations=2, truth=[np.zeros((5, 2)), np.zeros((8, 2))])
    with pytest.raises(mv.ShapeError, match="bias"):
        mv.LinearLayer(np.ones((4, 3)), 2, bias=np.ones((4, 3)))


def test_non_finite():
    W = np.ones((4, 3))
    W[1, 2] = np.nan
    with pytest.raises(mv.NonFiniteError) as e:
        mv.LinearLayer(W, 2)
    assert "weight W" in str(e.value) and e.value.what == "weight W"
    with pytest.raises(mv.NonFiniteError, match="prior mean"):
        mv.GaussianPrior([0.0, np.inf])


def test_not_symmetric_and_not_positive_definite():
    with pytest.raises(mv.NotSymmetricError, match="prior covariance"):
        mv.GaussianPrior(covariance=[[1.0, 0.5], [0.0, 1.0]])
    with pytest.raises(mv.NotPositiveDefiniteError, match="prior covariance") as e:
        mv.GaussianPrior(covariance=[[1.0, 2.0], [2.0, 1.0]])
    assert e.value.what == "prior covariance"
    with pytest.raises(mv.NotPositiveDefiniteError, match="noise_precision"):
        mv.AwgnOutput(np.zeros((3, 2)), -np.eye(2))


def test_invalid_argument():
    with pytest.raises(mv.InvalidArgumentError, match="sparsity|rho"):
        mv.BernoulliGaussianPrior(1.5, d=2)
    with pytest.raises(mv.InvalidArgumentError, match="method"):
        mv.LinearLayer(np.ones((3, 3)), 2, method="qr")
    with pytest.raises(mv.InvalidArgumentError, match="lam_min"):
        mv.solve(small_net(), iterations=2, policy={"lam_min": -1.0})
    with pytest.raises(mv.InvalidArgumentError, match="policy"):
        mv.solve(small_net(), iterations=2, policy={"lam_minimum": 1.0})
    with pytest.raises(mv.InvalidArgumentError, match="layer 1"):
        mv.Network(mv.GaussianPrior(d=2), 4, [mv.ActivationLayer("relu", 2)], mv.AwgnOutput(np.zeros((4, 2)), 1.0))
    with pytest.raises(mv.InvalidArgumentError):
        mv.fig2(trials=0)


def test_configuration_errors(tmp_path, repo):
    bad = tmp_path / "bad.toml"
    bad.write_text((repo / "examples/run/teacher.toml").read_text().replace("[prior]", "colour = 3\n[prior]", 1))
    with pytest.raises(mv.ConfigurationError, match="colour") as e:
        mv.from_toml(bad)
    assert e.value.path is not None and e.value.path.endswith("bad.toml")
    (tmp_path / "W.npy").write_text("not an npy file")
    cfg = tmp_path / "data.toml"
    cfg.write_text(
        'd = 1\n[prior]\nkind = "gaussian"\nrows = 3\n[[layer]]\nkind = "linear"\nweight = "W.npy"\n'
        '[output]\nkind = "awgn"\ny = [[1.0], [2.0]]\nnoise_precision = [[1.0]]\n'
    )
    with pytest.raises(mv.DataFileError, match="W.npy") as e:
        mv.from_toml(cfg)
    assert isinstance(e.value, mv.ConfigurationError)
    with pytest.raises(FileNotFoundError) as e:
        mv.from_toml(tmp_path / "missing.toml")
    assert e.value.filename.endswith("missing.toml")


def test_divergence_names_layer_and_iteration():
    """A Python operator whose products turn non-finite after a while: the core reports the
    non-finite message with the layer, direction and iteration."""
    rng = np.random.default_rng(3)
    W = rng.standard_normal((20, 30)) / np.sqrt(30)

    class Bad:
        shape = W.shape
        calls = 0

        def matmat(self, X):
            self.calls += 1
            return W @ X * (np.nan if self.calls > 6 else 1.0)

        def rmatmat(self, Y):
            return W.T @ Y

    layer = mv.LinearLayer(Bad(), 2, singular_values=np.linalg.svd(W, compute_uv=False))
    net = mv.Network(mv.GaussianPrior(d=2), 30, [layer], mv.AwgnOutput(rng.standard_normal((20, 2)), 10.0))
    with pytest.raises(mv.DivergenceError) as e:
        mv.solve(net, iterations=20)
    assert isinstance(e.value, mv.NumericalError)
    assert e.value.iteration >= 1 and "layer 1" in e.value.location
    assert "non-finite" in str(e.value)


def test_stopped_error():
    with pytest.raises(mv.StoppedError, match="fig2"):
        mv.fig2(ntr=[60], snr_db=[10.0], trials=2, methods=["ml-mat-vamp"], vamp={"iterations": 2},
                problem={"nin": 20, "nts": 50}, callback=lambda *a: True)


@pytest.mark.parametrize("bad,kind", [
    (np.ones((4, 3), dtype=complex), "complex"),
    (np.array([[object(), 1.0]], dtype=object), "object"),
    (np.array([["a", "b"]]), "<U1"),
])
def test_type_error_names_the_argument(bad, kind):
    with pytest.raises(TypeError, match=r"argument `weight`.*" + kind.replace("<", "")):
        mv.LinearLayer(bad, 2)
    with pytest.raises(TypeError, match="argument `y`"):
        mv.AwgnOutput(bad, 1.0)


def test_type_error_for_non_operators():
    with pytest.raises(TypeError, match="layers"):
        mv.Network(mv.GaussianPrior(d=1), 3, ["linear"], mv.AwgnOutput(np.zeros(3), 1.0))

    class NoShape:
        def matmat(self, X):
            return X

        def rmatmat(self, Y):
            return Y

    with pytest.raises(TypeError, match="shape"):
        mv.LinearLayer(NoShape(), 1)

"""Linear-Gaussian exactness through Python: on a Gaussian prior, one linear layer and an AWGN
output, ML-Mat-VAMP's fixed point is the exact posterior mean and its predicted covariance the
exact average row covariance. The reference is a dense solve over all Gaussian variables with
the Kronecker structure written out in numpy (row-major vec: entry (i, a) of an n x d matrix is
index i*d + a)."""

import numpy as np
import pytest

import mlmatvamp as mv
from conftest import random_spd


def dense_posterior(mu, sigma0, W, B, N, P, y):
    """Exact posterior means and average row covariances of Z_0 and Z_1 = W Z_0 + B (+ noise)."""
    n1, n0 = W.shape
    d = len(mu)
    I0, I1, Id = np.eye(n0), np.eye(n1), np.eye(d)
    # Free variables: vec(Z_0), then the layer noise vec(Ξ_1) if the layer is noisy.
    prec = [np.kron(I0, np.linalg.inv(sigma0))]
    lin = [np.kron(I0, np.linalg.inv(sigma0)) @ np.tile(mu, n0)]
    A1 = [np.kron(W, Id)]
    if N is not None:
        prec.append(np.kron(I1, N))
        lin.append(np.zeros(n1 * d))
        A1.append(np.eye(n1 * d))
    m = sum(p.shape[0] for p in prec)
    J = np.zeros((m, m))
    o = 0
    for p in prec:
        J[o:o + p.shape[0], o:o + p.shape[0]] = p
        o += p.shape[0]
    h = np.concatenate(lin)
    A1 = np.hstack(A1)
    c1 = (np.zeros((n1, d)) if B is None else B).reshape(-1)
    A0 = np.hstack([np.eye(n0 * d), np.zeros((n0 * d, m - n0 * d))])
    Pbig = np.kron(I1, P)
    J += A1.T @ Pbig @ A1
    h += A1.T @ Pbig @ (y.reshape(-1) - c1)
    C = np.linalg.inv(J)
    v = C @ h
    out = []
    for A, c, n in [(A0, np.zeros(n0 * d), n0), (A1, c1, n1)]:
        mean = (A @ v + c).reshape(n, d)
        cov = A @ C @ A.T
        avg = sum(cov[i * d:(i + 1) * d, i * d:(i + 1) * d] for i in range(n)) / n
        out.append((mean, avg))
    return out


CASES = {
    # name: (n0, n1, bias, noisy layer)
    "tall-noisy-bias": (20, 30, True, True),
    "wide-noiseless": (30, 18, False, False),
    "tall-noiseless-bias": (15, 35, True, False),
    "wide-noisy": (25, 15, False, True),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_linear_gaussian_exact(name):
    n0, n1, bias, noisy = CASES[name]
    d = 3
    rng = np.random.default_rng(sorted(CASES).index(name))
    mu = rng.standard_normal(d) * 0.5
    sigma0 = random_spd(d, 1.0, rng)
    W = rng.standard_normal((n1, n0)) / np.sqrt(n0)
    B = rng.standard_normal((n1, d)) if bias else None
    N = random_spd(d, 5.0, rng) if noisy else None
    P = random_spd(d, 10.0, rng)
    y = rng.standard_normal((n1, d))

    net = mv.Network(
        mv.GaussianPrior(mu, sigma0),
        n0,
        [mv.LinearLayer(W, d, bias=B, noise_precision=N)],
        mv.AwgnOutput(y, P),
    )
    sol = mv.solve(net, iterations=60)
    exact = dense_posterior(mu, sigma0, W, B, N, P, y)
    for l, (mean, cov) in enumerate(exact):
        est, sig = sol.estimates[l], sol.covariances[l]
        assert est.shape == (net.rows[l], d) and sig.shape == (d, d)
        rel = np.linalg.norm(est - mean) / np.linalg.norm(mean)
        crel = np.linalg.norm(sig - cov) / np.linalg.norm(cov)
        assert rel < 1e-11, f"Z_{l}: mean relative error {rel:.2e}"
        assert crel < 1e-11, f"Z_{l}: covariance relative error {crel:.2e}"
        # The history's last cov is the returned one; its trace is predicted_mse.
        np.testing.assert_allclose(sol.history["cov"][-1, l], sig, rtol=0, atol=0)
        assert sol.history["predicted_mse"][-1, l] == pytest.approx(np.trace(sig), rel=1e-14)


def test_matrix_free_layer_is_exact_too():
    """The same posterior through conjugate gradients with the exact spectral law."""
    d, n0, n1 = 3, 30, 18
    rng = np.random.default_rng(7)
    mu, sigma0 = np.zeros(d), random_spd(d, 1.0, rng)
    W = rng.standard_normal((n1, n0)) / np.sqrt(n0)
    P, y = random_spd(d, 10.0, rng), rng.standard_normal((n1, d))
    sv = np.linalg.svd(W, compute_uv=False)
    layer = mv.LinearLayer(W, d, method="cg", tolerance=1e-13, singular_values=sv)
    assert layer.method == "cg"
    sol = mv.solve(mv.Network(mv.GaussianPrior(mu, sigma0), n0, [layer], mv.AwgnOutput(y, P)), iterations=60)
    for l, (mean, cov) in enumerate(dense_posterior(mu, sigma0, W, None, None, P, y)):
        assert np.linalg.norm(sol.estimates[l] - mean) / np.linalg.norm(mean) < 1e-11
        assert np.linalg.norm(sol.covariances[l] - cov) / np.linalg.norm(cov) < 1e-11

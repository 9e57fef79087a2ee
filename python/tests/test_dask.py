"""Distributed through Dask: a linear layer whose W is a dask array chunked by rows, wrapped in
the operator protocol (python/examples/dask_operator.py), runs on a distributed LocalCluster
and gives the in-memory estimates to 1e-10. The cluster lives in this process (threads, no
dashboard, in-process transport), so it needs no network at all; the example
(python/examples/dask_operator.py) runs worker processes on the loopback interface."""

import numpy as np
import pytest

import mlmatvamp as mv

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask_operator  # noqa: E402  (python/examples, on sys.path through conftest)


@pytest.fixture(scope="module")
def client():
    # processes=False: scheduler and worker in this process, talking over the in-process
    # transport (no socket at all); no dashboard.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def test_dask_operator_products(client):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((90, 40))
    op = dask_operator.DaskRowOperator(da.from_array(W, chunks=(25, 40)), client)
    X, Y = rng.standard_normal((40, 3)), rng.standard_normal((90, 3))
    np.testing.assert_allclose(op.matmat(X), W @ X, atol=1e-12)
    np.testing.assert_allclose(op.rmatmat(Y), W.T @ Y, atol=1e-12)
    np.testing.assert_allclose(op.gram(X), W.T @ (W @ X), atol=1e-11)
    assert len(op.blocks) == 4 and op.calls == 3


def test_dask_layer_equals_in_memory(client):
    diff = dask_operator.run(n_in=600, n_out=400, chunks=4, client=client, iterations=8,
                             kind="three-values", probes=4, lanczos_steps=8)
    assert diff < 1e-10


def test_dask_gaussian_design_with_estimated_law(client):
    """A Gaussian W, its spectral law estimated by stochastic Lanczos through the cluster."""
    diff = dask_operator.run(n_in=300, n_out=200, chunks=2, client=client, iterations=4,
                             probes=4, lanczos_steps=12)
    assert diff < 1e-10

"""Distributed through Dask: a linear layer whose W is a dask array chunked by rows, wrapped in
the operator protocol (python/examples/dask_operator.py), runs on a distributed LocalCluster
and gives the in-memory estimates to 1e-10. The cluster listens on the loopback interface
(TCP on 127.0.0.1, no dashboard) with two worker processes: the row blocks of W live in other
processes' memory, as on a real cluster."""

import numpy as np
import pytest

import mlmatvamp as mv

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask_operator  # noqa: E402  (python/examples, on sys.path through conftest)


@pytest.fixture(scope="module")
def client():
    # Scheduler and two worker processes talk TCP over the loopback interface; no dashboard.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", protocol="tcp://",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
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

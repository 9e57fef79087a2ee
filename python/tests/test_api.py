"""The rest of the API: every factor kind in a run, the state evolution, compare, the
experiments as dicts of arrays, docstrings and type stubs."""

import ast
import inspect
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mlmatvamp as mv
from conftest import random_spd


def mmv_model(prior, n0=300, n1=200, d=3, seed=0):
    W = np.random.default_rng(seed).standard_normal((n1, n0)) / np.sqrt(n0)
    return mv.Network(prior, n0, [mv.LinearLayer(W, d)], mv.AwgnOutput(np.zeros((n1, d)), 100.0))


def test_priors_run():
    cov = [[1.0, 0.5, 0.2], [0.5, 1.0, 0.4], [0.2, 0.4, 1.0]]
    bg = mv.BernoulliGaussianPrior(0.2, covariance=cov)
    assert mv.RowSparsePrior is mv.BernoulliGaussianPrior and bg.d == 3
    truth, net = mmv_model(bg).sample(seed=1)
    for prior in [bg, mv.GroupLassoPrior(3, 0.5), mv.MismatchedPrior(bg, mv.GroupLassoPrior(3, 0.5)),
                  mv.GaussianPrior.isotropic(3, 0.2)]:
        sol = mv.solve(mv.Network(prior, 300, net.layers, net.output), iterations=30, tol=1e-7, truth=truth)
        assert np.isfinite(sol.estimates[0]).all()
        assert sol.history["mse"][-1, 0] < 0.5 * np.mean(np.sum(truth[0] ** 2, axis=1))
    assert "group" in mv.GroupLassoPrior(3, 0.5).describe().lower()


def test_relu_network_with_mask():
    """L = 4: linear, relu, linear, masked AWGN (the inpainting network)."""
    d, rng = 2, np.random.default_rng(4)
    W1 = rng.standard_normal((80, 40)) / np.sqrt(40)
    W3 = rng.standard_normal((120, 80)) / np.sqrt(80)
    mask = (rng.random((120, d)) < 0.7).astype(float)
    layers = [mv.LinearLayer(W1, d, noise_precision=100.0), mv.ReluLayer(d, noise_precision=100.0),
              mv.LinearLayer(W3, d)]
    model = mv.Network(mv.GaussianPrior(d=d), 40, layers, mv.AwgnOutput(np.zeros((120, d)), 100.0, mask=mask))
    assert model.depth == 4 and model.rows == [40, 80, 80, 120]
    assert [l.kind for l in model.layers] == ["linear", "row-wise", "linear"]
    truth, net = model.sample(seed=2)
    assert np.isnan(net.output.observation[mask == 0]).all()
    sol = mv.solve(net, iterations=15, truth=truth)
    assert sol.history["mse"].shape == (15, 4) and np.isfinite(sol.history["mse"]).all()
    assert sol.history["cov"].shape == (15, 4, d, d)
    for est in ["map", "mmse"]:
        layer = mv.ActivationLayer("relu", d, noise_precision=100.0, estimator=est, mmse_nodes=8)
        assert "relu" in layer.describe()
    identity = mv.IdentityLayer(d, noise_precision=random_spd(d, 5.0, rng))
    assert identity.kind == "row-wise"


def two_layer_data(d=2, nin=20, ntr=200, seed=5):
    # A sigmoid two-layer teacher: X (ntr x nin), F2 (d x 1), Y = sigmoid(X F1) F2 + noise.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((ntr, nin)) / np.sqrt(nin)
    F1, F2 = rng.standard_normal((nin, d)), rng.standard_normal((d, 1))
    Y = 1 / (1 + np.exp(-(X @ F1))) @ F2 + 0.05 * rng.standard_normal((ntr, 1))
    return X, F2, Y


def test_two_layer_output():
    d, nin = 2, 20
    X, F2, Y = two_layer_data(d, nin)
    for estimator in ["map", "mmse"]:
        out = mv.TwoLayerOutput(Y, F2, 0.0025, activation="sigmoid", estimator=estimator)
        net = mv.Network(mv.GaussianPrior(d=d), nin, [mv.LinearLayer(X, d)], out)
        sol = mv.solve(net, iterations=5, policy=mv.MessagePolicy(lam_min=0.3, lam_max=1e3))
        assert np.isfinite(sol.estimates[0]).all()


def test_two_layer_output_warm_start():
    # MapOptions::warm_start through the estimator dict: the Newton rows start at the previous
    # iteration's estimate; on this convex problem the run equals the cold one to 1e-6.
    d, nin = 2, 20
    X, F2, Y = two_layer_data(d, nin)
    est = {}
    for warm in [False, True]:
        out = mv.TwoLayerOutput(Y, F2, 0.0025, estimator={"map": {"warm_start": warm}})
        net = mv.Network(mv.GaussianPrior(d=d), nin, [mv.LinearLayer(X, d)], out)
        sol = mv.solve(net, iterations=8, policy=mv.MessagePolicy(lam_min=0.3, lam_max=1e3))
        est[warm] = sol.estimates[0]
    assert np.abs(est[True] - est[False]).max() <= 1e-6 * np.abs(est[False]).max()
    with pytest.raises(mv.InvalidArgumentError, match="unknown field"):
        mv.TwoLayerOutput(Y, F2, 0.0025, estimator={"map": {"warm_strat": True}})


def test_mixed_regression_with_random_start():
    rng = np.random.default_rng(6)
    p, n, d = 40, 240, 2
    X = rng.standard_normal((n, p)) / np.sqrt(p)
    F = rng.standard_normal((p, d))
    labels = rng.integers(0, d, n)
    y = (X @ F)[np.arange(n), labels] + 0.1 * rng.standard_normal(n)
    out = mv.MixedRegressionOutput(y, d, 0.01)
    net = mv.Network(mv.GaussianPrior(d=d), p, [mv.LinearLayer(X, d)], out)
    sol = mv.solve(net, iterations=60, init={"seed": 3, "precision": 1e-6, "scale": 1.0},
                   policy={"lam_min": 1e-3, "damp_precision": 0.2})
    Fh = sol.estimates[0]
    err = min(np.linalg.norm(Fh - F), np.linalg.norm(Fh[:, ::-1] - F)) / np.linalg.norm(F)
    assert err < 0.3


def test_state_evolution_of_a_network_predicts_the_run():
    bg = mv.BernoulliGaussianPrior(0.2, covariance=np.eye(3))
    truth, net = mmv_model(bg, n0=1500, n1=900).sample(seed=3)
    se = mv.state_evolution(net, iterations=8, n_mc=5000)
    sol = mv.solve(net, iterations=8, truth=truth)
    assert se["se_mse"].shape == (8, 2) and se["k_plus"].shape == (8, 2, 6, 6)
    assert len(se["records"]) == 8
    rel = abs(se["se_mse"][-1, 0] - sol.history["mse"][-1, 0]) / sol.history["mse"][-1, 0]
    assert rel < 0.25, rel
    stopped = mv.state_evolution(net, iterations=8, n_mc=2000, callback=lambda r: r["iteration"] == 1)
    assert stopped["se_mse"].shape == (2, 2)


def test_compare(repo):
    ticks = []
    res = mv.compare(repo / "examples/run/teacher.toml", seeds=2, n_mc=2000,
                     callback=lambda *a: ticks.append(a))
    assert res["seeds"] == 2 and res["failed"] == 0 and ticks
    rows = res["rows"]
    assert rows["sim_mse_per_entry"]["mean"].shape == rows["se_mse_per_entry"].shape
    assert np.all(np.abs(rows["mse_rel_gap"][-2:]) < 0.5)


def test_experiments_return_dicts_of_arrays(tmp_path):
    tl = mv.two_layer(problem={"ntr": 150, "nin": 20, "nts": 100}, methods=["ml-mat-vamp", "adam", "se"],
                      vamp={"iterations": 3}, adam={"epochs": 2}, se={"n_mc": 500})
    assert tl["ml_mat_vamp"]["iterations"]["test_mse"].shape == (3,)
    assert np.isfinite(tl["adam"]["test_mse"]) and len(tl["se"]["iterations"]["test_error"]) == 3
    f2 = mv.fig2(out=tmp_path / "fig2", ntr=[60, 80], snr_db=[10.0], trials=2, methods=["ml-mat-vamp", "adam"],
                 vamp={"iterations": 2}, adam={"epochs": 2}, problem={"nin": 20, "nts": 50})
    assert (tmp_path / "fig2" / "fig2.json").exists()
    pts = f2["points"]
    assert list(pts["method"]) == ["ml-mat-vamp", "ml-mat-vamp", "adam", "adam"] or len(pts["method"]) == 4
    # The test-MSE summary is flattened into the point (as in fig2.json).
    assert pts["median"].shape == (4,) and pts["values"].shape == (4, 2)
    assert pts["analytic_test_error"]["median"].shape == (4,)
    mm = mv.mmv(
        problem={"n0": 100}, ratios=[0.6], trials=1, **{"lambda": 0.1}, timing_repeats=0,
        se_iterations=5, se_average=2, se_n_mc=500, tuning_n_mc=500, solver={"iterations": 30, "tolerance": 1e-6})
    assert len(mm["points"]["ratio"]) == 1
    mx = mv.mixed(p=20, ratios=[4.0], trials=1, iterations=10, se_n_mc=500, altmin={"restarts": 1})
    assert mx["ratios"]["ratio"].tolist() == [4.0]
    ip = mv.inpaint(problem={"n0": 20, "n1": 40, "n3": 80}, fractions=[0.6], trials=1, iterations=3,
                    adam={"steps": 5}, se_rows=200, estimators=["mmse"])
    assert ip["points"]["observed"].tolist() == [0.6]
    with pytest.raises(mv.InvalidArgumentError, match="unknown field"):
        mv.mixed(colour=1)


def test_history_arrays_and_columns():
    recs = [{"iteration": 0, "seconds": 0.1, "variables": [{"variable": 0, "mse": None, "cov": [[1.0]]}]},
            {"iteration": 1, "seconds": 0.1, "variables": [{"variable": 0, "mse": 0.5, "cov": [[0.5]]}]}]
    h = mv.history_arrays(recs)
    assert np.isnan(h["mse"][0, 0]) and h["mse"][1, 0] == 0.5 and h["cov"].shape == (2, 1, 1, 1)
    c = mv.columns([{"a": 1, "b": {"x": [1.0, 2.0]}}, {"a": 2, "b": {"x": [3.0, 4.0]}}])
    assert c["a"].tolist() == [1, 2] and c["b"]["x"].shape == (2, 2)


def test_docstrings_everywhere():
    for name in mv.__all__:
        obj = getattr(mv, name)
        assert inspect.getdoc(obj), f"{name} has no docstring"
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not callable(member) and not isinstance(member, property):
                    continue
                assert inspect.getdoc(getattr(obj, attr)), f"{name}.{attr} has no docstring"


def test_type_stubs_cover_the_extension():
    stub = pathlib.Path(mv.__file__).with_name("_core.pyi")
    assert stub.exists() and pathlib.Path(mv.__file__).with_name("py.typed").exists()
    tree = ast.parse(stub.read_text())
    stubbed = {n.name for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef))}
    public = {n for n in dir(mv._core) if not n.startswith("__")}
    assert public - stubbed == set(), public - stubbed
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    for name, node in classes.items():
        cls = getattr(mv._core, name)
        members = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
        for attr in vars(cls):
            if not attr.startswith("__"):
                assert attr in members, f"{name}.{attr} missing from the stub"


def test_type_stubs_match_the_runtime_and_check_calls(tmp_path):
    """mypy's stubtest finds every signature of the extension equal to its stub (PyO3 classes are
    final, their constructors `__new__`), and mypy, with the stubs, rejects a wrong call."""
    allow = tmp_path / "allow.txt"
    allow.write_text("mlmatvamp._core.__all__\n")  # PyO3 adds __all__; the stub lists the names
    # In tmp_path: mypy's cache (.mypy_cache) goes there.
    run = lambda *args: subprocess.run([sys.executable, "-m", *args],  # noqa: E731
                                       capture_output=True, text=True, cwd=tmp_path, timeout=600)
    stubtest = run("mypy.stubtest", "mlmatvamp._core", "--ignore-disjoint-bases", "--allowlist", str(allow))
    assert stubtest.returncode == 0, stubtest.stdout + stubtest.stderr
    user = tmp_path / "user.py"
    user.write_text(textwrap.dedent("""
        import numpy as np
        import mlmatvamp as mv
        W = np.zeros((4, 3))
        net = mv.Network(mv.GaussianPrior(d=2), 3, [mv.LinearLayer(W, 2)], mv.AwgnOutput(np.zeros((4, 2)), 1.0))
        sol = mv.solve(net, iterations=3, tol=1e-6)
        z: np.ndarray = sol.estimates[0]
        mv.LinearLayer(W, d="two")
        mv.solve(net, tolerance=1e-6)
    """))
    checked = run("mypy", str(user))
    errors = [line for line in checked.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 2, checked.stdout
    assert "user.py:8:" in errors[0] and '"d"' in errors[0] and '"int"' in errors[0]
    assert "user.py:9:" in errors[1] and '"tolerance"' in errors[1]

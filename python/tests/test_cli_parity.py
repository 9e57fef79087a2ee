"""Python equals Rust: the same configuration through `mlmatvamp.from_toml` and through the
program (`mlmatvamp run`, `mlmatvamp se`) gives bit-identical numbers."""

import json
import subprocess

import numpy as np
import pytest

import mlmatvamp as mv

CONFIGS = [
    "examples/run/config.toml",  # data, truth, mask, bias
    "examples/run/teacher.toml",  # teacher mode, row-sparse prior
    "examples/mmv/group_lasso.toml",  # group-lasso prior (MAP), mismatched teacher
    "examples/inpaint/inpaint.toml",  # L = 4: relu layer, masked output
]


def run_cli(cli, *args):
    subprocess.run([str(cli), "--quiet", *map(str, args)], check=True, capture_output=True, timeout=600)


@pytest.mark.parametrize("config", CONFIGS)
def test_from_toml_equals_cli_run(cli, repo, tmp_path, config):
    path = repo / config
    run_cli(cli, "run", path, "--out", tmp_path)
    problem = mv.from_toml(path)
    sol = problem.solve()
    history = json.loads((tmp_path / "history.json").read_text())
    assert sol.iterations == history["iterations_run"]
    assert sol.converged == history["converged"]
    for l, (z, c) in enumerate(zip(sol.estimates, sol.covariances)):
        z_cli = np.load(tmp_path / f"z_{l}.npy")
        c_cli = np.load(tmp_path / f"cov_{l}.npy")
        assert z.shape == z_cli.shape
        assert np.array_equal(z, z_cli), f"z_{l} differs by {np.max(np.abs(z - z_cli)):.3e}"
        assert np.array_equal(c, c_cli), f"cov_{l} differs"
    # The per-iteration records agree too (the JSON round trip of floats is exact).
    mse_cli = np.array([[np.nan if v["mse"] is None else v["mse"] for v in it["variables"]]
                        for it in history["iterations"]])
    np.testing.assert_array_equal(sol.history["mse"], mse_cli)
    if problem.teacher:
        for l, t in enumerate(problem.truth):
            assert np.array_equal(t, np.load(tmp_path / f"truth_{l}.npy"))
        y_cli = np.load(tmp_path / "y.npy")
        assert np.array_equal(problem.network.output.observation, y_cli, equal_nan=True)


def test_state_evolution_equals_cli_se(cli, repo, tmp_path):
    path = repo / "examples/se/mmv.toml"
    run_cli(cli, "se", path, "--out", tmp_path, "--n-mc", 2000)
    se = mv.state_evolution(path, n_mc=2000)
    record = json.loads((tmp_path / "se.json").read_text())
    se_cli = np.array([[v["se_mse"] for v in it["variables"]] for it in record["iterations"]])
    np.testing.assert_array_equal(se["se_mse"], se_cli)


def test_problem_attributes(repo):
    problem = mv.from_toml(repo / "examples/run/config.toml")
    assert not problem.teacher
    assert problem.solver["iterations"] == 50 and problem.solver["tolerance"] == 1e-6
    assert problem.config["d"] == 3
    assert problem.network.rows == [100, 150]
    assert len(problem.truth) == 2 and problem.truth[0].shape == (100, 3)
    assert "Z_0: 100 x 3" in repr(problem)

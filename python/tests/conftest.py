"""Shared fixtures of the Python tests (run by scripts/test, see docs/python.md)."""

import os
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python" / "examples"))


@pytest.fixture(scope="session")
def repo() -> pathlib.Path:
    """The repository root."""
    return REPO


@pytest.fixture(scope="session")
def cli() -> pathlib.Path:
    """The release build of the `mlmatvamp` program (scripts/test builds it first)."""
    path = pathlib.Path(os.environ.get("MLMATVAMP_CLI", REPO / "target" / "release" / "mlmatvamp"))
    if not path.exists():
        pytest.fail(f"{path} not found: run `cargo build --release` first (scripts/test does)")
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_spd(d: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    """A random non-diagonal symmetric positive-definite matrix."""
    g = rng.standard_normal((d, d))
    return g @ g.T * (scale / d) + np.eye(d) * (0.3 * scale)

"""Shared fixtures: where the reference data lives, small synthetic site data."""

from __future__ import annotations

import os

# one BLAS/OpenMP thread per test process: the suite runs a process per core already
# (pytest -n), and oversubscribed BLAS threads make small matrix work many times slower
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$CONSORTIA_SHARED_DATA`` or ``../shared/data`` beside the project root."""
    env = os.environ.get("CONSORTIA_SHARED_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not (path / "tcga_brca" / "brca.csv").exists():
        pytest.skip(f"reference data not found at {path}")
    return path


@pytest.fixture
def toy_sites() -> dict[str, pd.DataFrame]:
    """Four sites of 40-60 rows with numeric columns x1, x2, y and a binary event."""
    rng = np.random.default_rng(12345)
    sites = {}
    for i, n in enumerate((40, 55, 60, 47)):
        x1 = rng.normal(i * 0.3, 1.0, n)
        x2 = rng.normal(0, 2.0, n)
        y = 1.0 + 0.5 * x1 - 0.25 * x2 + rng.normal(0, 1, n)
        event = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + 0.8 * x1 - 0.4 * x2)))).astype(int)
        sites[f"site{i}"] = pd.DataFrame({"x1": x1, "x2": x2, "y": y, "event": event})
    return sites


@pytest.fixture(autouse=True)
def reproducible_dp_noise(request, monkeypatch):
    """Differential-privacy noise from seeded, independent streams in every test.

    In production each noise share comes from the OS entropy; in tests it comes from
    a seed sequence keyed by the test's name, so that a statistical test gives the
    same verdict on every run (each call still gets a fresh, independent stream).
    Network tests run nodes in other processes, which keep their OS entropy.
    """
    import zlib

    from consortia.privacy import dp as dp_mod

    seq = np.random.SeedSequence(zlib.crc32(request.node.nodeid.encode()))
    monkeypatch.setattr(dp_mod, "_rng", lambda: np.random.default_rng(seq.spawn(1)[0]))

"""The random draws of the synthetic cohort, one site at a time: clinical table, survival,
expression counts, tile embeddings.

The generating model is described in :mod:`consortia.data.synthetic`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

STAGES = ("I", "II", "III", "IV")
GRADES = ("G1", "G2", "G3")

_STAGE_BASE = np.array([0.2, 0.35, 0.3, 0.15])
_STAGE_TILT = np.array([-1.5, -0.5, 0.5, 1.5])
_MSI_BY_STAGE = np.array([1.0, 1.4, 0.8, 0.3])
_WEIBULL_SHAPE = 1.3
_WEIBULL_SCALE = 3000.0
_FOLLOW_UP = (730.0, 2920.0)
_DROPOUT_MEAN = 5475.0
_AGE_CENTRE = 65.0


def _clinical(
    rng: np.random.Generator,
    site: str,
    n: int,
    p_stage: np.ndarray,
    msi_prevalence: float,
    n_prog: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    stage = rng.choice(4, size=n, p=p_stage)
    msi = (rng.random(n) < np.clip(msi_prevalence * _MSI_BY_STAGE[stage], 0, 1)).astype(int)
    g3 = rng.random(n) < 0.15 + 0.35 * msi
    grade = np.where(g3, 2, np.where(rng.random(n) < 0.3, 0, 1))
    female = (rng.random(n) < 0.5).astype(int)
    age = np.round(np.clip(rng.normal(_AGE_CENTRE, 11.0, n), 25.0, 95.0), 1)
    treated = (rng.random(n) < 0.5).astype(int)
    z = rng.normal(0.0, 1.0, (n, n_prog))
    frame = pd.DataFrame(
        {
            "pid": [f"{site}-{i + 1:05d}" for i in range(n)],
            "site": site,
            "age": age,
            "sex": np.where(female == 1, "F", "M"),
            "stage": np.asarray(STAGES)[stage],
            "grade": np.asarray(GRADES)[grade],
            "msi": np.where(msi == 1, "MSI-H", "MSS"),
            "arm": np.where(treated == 1, "treatment", "control"),
            "female": female,
            "stage_II": (stage == 1).astype(int),
            "stage_III": (stage == 2).astype(int),
            "stage_IV": (stage == 3).astype(int),
            "grade_3": (grade == 2).astype(int),
            "msi_high": msi,
            "treated": treated,
        }
    )
    return frame, msi, z


def _survival(rng: np.random.Generator, eta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = len(eta)
    t_event = _WEIBULL_SCALE * (rng.exponential(1.0, n) * np.exp(-eta)) ** (1 / _WEIBULL_SHAPE)
    t_admin = rng.uniform(*_FOLLOW_UP, n)
    t_drop = rng.exponential(_DROPOUT_MEAN, n)
    t_cens = np.minimum(t_admin, t_drop)
    event = (t_event <= t_cens).astype(int)
    time = np.maximum(1, np.ceil(np.minimum(t_event, t_cens))).astype(np.int64)
    return time, event


def _expression(
    rng: np.random.Generator,
    pids: pd.Series,
    base_log2: np.ndarray,
    batch: np.ndarray,
    lfc: np.ndarray,
    msi: np.ndarray,
    z: np.ndarray,
    prog_idx: np.ndarray,
    alpha: np.ndarray,
    subtype_log2: np.ndarray | None = None,
) -> pd.DataFrame:
    n = len(pids)
    size = rng.lognormal(0.0, 0.2) * rng.lognormal(0.0, 0.25, n)
    log2_mu = (base_log2 + batch)[None, :] + msi[:, None] * lfc[None, :]
    log2_mu[:, prog_idx] += z
    if subtype_log2 is not None:  # planted subtypes (no draw: the other streams are unchanged)
        log2_mu += subtype_log2
    mu = np.exp2(log2_mu, dtype=np.float32)
    mu *= size[:, None].astype(np.float32)
    shape = (1.0 / alpha).astype(np.float32)
    # Negative binomial as a gamma-Poisson mixture (float32 gamma draws are ~3x faster).
    lam = rng.standard_gamma(np.broadcast_to(shape, mu.shape), dtype=np.float32)
    lam *= (alpha.astype(np.float32))[None, :] * mu
    counts = rng.poisson(lam).astype(np.int32)
    return pd.DataFrame(counts, index=pd.Index(pids.to_numpy(), name="pid"))


def _tiles(
    rng: np.random.Generator,
    pids: pd.Series,
    msi: np.ndarray,
    centre: np.ndarray,
    msi_shift: np.ndarray,
    tiles_per_patient: tuple[int, int],
    dim: int,
) -> dict[str, np.ndarray]:
    n = len(pids)
    lo, hi = tiles_per_patient
    counts = rng.integers(lo, hi + 1, n)
    stain = rng.normal(0.0, 0.1, dim)
    means = centre + stain + rng.normal(0.0, 0.3, (n, dim)) + msi[:, None] * msi_shift
    owner = np.repeat(np.arange(n), counts)
    emb = (means[owner] + rng.normal(0.0, 1.0, (len(owner), dim))).astype(np.float32)
    bags = np.split(emb, np.cumsum(counts)[:-1])
    return dict(zip(pids.to_numpy().tolist(), bags))

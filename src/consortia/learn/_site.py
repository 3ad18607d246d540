"""Site-side steps of :class:`consortia.learn.train.Training`: reading, training, metrics.

Everything here runs inside :meth:`consortia.learn.train.Training.local`: the site's
columns and split, the round's metric sums, the (clipped) local update or the DP-SGD
step's share, Scaffold's control variate, and the evaluation and C-index arrays.  The
torch work itself lives in :mod:`consortia.learn._local`.  Caches (the site's data,
Scaffold's last control variate) are kept on the algorithm instance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import (
    SchemaError,
    SplitClassError,
    TrainingDivergedError,
    TrainingError,
)
from consortia.learn import _local
from consortia.learn import dp as _dp
from consortia.learn.evaluation import (
    column_codes,
    histogram_pairs,
    split_codes,
    within_auc_pairs,
)
from consortia.learn.models import get_model
from consortia.precision import DEFAULT_FRAC_BITS
from consortia.stats._validate import numeric_columns
from consortia.survival._grid import grid_map
from consortia.survival._validate import survival_columns
from consortia.survival.concordance import cell_pair_counts, harrell_pair_counts

if TYPE_CHECKING:
    from consortia.learn.train import Training

__all__ = [
    "MAX_SITES",
    "RANGE",
    "SiteData",
    "cells",
    "clip",
    "control",
    "evaluate",
    "metric_arrays",
    "read",
    "train",
    "train_dp",
]

MAX_SITES = 1000
"""Most sites the clipping bound is sized for (see :mod:`consortia.learn.train`)."""

RANGE = 2.0 ** (63 - DEFAULT_FRAC_BITS) / MAX_SITES
"""Largest magnitude a site may release in any value (the fixed-point range per site)."""


@dataclass(frozen=True)
class SiteData:
    """A site's arrays: features, outcome and split codes."""

    x: np.ndarray  # features
    y: np.ndarray  # label (n, 1) or time/event (n, 2)
    split: np.ndarray  # 0 train, 1 val, 2 test


def read(alg: Training, data: Dataset) -> SiteData:
    """The site's features, outcome and split codes (cached on ``alg`` per frame)."""
    cached = alg.__dict__.get("_site_data")
    if cached is not None and cached[0] is data.frame:
        return cached[1]
    frame = data.frame
    x = np.ascontiguousarray(numeric_columns(frame, alg.features))
    if alg.task == "cox":
        t, e = survival_columns(frame, str(alg.time), str(alg.event))
        y = np.column_stack([t, e.astype(np.float64)])
    else:
        y = numeric_columns(frame, (str(alg.label),)).reshape(-1, 1)
        if alg.task == "binary" and not np.all((y == 0) | (y == 1)):
            raise SchemaError(f"label column {alg.label!r} must hold only 0 and 1")
    if alg.split_column is not None:
        split = column_codes(frame[alg.split_column].astype(str).to_numpy(), alg.split_column)
    else:
        col = alg.id_column or data.id_column
        if col is not None and col not in frame.columns:
            raise SchemaError(f"id column {col!r} not found in the site's data")
        ids = frame[col].to_numpy() if col is not None else np.arange(len(frame))
        split = split_codes(
            ids,
            seed=alg.seed,
            val_fraction=alg.val_fraction,
            test_fraction=alg.test_fraction,
        )
    site = SiteData(np.ascontiguousarray(x), np.ascontiguousarray(y), split)
    object.__setattr__(alg, "_site_data", (frame, site))
    return site


def train_dp(alg: Training, d: SiteData, public: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """One DP-SGD step's share: the clipped per-sample gradient sum of a Poisson sample.

    The sample is drawn from the OS entropy (never the study's seed); the sum is
    released in integer units of ``clip_norm / UNITS`` and the runtime adds the
    noise share declared in the contribution.
    """
    dp = alg.dp
    assert dp is not None
    rows = _dp.poisson_sample(
        np.flatnonzero(d.split == 0),
        n_parameters=alg.n_parameters,
        noise_multiplier=float(dp["noise_multiplier"]),
        sample_rate=float(dp["sample_rate"]),
        limit=RANGE,
    )
    total, _ = _local.clipped_gradient_sum(
        spec=get_model(alg.model),
        hp=alg.hyperparameters,
        task=alg.task,
        x=d.x[rows],
        y=d.y[rows],
        weights=np.asarray(public["weights"], dtype=np.float64),
        clip_norm=alg.clip_norm,
    )
    # the count of clipped rows is data-dependent: not released in DP mode
    return {"update": np.rint(total * _dp.quantise_scale(alg.clip_norm)), "clipped": [0.0]}


def metric_arrays(alg: Training, d: SiteData, score: np.ndarray) -> dict[str, Any]:
    """Per split: row counts, summed loss and (binary) correct predictions."""
    counts, loss, correct = np.zeros(3), np.zeros(3), np.zeros(3)
    for k in range(3):
        rows = d.split == k
        counts[k] = float(rows.sum())
        loss[k] = _local.loss_sum(alg.task, score[rows], d.y[rows])
        if alg.task == "binary":
            correct[k] = float(np.sum((score[rows] > 0) == (d.y[rows, 0] == 1)))
    if not np.all(np.isfinite(loss)) or np.any(np.abs(loss) > RANGE):
        raise TrainingDivergedError(
            f"the {alg.task} loss of the global model is NaN, infinite or beyond the "
            "encoding range at a site; lower the learning rates"
        )
    out: dict[str, Any] = {"counts": counts, "loss": loss}
    if alg.task == "binary":
        out["correct"] = correct
    return out


def train(
    alg: Training, d: SiteData, public: Mapping[str, np.ndarray], site: str | None
) -> dict[str, Any]:
    """The round's weighted, clipped local update (and Scaffold's weighted gradient)."""
    rows = d.split == 0
    n = int(rows.sum())
    size = alg.n_parameters
    if n == 0:
        out: dict[str, Any] = {"update": np.zeros(size), "clipped": [0.0]}
        if alg.strategy_.control_variates:
            out["grad"] = np.zeros(size)
        return out
    if n * alg.clip_norm / min(alg.lr, 1.0) > RANGE:
        raise TrainingError(
            f"clip_norm times the site's training rows exceeds the fixed-point range "
            f"({RANGE:.3g}); lower 'clip_norm'"
        )
    x, y = d.x[rows], d.y[rows]
    if alg.task == "binary" and np.unique(y[:, 0]).size < 2:
        raise SplitClassError(
            f"the site's training split holds a single class of label {alg.label!r}; "
            "a binary model needs both classes at every training site"
        )
    spec, hp, strategy = get_model(alg.model), alg.hyperparameters, alg.strategy_
    weights = np.asarray(public["weights"], dtype=np.float64)
    common = {"spec": spec, "hp": hp, "task": alg.task, "x": x, "y": y}
    round_index = int(round(float(np.asarray(public["round"])[0])))
    correction = None
    grad_now = None
    if strategy.control_variates:
        if "previous" in public:
            prev = np.asarray(public["previous"], dtype=np.float64)
            own = control(alg, prev, common, round_index - 1, site)
            correction = np.asarray(public["control"], dtype=np.float64) - own
        grad_now = control(alg, weights, common, round_index, site)
    new = _local.train(
        **common,
        weights=weights,
        lr=alg.lr,
        steps=alg.local_steps,
        batch_size=alg.batch_size,
        mu=strategy.proximal_mu,
        correction=correction,
        seed=_local.site_seed(alg.seed, round_index, site),
    )
    delta, clipped = clip(new - weights, alg.clip_norm)
    out = {"update": n * delta, "clipped": [1.0 if clipped else 0.0]}
    if grad_now is not None:
        out["grad"] = n * grad_now
    return out


def control(
    alg: Training,
    weights: np.ndarray,
    common: Mapping[str, Any],
    round_index: int,
    site: str | None,
) -> np.ndarray:
    """Scaffold's ``c_i`` at ``weights`` (those of ``round_index``), clipped.

    The mean of the batch gradients over one epoch of a permutation seeded from
    (seed, round, site), or the full-batch gradient without ``batch_size``: the
    gradient of the objective local training follows (a Cox loss on batches is not
    the Cox loss of the whole split).  Computed at round ``r`` for the sum and again
    at ``r + 1`` for the correction; kept in between, and recomputed bit for bit by
    a restarted node.
    """
    key = (hashlib.sha256(weights.tobytes()).hexdigest(), round_index)
    cache = alg.__dict__.get("_control_cache")
    if cache is not None and cache[0] == key:
        return np.asarray(cache[1])
    grad = _local.batch_gradient(
        **common,
        weights=weights,
        batch_size=alg.batch_size,
        seed=_local.site_seed(alg.seed, round_index, f"{site or ''}/control"),
    )
    clipped = clip(grad, alg.clip_norm / alg.lr)[0]
    object.__setattr__(alg, "_control_cache", (key, clipped))
    return clipped


def evaluate(alg: Training, d: SiteData, score: np.ndarray) -> tuple[dict[str, Any], set[str]]:
    """AUC histograms (binary) or grid events and risk moments (cox); their count arrays."""
    if alg.task == "binary":
        prob = 1.0 / (1.0 + np.exp(-np.clip(score, -700, 700)))
        edges = np.linspace(0.0, 1.0, alg.auc_bins + 1)
        pos, neg = np.zeros((3, alg.auc_bins)), np.zeros((3, alg.auc_bins))
        own = np.zeros((3, 3))  # per split: histogram concordant, ambiguous, exact
        for k in range(3):
            rows = d.split == k
            lab = d.y[rows, 0]
            b = np.clip(np.searchsorted(edges, prob[rows], side="right") - 1, 0, alg.auc_bins - 1)
            pos[k] = np.bincount(b[lab == 1], minlength=alg.auc_bins)
            neg[k] = np.bincount(b[lab == 0], minlength=alg.auc_bins)
            own[k, :2] = histogram_pairs(pos[k], neg[k])
            own[k, 2] = within_auc_pairs(prob[rows], lab)
        return {"hist_pos": pos.ravel(), "hist_neg": neg.ravel(), "auc_own": own.ravel()}, {
            "hist_pos",
            "hist_neg",
        }
    if alg.task == "cox" and alg.time_grid is not None:
        idx, e = grid_map(d.y[:, 0], d.y[:, 1], alg.time_grid, column=str(alg.time))
        k = len(alg.time_grid)
        events = np.zeros((3, k))
        moments = np.zeros((3, 2))
        for s in range(3):
            rows = d.split == s
            events[s] = np.bincount(idx[rows], weights=e[rows].astype(np.float64), minlength=k)
            moments[s] = (score[rows].sum(), (score[rows] ** 2).sum())
        return {"events": events.ravel(), "risk_moments": moments.ravel()}, {"events"}
    return {}, set()


def cells(
    alg: Training, d: SiteData, score: np.ndarray, public: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """The C-index cells of the requested split: events and censored per (event bin, score cell)."""
    s = int(round(float(np.asarray(public["split"])[0])))
    rows = d.split == s
    idx, e = grid_map(d.y[rows, 0], d.y[rows, 1], alg.time_grid or (), column=str(alg.time))
    risk = score[rows]
    event_bins = np.rint(np.asarray(public["event_bins"])).astype(np.int64)
    bounds = np.asarray(public["bounds"], dtype=np.float64)
    cell = np.clip(np.searchsorted(bounds, risk, side="right") - 1, 0, bounds.size - 2)
    pos = np.searchsorted(event_bins, idx, side="right") - 1
    keep = pos >= 0
    nb = bounds.size - 1
    flat = pos[keep] * nb + cell[keep]
    size = event_bins.size * nb
    ev = e[keep].astype(np.float64)
    events = np.bincount(flat, weights=ev, minlength=size)
    censored = np.bincount(flat, weights=1.0 - ev, minlength=size)
    conc, comp, amb = cell_pair_counts(
        events.reshape(event_bins.size, nb), censored.reshape(event_bins.size, nb)
    )
    num, den = harrell_pair_counts(idx, e, risk)
    return {
        "events": events,
        "censored": censored,
        "own_cells": [conc, comp, amb],
        "within_exact": [num, den],
    }


def clip(v: np.ndarray, bound: float) -> tuple[np.ndarray, bool]:
    """``v`` scaled to L2 norm at most ``bound``, and whether it was scaled."""
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm):
        raise TrainingDivergedError("a site's update is NaN or infinite")
    if norm > bound:
        return v * (bound / norm), True
    return v, False

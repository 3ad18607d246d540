"""Hub-side helpers of :class:`consortia.learn.train.Training`: parameter checks, metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from consortia.errors import HyperparameterError, ValidationError
from consortia.learn.evaluation import SPLITS, auc_from_histograms
from consortia.survival._grid import grid_param
from consortia.survival.concordance import cell_pair_counts

__all__ = ["Evaluator", "check_params"]

TASKS = ("binary", "regression", "cox")
_BIG = 1e300  # the open ends of the outer score bins (public arrays are finite)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and np.isfinite(v)


def _column(algo: Any, name: str, *, required: bool) -> None:
    v = getattr(algo, name)
    if v is None and not required:
        return
    if not isinstance(v, str) or not v:
        raise ValidationError(f"{name} must be a column name (a non-empty string)")


def check_params(algo: Any) -> None:
    """Validate and normalise a :class:`~consortia.learn.train.Training`'s parameters.

    Raises
    ------
    ValidationError
        A parameter breaks its rule (the message names it).
    HyperparameterError
        ``hyperparameters`` or ``strategy_params`` is not a JSON object.
    """
    feats = algo.features
    feats = (feats,) if isinstance(feats, str) else tuple(feats)
    if not feats or not all(isinstance(f, str) and f for f in feats):
        raise ValidationError("features must be a non-empty list of column names")
    if len(set(feats)) != len(feats):
        raise ValidationError("features must not repeat a column")
    object.__setattr__(algo, "features", feats)
    if algo.task not in TASKS:
        raise ValidationError(f"task must be one of {list(TASKS)}")
    need = ("time", "event") if algo.task == "cox" else ("label",)
    for name in ("label", "time", "event"):
        _column(algo, name, required=name in need)
    outcomes = {getattr(algo, n) for n in need}
    if outcomes & set(feats):
        raise ValidationError("an outcome column is also listed among the features")
    for name in ("split_column", "id_column"):
        _column(algo, name, required=False)
    for name in ("hyperparameters", "strategy_params"):
        if not isinstance(getattr(algo, name), Mapping):
            raise HyperparameterError(f"{name} must be a JSON object (a mapping of names)")
    ints = {
        "rounds": (1, 9000),
        "local_steps": (1, 10**7),
        "auc_bins": (1, 10**6),
        "score_bins": (1, 10**6),
        "seed": (0, 2**63 - 1),
    }
    for name, (lo, hi) in ints.items():
        v = getattr(algo, name)
        if not _is_int(v) or not lo <= v <= hi:
            raise ValidationError(f"{name} must be an integer in [{lo}, {hi}]")
    for name in ("batch_size", "patience"):
        v = getattr(algo, name)
        if v is not None and (not _is_int(v) or v < 1):
            raise ValidationError(f"{name} must be a positive integer or None")
    for name in ("lr", "clip_norm"):
        v = getattr(algo, name)
        if not _is_num(v) or v <= 0:
            raise ValidationError(f"{name} must be a finite number > 0")
        object.__setattr__(algo, name, float(v))
    fr = []
    for name in ("val_fraction", "test_fraction"):
        v = getattr(algo, name)
        if not _is_num(v) or not 0 <= v < 1:
            raise ValidationError(f"{name} must be a number in [0, 1)")
        fr.append(float(v))
        object.__setattr__(algo, name, float(v))
    if sum(fr) >= 1:
        raise ValidationError("val_fraction + test_fraction must be below 1")
    if algo.patience is not None and algo.split_column is None and fr[0] == 0:
        raise ValidationError("patience (early stopping) needs a validation split: val_fraction")
    if algo.init not in ("uniform", "zeros"):
        raise ValidationError("init must be 'uniform' or 'zeros'")
    t = algo.round_timeout
    if t is not None and (not _is_num(t) or t <= 0):
        raise ValidationError("round_timeout must be a positive number of seconds or None")
    if algo.time_grid is not None:
        if algo.task != "cox":
            raise ValidationError("time_grid is for task 'cox' only")
        object.__setattr__(algo, "time_grid", grid_param(algo.time_grid))


class Evaluator:
    """Metrics from the sums of the rounds, kept by the hub."""

    def __init__(self, *, task: str, auc_bins: int, score_bins: int) -> None:
        self.task = task
        self.auc_bins = auc_bins
        self._score_bins = score_bins
        self._rows: list[dict[str, float]] = []

    def _split_metrics(self, sums: Mapping[str, np.ndarray]) -> dict[str, float]:
        counts = np.asarray(sums["counts"], dtype=np.float64)
        loss = np.asarray(sums["loss"], dtype=np.float64)
        out: dict[str, float] = {}
        for k, s in enumerate(SPLITS):
            n = float(np.rint(counts[k]))
            out[f"{s}_loss"] = float(loss[k] / n) if n > 0 else float("nan")
            if self.task == "binary":
                c = float(np.rint(np.asarray(sums["correct"])[k]))
                out[f"{s}_accuracy"] = c / n if n > 0 else float("nan")
        return out

    def record(self, r: int, sums: Mapping[str, np.ndarray], update_norm: float) -> None:
        """Keep one training round's metrics."""
        row = {"round": float(r), **self._split_metrics(sums)}
        row["update_norm"] = update_norm
        row["clipped_sites"] = float(np.rint(np.asarray(sums["clipped"])[0]))
        self._rows.append(row)

    def last(self, key: str) -> float:
        """The latest round's value of ``key`` (NaN before any round)."""
        return self._rows[-1].get(key, float("nan")) if self._rows else float("nan")

    def history(self) -> dict[str, np.ndarray]:
        """Per-round metrics as arrays (``round`` as integers)."""
        if not self._rows:
            return {"round": np.zeros(0, dtype=np.int64)}
        keys = list(self._rows[0])
        out = {k: np.array([row[k] for row in self._rows]) for k in keys}
        out["round"] = out["round"].astype(np.int64)
        return out

    def final(self, sums: Mapping[str, np.ndarray]) -> tuple[dict[str, float], dict[str, int]]:
        """Metrics and split sizes of the final weights (the ``evaluate`` round)."""
        metrics = self._split_metrics(sums)
        counts = np.rint(np.asarray(sums["counts"])).astype(np.int64)
        n = {s: int(counts[k]) for k, s in enumerate(SPLITS)}
        if self.task == "binary":
            pos = np.rint(np.asarray(sums["hist_pos"])).reshape(3, self.auc_bins)
            neg = np.rint(np.asarray(sums["hist_neg"])).reshape(3, self.auc_bins)
            own = np.asarray(sums["auc_own"]).reshape(3, 3)
            for k, s in enumerate(SPLITS):
                auc, bound = auc_from_histograms(pos[k], neg[k], own[k, 0], own[k, 1], own[k, 2])
                metrics[f"{s}_auc"], metrics[f"{s}_auc_bound"] = auc, bound
        return metrics, n

    def cindex_round(
        self, sums: Mapping[str, np.ndarray], n: Mapping[str, int]
    ) -> tuple[str, dict[str, Any] | None]:
        """The split of the C-index and the public arrays of its cells round (or None)."""
        k = 2 if n["test"] > 0 else (1 if n["val"] > 0 else 0)
        events = np.rint(np.asarray(sums["events"])).reshape(3, -1)[k]
        event_bins = np.flatnonzero(events > 0).astype(np.float64)
        if event_bins.size == 0:
            return SPLITS[k], None
        mom = np.asarray(sums["risk_moments"]).reshape(3, 2)[k]
        mean = float(mom[0] / n[SPLITS[k]])
        sd = float(np.sqrt(max(mom[1] / n[SPLITS[k]] - mean * mean, 0.0)))
        half = max(4.0 * sd, 1e-6 * max(1.0, abs(mean)))
        inner = np.linspace(mean - half, mean + half, self._score_bins + 1)[1:-1]
        bounds = np.concatenate(([-_BIG], inner, [_BIG]))
        return SPLITS[k], {"split": [float(k)], "event_bins": event_bins, "bounds": bounds}

    def cindex(self, sums: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Harrell's C and its bound from the cells round's sums."""
        events = np.rint(np.asarray(sums["events"]))
        censored = np.rint(np.asarray(sums["censored"]))
        own = np.asarray(sums["own_cells"])
        exact = np.asarray(sums["within_exact"])
        nb = self._score_bins
        conc, comp, amb = cell_pair_counts(events.reshape(-1, nb), censored.reshape(-1, nb))
        concordant = conc - own[0] + exact[0]
        comparable = comp - own[1] + exact[1]
        if comparable <= 0:
            return {"c_index": float("nan"), "c_index_bound": float("nan")}
        return {
            "c_index": float(concordant / comparable),
            "c_index_bound": float(min(1.0, 0.5 * max(amb - own[2], 0.0) / comparable)),
        }

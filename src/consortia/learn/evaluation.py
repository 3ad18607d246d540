"""Federated evaluation from sums: data splits, AUC from score histograms, C-index from cells.

Splits
------
Each site assigns each of its patients to ``train``, ``val`` or ``test`` by itself,
deterministically: either from a column of the data (values ``train``/``val``/``test``)
or from ``u = sha256(seed, patient id)`` read as a number in [0, 1): ``u < test``
gives ``test``, ``u < test + val`` gives ``val``, else ``train``.  The patient id is
the dataset's declared id column (or the algorithm's ``id_column``), else the row
position (stable while the file does not change).  A simulation and a deployment
assign the same patients to the same splits.

AUC from secure score histograms
--------------------------------
For a binary model each site releases, per split, the counts of its positive and
negative patients in ``bins`` equal-width bins of the predicted probability on
[0, 1] (declared count arrays), its own histogram pair counts and its *exact*
within-site pair counts (Mann-Whitney, ties 1/2).  The hub counts a cross-site
(positive, negative) pair in the same bin as 1/2 and every other pair exactly, so

    |AUC - AUC_exact| <= A / (2 P N),

where ``P``, ``N`` are the pooled positives and negatives and ``A`` the cross-site
pairs that share a bin (computed from the sums and reported with the estimate).

C-index
-------
For a Cox model the evaluation split's C-index is Harrell's, computed as in
:mod:`consortia.survival.concordance` (times on a public grid, one pass of score
bins, exact within-site pairs): ``|C - C_exact| <= M / (2 P)`` with ``M`` the
cross-site comparable pairs that share a score bin and ``P`` the comparable pairs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from consortia.errors import SchemaError

__all__ = ["SPLITS", "auc_from_histograms", "histogram_pairs", "split_codes", "within_auc_pairs"]

SPLITS = ("train", "val", "test")
"""The split names, in the order of every per-split array."""


def split_codes(
    ids: Sequence[object] | np.ndarray,
    *,
    seed: int,
    val_fraction: float,
    test_fraction: float,
) -> np.ndarray:
    """Split code per row (0 train, 1 val, 2 test) from hashed (seed, patient id)."""
    out = np.zeros(len(ids), dtype=np.int64)
    if val_fraction <= 0 and test_fraction <= 0:
        return out
    prefix = f"consortia.learn.split:{int(seed)}:".encode()
    u = np.fromiter(
        (
            int.from_bytes(hashlib.sha256(prefix + str(i).encode()).digest()[:8], "big") / 2.0**64
            for i in ids
        ),
        dtype=np.float64,
        count=len(ids),
    )
    out[u < test_fraction + val_fraction] = 1
    out[u < test_fraction] = 2
    return out


def column_codes(values: np.ndarray, column: str) -> np.ndarray:
    """Split codes from a column holding ``train``, ``val`` or ``test``."""
    codes = np.full(len(values), -1, dtype=np.int64)
    for k, name in enumerate(SPLITS):
        codes[values == name] = k
    if np.any(codes < 0):
        raise SchemaError(f"split column {column!r} must hold only 'train', 'val' or 'test'")
    return codes


def histogram_pairs(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """(concordant pairs with same-bin pairs counted 1/2, pairs sharing a bin) of histograms."""
    p = np.asarray(pos, dtype=np.float64)
    n = np.asarray(neg, dtype=np.float64)
    below = np.cumsum(n) - n
    return float(np.sum(p * (below + 0.5 * n))), float(np.sum(p * n))


def within_auc_pairs(score: np.ndarray, label: np.ndarray) -> float:
    """Exact Mann-Whitney count: (positive, negative) pairs ordered right, ties 1/2."""
    pos = np.sort(score[label == 1])
    neg = np.sort(score[label == 0])
    if pos.size == 0 or neg.size == 0:
        return 0.0
    lower = np.searchsorted(neg, pos, side="left")
    upper = np.searchsorted(neg, pos, side="right")
    return float(np.sum(lower) + 0.5 * np.sum(upper - lower))


def auc_from_histograms(
    pos: np.ndarray,
    neg: np.ndarray,
    own_concordant: float,
    own_ambiguous: float,
    exact_within: float,
) -> tuple[float, float]:
    """The pooled AUC and its bound from summed histograms and summed site corrections."""
    p_tot, n_tot = float(np.sum(pos)), float(np.sum(neg))
    if p_tot <= 0 or n_tot <= 0:
        return float("nan"), float("nan")
    conc, amb = histogram_pairs(pos, neg)
    auc = (conc - own_concordant + exact_within) / (p_tot * n_tot)
    bound = 0.5 * max(amb - own_ambiguous, 0.0) / (p_tot * n_tot)
    return float(auc), float(min(bound, 1.0))

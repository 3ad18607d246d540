"""Small dense linear algebra of the subgroup algorithms (hub side, public arrays only)."""

from __future__ import annotations

import numpy as np

__all__ = ["flip_signs", "orthonormal", "principal_angles"]


def orthonormal(a: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of ``a`` (thin QR, signs made deterministic)."""
    q, r = np.linalg.qr(np.asarray(a, dtype=np.float64))
    d = np.sign(np.diag(r))
    d[d == 0] = 1.0
    return q * d


def principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spaces of ``a`` and ``b``.

    Computed from sines (``svd((I - Qa Qa^T) Qb)``), which stays accurate for the
    tiny angles that convergence checks need (``arccos`` of cosines loses them below
    about 1e-8).

    Parameters
    ----------
    a, b
        ``p x k`` matrices of full column rank (any basis; orthonormalised here).
    """
    qa = orthonormal(a)
    qb = orthonormal(b)
    resid = qb - qa @ (qa.T @ qb)
    sines = np.linalg.svd(resid, compute_uv=False)
    return np.sort(np.arcsin(np.clip(sines, 0.0, 1.0)))


def flip_signs(components: np.ndarray) -> np.ndarray:
    """Signs of component rows as scikit-learn's ``svd_flip(u_based_decision=False)``.

    Each row is multiplied by the sign of its entry of largest absolute value, so
    that entry is positive: the convention of :class:`sklearn.decomposition.PCA`.
    """
    comp = np.array(components, dtype=np.float64, copy=True)
    if comp.size == 0:
        return comp
    idx = np.argmax(np.abs(comp), axis=1)
    signs = np.sign(comp[np.arange(comp.shape[0]), idx])
    signs[signs == 0] = 1.0
    return comp * signs[:, None]

"""Numerical kernels of the federated Cox model (pure numpy, no protocol).

Everything here works in *standardised* covariates ``z = (x - mean) / sd``
(the pooled, public mean and SD, as lifelines does) and with *offset-scaled*
relative risks ``phi = w * exp(z'b - offset)`` where ``offset`` is a public
scalar that keeps the released sums near 1 whatever the coefficients.

Per event time ``k`` (sorted ascending, grouped by stratum) the partial
likelihood needs only sums:

* over the risk set ``R_k`` (patients whose time is at or after ``t_k``):
  ``S0 = sum phi``, ``S1 = sum phi z``, ``S2 = sum phi z z'``;
* over the patients with an event at ``t_k``: ``T0, T1, T2`` (same sums; only
  Efron's correction uses them, and only where two or more events tie);
* the number of events ``d_k`` and their total weight ``dw_k``;
* the total ``xe = sum_{events} w z`` (one vector for the whole study).

:func:`risk_sums` computes them from one site's rows, :func:`partial_likelihood`
turns (pooled) sums into the log-likelihood, gradient and Hessian exactly as
lifelines' ``CoxPHFitter`` (Efron, weights) and statsmodels' ``PHReg``
(Breslow) do.  Breslow is Efron with every tie fraction set to zero.

Sums travel split in two (:func:`split` / :func:`join`): a value rounded to the
fixed-point grid ``2**-24`` and its rounding residual magnified by ``2**24``.
The pair carries 48 fractional bits through 64-bit secure aggregation, so the
model is exact to about 1e-14 absolute instead of 6e-8.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = [
    "pack",
    "partial_likelihood",
    "partial_likelihood_batch",
    "risk_sums",
    "score_meat",
    "unpack",
]


def pack(m: np.ndarray) -> np.ndarray:
    """Upper triangle (diagonal included) of symmetric matrices ``(..., p, p)`` -> ``(..., q)``."""
    p = m.shape[-1]
    iu, ju = np.triu_indices(p)
    return m[..., iu, ju]


def unpack(v: np.ndarray, p: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``(..., q)`` -> symmetric ``(..., p, p)``."""
    iu, ju = np.triu_indices(p)
    out = np.zeros((*v.shape[:-1], p, p))
    out[..., iu, ju] = v
    out[..., ju, iu] = v
    return out


def _moments(z: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Rows ``phi * [1, z, pack(z z')]``, moment axis second: ``(n, q[, B])``.

    ``z`` is ``(n, p)`` or ``(n, B, p)`` (a batch of models), ``phi`` ``(n,)`` or
    ``(n, B)``; ``q = 1 + p + p(p+1)/2``.  With the moment axis before the batch
    axis every moment is written contiguously.
    """
    p = z.shape[-1]
    out = np.empty((z.shape[0], 1 + p + p * (p + 1) // 2, *z.shape[1:-1]))
    out[:, 0] = phi
    for i in range(p):
        np.multiply(phi, z[..., i], out=out[:, 1 + i])
    k = 1 + p
    for i in range(p):  # pack(z z'): (i, j) for j >= i, row by row
        for j in range(i, p):
            np.multiply(out[:, 1 + i], z[..., j], out=out[:, k])
            k += 1
    return out


def last_at_risk(
    times: np.ndarray,
    codes: np.ndarray,
    event_times: np.ndarray,
    event_codes: np.ndarray,
) -> np.ndarray:
    """For each row, the index (in the event-time list) of the last event time it is at risk at.

    A row of stratum ``c`` with time ``t`` is at risk at the event times
    ``t_k <= t`` of its stratum; ``-1`` when it is at risk at none.  The
    event-time list is sorted by stratum code, then time.
    """
    out = np.full(len(times), -1, dtype=np.int64)
    for c in np.unique(codes):
        seg = np.flatnonzero(event_codes == c)
        rows = codes == c
        if seg.size == 0:
            continue
        pos = np.searchsorted(event_times[seg], times[rows], side="right") - 1
        out[rows] = np.where(pos >= 0, seg[np.maximum(pos, 0)], -1)
    return out


def _reverse_cumsum_by_segment(a: np.ndarray, seg_codes: np.ndarray) -> np.ndarray:
    """Reverse cumulative sum along axis 0, restarting at every change of ``seg_codes``."""
    if len(seg_codes) == 0 or bool(np.all(seg_codes == seg_codes[0])):  # one segment
        return np.cumsum(a[::-1], axis=0)[::-1]
    out = np.empty_like(a)
    for c in np.unique(seg_codes):
        idx = np.flatnonzero(seg_codes == c)
        out[idx] = np.cumsum(a[idx][::-1], axis=0)[::-1]
    return out


def risk_sums(
    bins: np.ndarray,
    event: np.ndarray,
    z: np.ndarray,
    phi: np.ndarray,
    event_codes: np.ndarray,
    tie_rows: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Risk-set and tie sums per event time from one site's rows.

    Parameters
    ----------
    bins
        Per row, the last event-time index it is at risk at (:func:`last_at_risk`).
    event
        Per row, 1 for an event (at the event time ``bins``), 0 for censoring.
    z
        Standardised covariates ``(n, p)``, or ``(n, B, p)`` for a batch of ``B``
        models fitted side by side (one per gene in a screen).
    phi
        ``w * exp(z'b - offset)`` per row: ``(n,)``, or ``(n, B)`` for a batch.
    event_codes
        Stratum code of each event time (risk sets restart per stratum).
    tie_rows
        Event-time indices whose tie sums are needed (Efron, two or more
        events); ``None`` for Breslow.

    Returns
    -------
    risk : numpy.ndarray
        ``(K, [B,] 1 + p + p(p+1)/2)``: ``[S0, S1, pack(S2)]`` per event time.
    ties : numpy.ndarray or None
        The same sums over the events at each time of ``tie_rows``.
    """
    n_times = len(event_codes)
    keep = bins >= 0
    m = _moments(z[keep], phi[keep])  # (rows, q[, B])
    rest = m.shape[1:]
    m = m.reshape(m.shape[0], int(np.prod(rest)))
    rows = bins[keep]
    ind = sparse.csr_matrix(
        (np.ones(rows.size), (rows, np.arange(rows.size))), shape=(n_times, rows.size)
    )
    exits = np.asarray(ind @ m)
    risk = _reverse_cumsum_by_segment(exits, event_codes).reshape(n_times, *rest)
    risk = np.moveaxis(risk, 1, -1)  # (K[, B], q)
    ties = None
    if tie_rows is not None:
        ev = event[keep] == 1
        ind_e = sparse.csr_matrix(
            (np.ones(int(ev.sum())), (rows[ev], np.arange(int(ev.sum())))),
            shape=(n_times, int(ev.sum())),
        )
        ties = np.asarray(ind_e @ m[ev])[np.asarray(tie_rows, dtype=np.int64)]
        ties = np.moveaxis(ties.reshape(len(ties), *rest), 1, -1)
    return risk, ties


def partial_likelihood(
    risk: np.ndarray,
    ties: np.ndarray | None,
    tie_rows: np.ndarray | None,
    d: np.ndarray,
    dw: np.ndarray,
    xe: np.ndarray,
    beta: np.ndarray,
    offset: float,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Log partial likelihood, gradient and Hessian from per-event-time sums.

    Efron's method when ``ties`` is given (lifelines' weighted form: the
    events' mean weight ``dw/d`` multiplies each of the ``d`` tie fractions),
    Breslow's otherwise.  One model; :func:`partial_likelihood_batch` evaluates
    a batch of models at once.

    Parameters
    ----------
    risk, ties, tie_rows
        From :func:`risk_sums` (pooled over sites).
    d, dw
        Number and total weight of the events at each event time.
    xe
        ``sum_{events} w z``.
    beta
        Coefficients (standardised scale).
    offset
        The public offset used for ``phi``.
    """
    ll, grad, hess = partial_likelihood_batch(
        risk[:, None],
        None if ties is None else ties[:, None],
        tie_rows,
        d,
        dw,
        np.asarray(xe, dtype=np.float64)[None],
        np.asarray(beta, dtype=np.float64)[None],
        np.array([offset], dtype=np.float64),
    )
    return float(ll[0]), grad[0], hess[0]


def partial_likelihood_batch(
    risk: np.ndarray,
    ties: np.ndarray | None,
    tie_rows: np.ndarray | None,
    d: np.ndarray,
    dw: np.ndarray,
    xe: np.ndarray,
    beta: np.ndarray,
    offset: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`partial_likelihood` for ``B`` models sharing their event times, vectorised.

    Parameters
    ----------
    risk, ties
        ``(K, B, q)`` and ``(len(tie_rows), B, q)`` (or ``None``): the sums of
        :func:`risk_sums` for a batch.
    tie_rows, d, dw
        As for :func:`partial_likelihood` (common to the batch).
    xe, beta
        ``(B, p)``.
    offset
        ``(B,)``: each model's public offset.

    Returns
    -------
    loglik : numpy.ndarray
        ``(B,)``.
    grad : numpy.ndarray
        ``(B, p)``.
    hess : numpy.ndarray
        ``(B, p, p)``.
    """
    p = beta.shape[-1]
    s0, s1, s2 = risk[..., 0], risk[..., 1 : 1 + p], unpack(risk[..., 1 + p :], p)
    ll = np.einsum("bi,bi->b", xe, beta) - offset * float(dw.sum())
    grad = np.array(xe, dtype=np.float64)
    # j = 0 term (the only one for Breslow, where it carries the full weight dw)
    c0 = dw / d if ties is not None else dw
    a = s1 / s0[..., None]
    ll -= np.einsum("k,kb->b", c0, np.log(s0))
    grad -= np.einsum("k,kbi->bi", c0, a)
    hess = np.einsum("k,kbi,kbj->bij", c0, a, a) - np.einsum("kb,kbij->bij", c0[:, None] / s0, s2)
    # Efron's j >= 1 terms, at the times where two or more events tie
    if ties is not None and tie_rows is not None and len(tie_rows) > 0:
        rows = np.asarray(tie_rows, dtype=np.int64)
        t0, t1, t2 = ties[..., 0], ties[..., 1 : 1 + p], unpack(ties[..., 1 + p :], p)
        dk, ck = d[rows], c0[rows]
        r0, r1, r2 = s0[rows], s1[rows], s2[rows]
        for j in range(1, int(dk.max())):
            sel = dk > j
            f = (j / dk[sel])[:, None]
            den = r0[sel] - f * t0[sel]
            num1 = r1[sel] - f[..., None] * t1[sel]
            num2 = r2[sel] - f[..., None, None] * t2[sel]
            aj = num1 / den[..., None]
            c = ck[sel]
            ll -= np.einsum("k,kb->b", c, np.log(den))
            grad -= np.einsum("k,kbi->bi", c, aj)
            hess += np.einsum("k,kbi,kbj->bij", c, aj, aj) - np.einsum(
                "kb,kbij->bij", c[:, None] / den, num2
            )
    return ll, grad, hess


def score_meat(
    bins: np.ndarray,
    event: np.ndarray,
    w: np.ndarray,
    z: np.ndarray,
    phi_unweighted: np.ndarray,
    xbar: np.ndarray,
    dlam: np.ndarray,
    event_codes: np.ndarray,
) -> np.ndarray:
    """Sum over rows of the outer products of the (Breslow-form) score residuals.

    ``U_i = w_i [e_i (z_i - xbar(t_i)) - phi_i sum_{k: t_k <= t_i} dlam_k (z_i - xbar_k)]``
    with ``phi_i = exp(z_i'b - offset)`` and ``dlam_k = dw_k / S0_k`` (the same
    offset), the form used by lifelines (no ties) and statsmodels.

    Returns the packed ``sum_i U_i U_i'``.
    """
    p = z.shape[1]
    c0 = _cumsum_by_segment(dlam, event_codes)
    c1 = _cumsum_by_segment(dlam[:, None] * xbar, event_codes)
    keep = bins >= 0
    u = np.zeros_like(z)
    b = bins[keep]
    zk = z[keep]
    u[keep] = -phi_unweighted[keep, None] * (zk * c0[b, None] - c1[b])
    ev = keep & (event == 1)
    u[ev] += z[ev] - xbar[bins[ev]]
    u *= w[:, None]
    return pack(u.T @ u) if p else np.zeros(0)


def _cumsum_by_segment(a: np.ndarray, seg_codes: np.ndarray) -> np.ndarray:
    out = np.empty_like(a)
    for c in np.unique(seg_codes):
        idx = np.flatnonzero(seg_codes == c)
        out[idx] = np.cumsum(a[idx], axis=0)
    return out

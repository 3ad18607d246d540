"""Many independent L-BFGS-B minimisations driven by reverse communication.

PyDESeq2 fits each gene's dispersion with ``scipy.optimize.minimize(...,
method="L-BFGS-B")`` on ``log(alpha)``.  L-BFGS-B stops at a tolerance, so its
answer is not the exact optimum; to give the *same* answer, the federation runs
the same optimiser.  SciPy's L-BFGS-B core (``_lbfgsb.setulb``) is written in
reverse-communication style: it returns whenever it needs the value and gradient
at a point.  :class:`BatchLBFGSB` keeps one such state per problem (gene), asks
for the points at which every running problem needs an evaluation (one federated
round evaluates them all, vectorised), and feeds the results back.  Each problem
follows exactly the path ``scipy.optimize.minimize`` would take on the same
function values, with SciPy's defaults (``maxcor=10``, ``ftol=2.22e-9``,
``gtol=1e-5``, ``maxls=20``, ``maxiter=maxfun=15000``).

The driver needs SciPy >= 1.15 (the C implementation with ``ln_task``); it
raises :class:`~consortia.errors.AlgorithmError` naming the requirement
otherwise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from consortia.errors import AlgorithmError

__all__ = ["BatchLBFGSB"]

_MAXCOR = 10
_FTOL = 2.220446049250313e-09  # scipy.optimize.minimize's default for L-BFGS-B
_GTOL = 1e-5
_MAXLS = 20
_MAXITER = 15000
_MAXFUN = 15000

_TASK_FG, _TASK_NEW_X, _TASK_CONV = 3, 1, 4
_FACTR = _FTOL / float(np.finfo(float).eps)


def _setulb() -> Any:
    try:
        from scipy.optimize import _lbfgsb

        fn = _lbfgsb.setulb
    except (ImportError, AttributeError):  # pragma: no cover - depends on scipy
        fn = None
    if fn is None or "ln_task" not in (fn.__doc__ or ""):  # pragma: no cover
        raise AlgorithmError(
            "the federated DESeq2 dispersion fit needs SciPy >= 1.15 (L-BFGS-B with "
            "reverse communication); upgrade scipy"
        )
    return fn


class BatchLBFGSB:
    """Independent bound-constrained L-BFGS-B problems advanced in lock step.

    Parameters
    ----------
    x0
        Starting points, shape ``(n_problems, dim)``.
    lower, upper
        Bounds, broadcastable to ``x0``'s shape (``-inf``/``inf``: none).
    """

    def __init__(
        self, x0: np.ndarray, lower: np.ndarray | float, upper: np.ndarray | float
    ) -> None:
        self._setulb = _setulb()
        x0 = np.atleast_2d(np.asarray(x0, dtype=np.float64))
        n_prob, dim = x0.shape
        lo = np.broadcast_to(np.asarray(lower, dtype=np.float64), x0.shape)
        hi = np.broadcast_to(np.asarray(upper, dtype=np.float64), x0.shape)
        self.dim = dim
        self.x = np.ascontiguousarray(np.clip(x0, lo, hi))
        self._lo = np.where(np.isfinite(lo), lo, 0.0)
        self._hi = np.where(np.isfinite(hi), hi, 0.0)
        self._nbd = (
            np.isfinite(lo).astype(np.int32) * 1
            + np.isfinite(hi).astype(np.int32) * 3
            - (np.isfinite(lo) & np.isfinite(hi)).astype(np.int32) * 2
        ).astype(np.int32)  # 0 none, 1 lower, 2 both, 3 upper (scipy's bounds_map)
        m, n = _MAXCOR, dim
        self._wa = np.zeros((n_prob, 2 * m * n + 5 * n + 11 * m * m + 8 * m))
        self._iwa = np.zeros((n_prob, 3 * n), dtype=np.int32)
        self._task = np.zeros((n_prob, 2), dtype=np.int32)
        self._ln_task = np.zeros((n_prob, 2), dtype=np.int32)
        self._lsave = np.zeros((n_prob, 4), dtype=np.int32)
        self._isave = np.zeros((n_prob, 44), dtype=np.int32)
        self._dsave = np.zeros((n_prob, 29))
        self.f = np.zeros(n_prob)
        self.g = np.zeros((n_prob, dim))
        self._f_eval = np.zeros(n_prob)
        self._g_eval = np.zeros((n_prob, dim))
        self._x_eval = self.x.copy()
        self.nfev = np.zeros(n_prob, dtype=np.int64)
        self.nit = np.zeros(n_prob, dtype=np.int64)
        self.done = np.zeros(n_prob, dtype=bool)
        self.success = np.zeros(n_prob, dtype=bool)
        # scipy evaluates f and g at x0 first (ScalarFunction), then starts setulb
        self._pending = np.arange(n_prob)

    @property
    def pending(self) -> np.ndarray:
        """Indices of the problems waiting for an evaluation, in increasing order."""
        return self._pending

    def points(self) -> np.ndarray:
        """The points ``(len(pending), dim)`` at which the pending problems need f and g."""
        return self.x[self._pending]

    def tell(self, f: np.ndarray, g: np.ndarray) -> None:
        """Give f and g at :meth:`points`; advance every pending problem to its next request."""
        idx = self._pending
        self._f_eval[idx] = np.asarray(f, dtype=np.float64).reshape(len(idx))
        self._g_eval[idx] = np.asarray(g, dtype=np.float64).reshape(len(idx), self.dim)
        self._x_eval[idx] = self.x[idx]
        self.nfev[idx] += 1
        nxt = [i for i in idx.tolist() if self._step(i)]
        self._pending = np.asarray(nxt, dtype=np.intp)

    def _step(self, i: int) -> bool:
        """Run problem ``i`` until it asks for an evaluation (True) or stops (False)."""
        task = self._task[i]
        x = self.x[i]
        # the answer to the request that made problem i pending (scipy: f, g = fun_and_grad(x))
        self.f[i] = self._f_eval[i]
        self.g[i] = self._g_eval[i]
        while True:
            self._setulb(
                _MAXCOR,
                x,
                self._lo[i],
                self._hi[i],
                self._nbd[i],
                self.f[i],
                self.g[i],
                _FACTR,
                _GTOL,
                self._wa[i],
                self._iwa[i],
                task,
                self._lsave[i],
                self._isave[i],
                self._dsave[i],
                _MAXLS,
                self._ln_task[i],
            )
            if task[0] == _TASK_FG:
                if not np.array_equal(x, self._x_eval[i]):
                    return True
                # scipy's ScalarFunction answers the point it evaluated last from its cache
                self.f[i] = self._f_eval[i]
                self.g[i] = self._g_eval[i]
                continue
            if task[0] == _TASK_NEW_X:
                self.nit[i] += 1
                if self.nit[i] >= _MAXITER:
                    task[0], task[1] = 5, 504
                elif self.nfev[i] > _MAXFUN:
                    task[0], task[1] = 5, 502
                continue
            self.done[i] = True
            self.success[i] = task[0] == _TASK_CONV
            return False

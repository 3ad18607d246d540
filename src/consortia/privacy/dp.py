"""Differential privacy: distributed discrete Gaussian noise and its accounting.

Mechanism
---------
An algorithm declares, in its :class:`~consortia.protocol.Contribution`, the
standard deviation ``sigma`` of the Gaussian noise that the **sum** of an integer
array must carry (``Contribution.noise``).  The runtime (never the algorithm) makes
every site of the attempt add its *share*: an independent discrete Gaussian with
variance ``sigma**2 / n`` where ``n`` is the number of participants of that attempt,
drawn from the operating system's entropy, added before fixed-point encoding and
masking.  The secure sum therefore carries noise of variance ``sigma**2`` and no
party, the hub included, ever sees a site's un-noised array.

* **Dropout**: a site that drops out makes the hub open a new attempt among the
  survivors; each survivor draws a fresh share scaled for the new, smaller ``n``,
  and the failed attempt is never unmasked.  The released sum always carries the
  full variance ``sigma**2``.
* **Collusion**: a party that knows some sites' shares (a site colluding with the
  hub) can subtract them; with ``c`` colluding sites out of ``n`` the noise left is
  ``sigma**2 * (n - c) / n``.  :func:`sigma_for` accepts ``colluders`` to pay for
  that in advance.
* **Accounting**: the sum of ``n`` independent discrete Gaussians of variance
  ``sigma**2 / n`` is within a negligible distance of a discrete Gaussian of
  variance ``sigma**2`` as soon as each share's variance is at least 1 (Kairouz,
  Liu & Steinke 2021, "The distributed discrete Gaussian mechanism"), and a
  discrete Gaussian is at least as private as the continuous one of the same
  scale (Canonne, Kamath & Steinke 2020).  The privacy of one release of L2
  sensitivity ``s`` is that of the Gaussian mechanism with noise multiplier
  ``sigma / s``, computed exactly by Google's ``dp_accounting`` (analytic
  Gaussian mechanism, Balle & Wang 2018).  The releases of one study compose as
  Gaussians (their noise multipliers combine as ``1/m**2 = sum 1/m_i**2``);
  studies compose in the node's ledger by basic composition (epsilons and
  deltas add), which is conservative.

The sampler is the rejection sampler of Canonne, Kamath & Steinke (discrete
Laplace proposals), vectorised in floating point with a Philox generator keyed
from ``os.urandom``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import numpy as np

from consortia.errors import ValidationError
from consortia.noise import MIN_SHARE_VARIANCE, check_positive, epsilon_for, sigma_for

__all__ = [
    "discrete_gaussian",
    "epsilon_for",
    "noise_share",
    "sigma_for",
]


def _rng() -> np.random.Generator:
    return np.random.Generator(np.random.Philox(key=int.from_bytes(os.urandom(16), "little")))


def discrete_gaussian(
    sigma: float, size: int | tuple[int, ...], *, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Draw integers from the discrete Gaussian of scale ``sigma`` (mean 0).

    ``P(x) ∝ exp(-x**2 / (2 sigma**2))`` over the integers.

    Parameters
    ----------
    sigma
        Scale (> 0); the variance is ``sigma**2`` up to a term below ``1e-10`` for
        ``sigma >= 1``.
    size
        Output shape.
    rng
        A generator (tests); by default one keyed from the OS entropy.
    """
    sigma = check_positive(sigma, "sigma")
    rng = rng if rng is not None else _rng()
    shape = (size,) if isinstance(size, int) else tuple(size)
    n = int(np.prod(shape)) if shape else 1
    out = np.empty(n, dtype=np.int64)
    t = math.floor(sigma) + 1
    s2 = sigma * sigma
    p = 1.0 - math.exp(-1.0 / t)  # discrete Laplace(t) as a difference of geometrics
    filled = 0
    while filled < n:
        m = max(16, int((n - filled) * 1.6))
        y = rng.geometric(p, m) - rng.geometric(p, m)
        accept = rng.random(m) < np.exp(-((np.abs(y) - s2 / t) ** 2) / (2.0 * s2))
        y = y[accept][: n - filled]
        out[filled : filled + y.size] = y
        filled += y.size
    return out.reshape(shape)


def noise_share(
    sigma: float, n_participants: int, shape: tuple[int, ...], *, rng=None
) -> np.ndarray:
    """One site's share of the noise of a sum over ``n_participants`` sites.

    The share is a discrete Gaussian of variance ``sigma**2 / n_participants``
    (never below :data:`MIN_SHARE_VARIANCE`).
    """
    if isinstance(n_participants, bool) or not isinstance(n_participants, int):
        raise ValidationError("n_participants must be an integer")
    if n_participants < 1:
        raise ValidationError("n_participants must be at least 1")
    share = max(check_positive(sigma, "sigma") ** 2 / n_participants, MIN_SHARE_VARIANCE)
    return discrete_gaussian(math.sqrt(share), shape, rng=rng)


def add_noise(
    arrays: Mapping[str, np.ndarray],
    noise: Mapping[str, float],
    n_participants: int,
    *,
    rng: np.random.Generator | None = None,
) -> dict[str, np.ndarray]:
    """Return ``arrays`` with this site's noise share added to each array named in ``noise``."""
    rng = rng if rng is not None else _rng()
    out = dict(arrays)
    for name, sigma in noise.items():
        if sigma <= 0:
            continue
        arr = np.asarray(arrays[name], dtype=np.float64)
        out[name] = arr + noise_share(sigma, n_participants, arr.shape, rng=rng)
    return out

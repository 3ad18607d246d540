"""Calibration of Gaussian noise for differential privacy (pure: no I/O, no randomness).

Algorithms use it to declare the noise their releases must carry
(``Contribution.noise``) and their privacy cost; the privacy layer
(:mod:`consortia.privacy.dp`) draws and adds the noise.  Kept apart so that
algorithms never import the privacy layer (the one-way dependency rule of
DESIGN.md).  The accounting is Google's ``dp_accounting`` (analytic Gaussian
mechanism); see :mod:`consortia.privacy.dp` for the mechanism and its premises.
"""

from __future__ import annotations

import math

from consortia.errors import ValidationError

__all__ = ["MIN_SHARE_VARIANCE", "check_positive", "epsilon_for", "sigma_for"]

MIN_SHARE_VARIANCE = 1.0
"""Each site's share of the noise has variance at least this (the accounting's premise)."""


def check_positive(value: float, name: str) -> float:
    """``value`` as a float, or a ValidationError naming ``name`` (finite, > 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{name} must be a finite number")
    if value <= 0:
        raise ValidationError(f"{name} must be positive")
    return float(value)


def sigma_for(
    epsilon: float,
    delta: float,
    *,
    sensitivity: float = 1.0,
    releases: int = 1,
    colluders: int = 0,
    n_sites: int = 1,
) -> float:
    """The noise scale that makes ``releases`` Gaussian releases ``(epsilon, delta)``-DP.

    Parameters
    ----------
    epsilon, delta
        The privacy target of all the releases together (delta in (0, 1)).
    sensitivity
        L2 sensitivity of each release (how much one patient can move the array).
    releases
        How many releases of that sensitivity the study makes with this scale.
    colluders, n_sites
        To stay private when ``colluders`` of ``n_sites`` sites remove their own
        shares, the scale is inflated by ``sqrt(n_sites / (n_sites - colluders))``.
    """
    from dp_accounting import get_sigma_gaussian

    epsilon = check_positive(epsilon, "epsilon")
    delta = check_positive(delta, "delta")
    if delta >= 1:
        raise ValidationError("delta must be below 1")
    sensitivity = check_positive(sensitivity, "sensitivity")
    if isinstance(releases, bool) or not isinstance(releases, int) or releases < 1:
        raise ValidationError("releases must be a positive integer")
    if not 0 <= colluders < max(n_sites, 1):
        raise ValidationError("colluders must be in [0, n_sites)")
    multiplier = float(get_sigma_gaussian(epsilon, delta)) * math.sqrt(releases)
    inflate = math.sqrt(n_sites / (n_sites - colluders)) if colluders else 1.0
    return multiplier * sensitivity * inflate


def epsilon_for(
    sigma: float, delta: float, *, sensitivity: float = 1.0, releases: int = 1
) -> float:
    """The epsilon spent by ``releases`` Gaussian releases of scale ``sigma`` at ``delta``."""
    from dp_accounting import get_epsilon_gaussian

    sigma = check_positive(sigma, "sigma")
    delta = check_positive(delta, "delta")
    sensitivity = check_positive(sensitivity, "sensitivity")
    multiplier = sigma / sensitivity / math.sqrt(releases)
    return float(get_epsilon_gaussian(multiplier, delta))

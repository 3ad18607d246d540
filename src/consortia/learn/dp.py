"""Record-level differential privacy for ``learn.train``: distributed DP-SGD and its accounting.

What is protected
-----------------
The guarantee is **record-level** (example-level) ``(epsilon, delta)``-DP with respect
to adding or removing one record (one patient row) of a site's *training split*:
every release computed from the training split during training is a noisy sum in
which one record moves the noise-free part by at most ``clip_norm``.  It is not
site-level DP (which would bound a whole site's update and needs far more noise).

Mechanism (distributed DP-SGD, one noisy step per round)
--------------------------------------------------------
Each round, every site:

1. draws a Poisson sample of its training rows (each row independently with
   probability ``sample_rate``) from a generator keyed from the operating system's
   entropy, never from the study's seed, so no party learns which rows were used;
2. computes the per-sample gradient of each sampled row (``torch.func``: ``vmap`` of
   ``grad``) at the broadcast weights and clips each to L2 norm ``clip_norm``;
3. sums the clipped gradients and expresses the sum in integer units of
   ``clip_norm / UNITS`` (:func:`quantise`);
4. declares the sum noisy (``Contribution.noise``): the runtime adds this site's
   share of discrete Gaussian noise, of variance ``sigma**2 / n_sites``, drawn from
   ``os.urandom`` (:mod:`consortia.privacy.dp`), before fixed-point encoding and
   masking.

The secure sum is then the pooled sum of clipped per-sample gradients of a Poisson
sample of *all* sites' training rows, plus Gaussian noise of standard deviation
``sigma = noise_multiplier * sensitivity``: one step of central DP-SGD (Abadi et
al. 2016) on the pooled data, although no site ever released an un-noised value and
each added only ``1/n_sites`` of the variance.  The hub divides by the expected
batch size ``sample_rate * N_train`` and hands ``-lr`` times it to the strategy.

Sensitivity.  Adding or removing one record changes the float sum by a vector of
norm at most ``clip_norm``; in units that is ``UNITS``, and rounding each
coordinate to an integer changes the difference by less than one per coordinate,
so the integer sum's L2 sensitivity is at most ``UNITS + sqrt(d)`` for ``d``
parameters.  The declared noise is ``noise_multiplier * (UNITS + sqrt(d))``, so the
accounting's noise multiplier holds exactly, rounding included.

Accounting.  ``rounds`` Poisson-subsampled Gaussian mechanisms of multiplier
``noise_multiplier`` and rate ``sample_rate``, composed by Google's
``dp_accounting`` RDP accountant at the integer orders :data:`ORDERS`
(:func:`epsilon_spent`); a target epsilon is met by
``dp_accounting.calibrate_dp_mechanism`` (:func:`calibrate`).  The study's
``(epsilon, delta)`` is declared before any compute (``privacy_cost()``) and charged
to the researcher's budget on the dataset by the node's ledger, for all ``rounds``
even when early stopping ends the study sooner.

Premises and limits (stated in ``docs/learn.md``)
-------------------------------------------------
* One local step per round (``local_steps == 1``): after a first local step the
  sampled rows' influence on later steps is not bounded by clipping, so several
  local steps would need noise at every step.  Scaffold (whose control variates are
  un-noised gradients) and ``cox`` (whose loss is not a sum over records) are refused.
* The training split's size (pooled over sites) is released exactly, as without DP,
  and the hub divides by it: the guarantee protects each record's values and its
  presence in every step, not the count of training rows (Opacus and TF Privacy
  treat the dataset size as public in the same way).
* The training split's loss and accuracy are not released in DP mode; the
  validation and test splits' metrics are exact statistics on other records, judged
  by the node's exact-statistics rules, and are not covered by epsilon.
* Collusion: the hub together with ``c`` of ``n`` sites can remove their shares and
  see a sum with ``(n - c) / n`` of the variance (see :mod:`consortia.privacy.dp`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from consortia.errors import TrainingError, ValidationError

__all__ = [
    "ORDERS",
    "UNITS",
    "calibrate",
    "check_dp",
    "epsilon_spent",
    "noise_std",
    "quantise_scale",
]

UNITS = 2**14
"""Integer units per ``clip_norm`` in which a site's sum of clipped gradients is released."""

NO_PRIVACY: Mapping[str, Any] = {
    "epsilon_spent": 0.0,
    "delta_spent": 0.0,
    "mechanism": "none: every site's update was released only inside a secure sum",
}
"""The privacy block of a study without ``dp``."""

_KEYS = ("noise_multiplier", "epsilon", "delta", "sample_rate")

ORDERS = (*range(2, 65), 80, 96, 128, 192, 256, 512, 1024)
"""The Renyi orders of the accountant: integers, whose subsampled-Gaussian RDP has a
closed form (fractional orders need a series that converges slowly at small sigma)."""


def _event(noise_multiplier: float, sample_rate: float, steps: int) -> Any:
    import dp_accounting

    gaussian = dp_accounting.GaussianDpEvent(noise_multiplier)
    one: Any = gaussian
    if sample_rate < 1.0:
        one = dp_accounting.PoissonSampledDpEvent(sample_rate, gaussian)
    return dp_accounting.SelfComposedDpEvent(one, steps)


def epsilon_spent(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """The epsilon of ``steps`` Poisson-subsampled Gaussian steps at ``delta`` (RDP accountant).

    Parameters
    ----------
    noise_multiplier
        Noise standard deviation over the L2 sensitivity of one step.
    sample_rate
        Probability that a record is in a step's batch (1: every record, every step).
    steps
        Noisy steps (``rounds * local_steps``; ``local_steps`` is 1 in DP mode).
    delta
        The target delta.
    """
    from dp_accounting import rdp

    acc = rdp.RdpAccountant(list(ORDERS))
    acc.compose(_event(noise_multiplier, sample_rate, steps))
    return float(acc.get_epsilon(delta))


def calibrate(*, epsilon: float, sample_rate: float, steps: int, delta: float) -> float:
    """The smallest noise multiplier whose :func:`epsilon_spent` is at most ``epsilon``."""
    import dp_accounting
    from dp_accounting import rdp

    mult = dp_accounting.calibrate_dp_mechanism(
        lambda: rdp.RdpAccountant(list(ORDERS)),
        lambda z: _event(z, sample_rate, steps),
        epsilon,
        delta,
        dp_accounting.LowerEndpointAndGuess(1e-3, 1.0),
        tol=1e-6,
    )
    return float(mult)


def _num(dp: Mapping[str, Any], key: str) -> float | None:
    v = dp.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValidationError(f"dp.{key} must be a finite number")
    return float(v)


def check_dp(dp: Mapping[str, Any], *, rounds: int) -> dict[str, float]:
    """Validate a study's ``dp`` option; return ``noise_multiplier``, ``delta``, ``sample_rate``.

    ``dp`` holds ``delta`` (in (0, 1)), ``sample_rate`` (in (0, 1], default 1) and either
    ``noise_multiplier`` (> 0) or a target ``epsilon`` (> 0) from which the multiplier is
    calibrated over ``rounds`` steps.
    """
    if not isinstance(dp, Mapping):
        raise ValidationError("dp must be a JSON object (noise_multiplier or epsilon, delta)")
    unknown = sorted(set(dp) - set(_KEYS))
    if unknown:
        raise ValidationError(f"unknown dp setting(s) {unknown}; known: {list(_KEYS)}")
    delta = _num(dp, "delta")
    if delta is None or not 0 < delta < 1:
        raise ValidationError("dp.delta must be a number in (0, 1)")
    rate = _num(dp, "sample_rate")
    rate = 1.0 if rate is None else rate
    if not 0 < rate <= 1:
        raise ValidationError("dp.sample_rate must be a number in (0, 1]")
    mult, eps = _num(dp, "noise_multiplier"), _num(dp, "epsilon")
    if (mult is None) == (eps is None):
        raise ValidationError("dp needs exactly one of noise_multiplier and epsilon")
    if eps is not None:
        if eps <= 0:
            raise ValidationError("dp.epsilon must be positive")
        mult = calibrate(epsilon=eps, sample_rate=rate, steps=rounds, delta=delta)
    assert mult is not None
    if mult <= 0:
        raise ValidationError("dp.noise_multiplier must be positive")
    return {"noise_multiplier": mult, "delta": delta, "sample_rate": rate}


def quantise_scale(clip_norm: float) -> float:
    """Integer units per unit of gradient: ``UNITS / clip_norm``."""
    return UNITS / clip_norm


def noise_std(noise_multiplier: float, n_parameters: int) -> float:
    """Standard deviation of the noise the integer sum carries: multiplier times sensitivity.

    The sensitivity in units is ``UNITS + sqrt(n_parameters)`` (clipping plus rounding).
    """
    return noise_multiplier * (UNITS + math.sqrt(n_parameters))


def poisson_sample(
    rows: np.ndarray,
    *,
    n_parameters: int,
    noise_multiplier: float,
    sample_rate: float,
    limit: float,
) -> np.ndarray:
    """A site's Poisson sample of its training ``rows``, from the OS entropy.

    Each row is kept independently with probability ``sample_rate``, by a Philox
    generator keyed from ``os.urandom`` (never the study's seed: the amplification by
    sampling needs a sample no party can predict).

    Raises
    ------
    TrainingError
        The rows times the sensitivity (plus room for the noise) exceed ``limit``, the
        fixed-point range of one site's value: the integer sum could not be encoded.
    """
    sens = UNITS + math.sqrt(n_parameters)
    if rows.size * sens + 40.0 * noise_std(noise_multiplier, n_parameters) > limit:
        raise TrainingError(
            f"the site's training rows exceed what the fixed-point range ({limit:.3g}) "
            f"holds of a DP gradient sum ({UNITS} units per clip_norm)"
        )
    if sample_rate >= 1.0:
        return rows
    key = int.from_bytes(os.urandom(16), "little")
    rng = np.random.Generator(np.random.Philox(key=key))
    return rows[rng.random(rows.size) < sample_rate]


def hide_train_split(arrays: dict[str, Any], auc_bins: int) -> None:
    """Zero, in place, the training split's part of the metric arrays (DP mode).

    Nothing computed from the training split is released but the noisy sum: the
    split metrics (``loss``, ``correct``) and the AUC histograms and pairs hold the
    three splits in order, training first.
    """
    for key, width in (
        ("loss", 1),
        ("correct", 1),
        ("hist_pos", auc_bins),
        ("hist_neg", auc_bins),
        ("auc_own", 3),
    ):
        if key in arrays:
            arr = np.array(arrays[key], dtype=np.float64)
            arr[:width] = 0.0
            arrays[key] = arr


def privacy_block(
    dp: Mapping[str, Any] | None, cost: tuple[float, float], *, steps: int, clip_norm: float
) -> dict[str, Any]:
    """The result's and the model card's statement of the privacy spent."""
    if dp is None:
        return dict(NO_PRIVACY)
    return {
        "epsilon_spent": float(cost[0]),
        "delta_spent": float(cost[1]),
        "mechanism": (
            "record-level DP: distributed DP-SGD (per-sample clipping, Poisson sampling, "
            "discrete Gaussian noise shares summed securely), add/remove one training record"
        ),
        "accountant": "dp_accounting RDP, Poisson-subsampled Gaussian",
        "noise_multiplier": float(dp["noise_multiplier"]),
        "sample_rate": float(dp["sample_rate"]),
        "steps": int(steps),
        "clip_norm": float(clip_norm),
    }

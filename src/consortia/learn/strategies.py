"""Federated optimisation strategies: one interface, server side in numpy.

A strategy says two things:

* how the hub turns the sites' **mean update** ``delta = sum_i n_i (y_i - x) / sum_i n_i``
  (``x`` the global weights, ``y_i`` site ``i``'s weights after local training,
  ``n_i`` its training rows) into the next global weights (:meth:`Strategy.step`), with
  its own state (momenta) that the hub keeps;
* what local training adds to the loss or the gradient: a proximal term
  (:attr:`Strategy.proximal_mu`, FedProx) or control variates
  (:attr:`Strategy.control_variates`, Scaffold).

Strategies know nothing of the runtime, the transport or torch.

The server optimisers follow Reddi et al. 2021, "Adaptive Federated Optimization",
Algorithm 2, **without** Adam's bias correction (as FLamby's implementation, whose
published Fed-TCGA-BRCA figures this reproduces), with ``m_0 = v_0 = 0``::

    m <- beta1 * m + (1 - beta1) * delta
    v <- v + delta**2                                        (FedAdagrad)
    v <- beta2 * v + (1 - beta2) * delta**2                  (FedAdam)
    v <- v - (1 - beta2) * delta**2 * sign(v - delta**2)     (FedYogi)
    x <- x + server_lr * m / (sqrt(v) + tau)

FedAvg, FedProx and Scaffold apply ``x <- x + server_lr * delta``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np

from consortia.errors import HyperparameterError, TrainingDivergedError

__all__ = [
    "DIVERGENCE_NORM",
    "STRATEGIES",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "Scaffold",
    "Strategy",
    "make_strategy",
]

DIVERGENCE_NORM = 1e8
"""A global weight vector whose L2 norm exceeds this is taken as a diverged server optimiser."""

State = dict[str, np.ndarray]


def _number(name: str, value: Any, *, low: float, high: float = np.inf, strict: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise HyperparameterError(f"strategy parameter {name!r} must be a number")
    v = float(value)
    ok = (v > low if strict else v >= low) and v < high and np.isfinite(v)
    if not ok:
        rel = ">" if strict else ">="
        upper = f" and < {high:g}" if np.isfinite(high) else ""
        raise HyperparameterError(f"strategy parameter {name!r} must be {rel} {low:g}{upper}")
    return v


@dataclass(frozen=True, kw_only=True)
class Strategy(abc.ABC):
    """Base class of the strategies.

    Parameters
    ----------
    server_lr
        The server learning rate (1.0: plain averaging for FedAvg).
    """

    name: ClassVar[str]
    server_lr: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "server_lr", _number("server_lr", self.server_lr, low=0.0, strict=True)
        )

    @property
    def proximal_mu(self) -> float:
        """Weight ``mu`` of the proximal term ``mu / 2 * ||w - x||^2`` of local training."""
        return 0.0

    @property
    def control_variates(self) -> bool:
        """Whether local training corrects its gradients with control variates (Scaffold)."""
        return False

    def init_state(self, size: int) -> State:
        """The server optimiser's state for a model of ``size`` parameters."""
        return {}

    @abc.abstractmethod
    def direction(self, delta: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        """The server step (before ``server_lr``) and the new state, from the mean update."""

    def step(
        self, weights: np.ndarray, delta: np.ndarray, state: State
    ) -> tuple[np.ndarray, State]:
        """The next global weights and server state.

        Raises
        ------
        TrainingDivergedError
            The new weights are not finite or their norm exceeds :data:`DIVERGENCE_NORM`.
        """
        d, new_state = self.direction(np.asarray(delta, dtype=np.float64), state)
        new = weights + self.server_lr * d
        if not np.all(np.isfinite(new)) or float(np.linalg.norm(new)) > DIVERGENCE_NORM:
            raise TrainingDivergedError(
                f"the server optimiser {self.name!r} diverged (global weights beyond norm "
                f"{DIVERGENCE_NORM:g}); lower server_lr or the local learning rate"
            )
        return new, new_state

    def params(self) -> dict[str, float]:
        """The strategy's parameters by name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True)
class FedAvg(Strategy):
    """Federated averaging (McMahan et al. 2017): ``x <- x + server_lr * delta``."""

    name: ClassVar[str] = "fedavg"

    def direction(self, delta: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        return delta, state


@dataclass(frozen=True, kw_only=True)
class FedProx(FedAvg):
    """FedProx (Li et al. 2020): FedAvg whose local loss adds ``mu / 2 * ||w - x||^2``.

    Parameters
    ----------
    mu
        The proximal weight (>= 0).
    """

    name: ClassVar[str] = "fedprox"
    mu: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "mu", _number("mu", self.mu, low=0.0, strict=False))

    @property
    def proximal_mu(self) -> float:
        return self.mu


@dataclass(frozen=True, kw_only=True)
class Scaffold(FedAvg):
    """Scaffold (Karimireddy et al. 2020), control variates of option I, released as sums.

    Each local gradient step uses ``g(w) - c_i + c``, where ``c_i`` is the site's
    gradient at the *previous* global weights (the mean of one seeded epoch's batch
    gradients, or the full-batch gradient without batches) and ``c`` the sample-weighted
    mean of those gradients over sites (the sum released in the previous round).  A
    site keeps ``c_i`` between rounds and recomputes it bit for bit from the previous
    weights (broadcast) when it has not (a restarted node).  The first round uses
    ``c = c_i = 0``.
    """

    name: ClassVar[str] = "scaffold"

    @property
    def control_variates(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class _FedOpt(Strategy):
    """Adaptive server optimisers (Reddi et al. 2021), without bias correction.

    Parameters
    ----------
    server_lr
        The server learning rate ``eta``.
    beta1, beta2
        Momentum and second-moment decay, in [0, 1).
    tau
        The adaptivity (> 0).
    """

    server_lr: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.999
    tau: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("beta1", "beta2"):
            object.__setattr__(
                self, name, _number(name, getattr(self, name), low=0.0, high=1.0, strict=False)
            )
        object.__setattr__(self, "tau", _number("tau", self.tau, low=0.0, strict=True))

    def init_state(self, size: int) -> State:
        return {"m": np.zeros(size), "v": np.zeros(size)}

    @abc.abstractmethod
    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        """The new second moment from the old one and the squared mean update."""

    def direction(self, delta: np.ndarray, state: State) -> tuple[np.ndarray, State]:
        m = self.beta1 * state["m"] + (1.0 - self.beta1) * delta
        v = self.second_moment(state["v"], delta * delta)
        return m / (np.sqrt(v) + self.tau), {"m": m, "v": v}


@dataclass(frozen=True, kw_only=True)
class FedAdagrad(_FedOpt):
    """FedAdagrad: ``v <- v + delta**2``."""

    name: ClassVar[str] = "fedadagrad"

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v + d2


@dataclass(frozen=True, kw_only=True)
class FedAdam(_FedOpt):
    """FedAdam: ``v <- beta2 * v + (1 - beta2) * delta**2`` (no bias correction)."""

    name: ClassVar[str] = "fedadam"

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return self.beta2 * v + (1.0 - self.beta2) * d2


@dataclass(frozen=True, kw_only=True)
class FedYogi(_FedOpt):
    """FedYogi: ``v <- v - (1 - beta2) * delta**2 * sign(v - delta**2)``."""

    name: ClassVar[str] = "fedyogi"

    def second_moment(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return v - (1.0 - self.beta2) * d2 * np.sign(v - d2)


STRATEGIES: Mapping[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, Scaffold, FedAdam, FedYogi, FedAdagrad)
}
"""Strategy name -> class."""


def make_strategy(name: str, params: Mapping[str, Any] | None = None) -> Strategy:
    """Build the strategy ``name`` from its parameters.

    Raises
    ------
    HyperparameterError
        An unknown strategy, an unknown parameter, or a value of the wrong type or range.
    """
    cls = STRATEGIES.get(name) if isinstance(name, str) else None
    if cls is None:
        raise HyperparameterError(f"strategy {name!r} is not known (known: {sorted(STRATEGIES)})")
    given = dict(params or {})
    allowed = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise HyperparameterError(
            f"strategy {name!r} has no parameter(s) {unknown} (it takes: {sorted(allowed)})"
        )
    return cls(**given)

"""Registered model factories: named architectures with JSON hyperparameters.

A study names its model (``"linear"``, ``"mlp"``, ``"cox_linear"``) and gives its
hyperparameters as a JSON object; no code and no pickle travels.  A node builds the
model from its own copy of the factory registered here.

Parameter vector
----------------
Every model's parameters travel as **one float64 vector** in a fixed order: the
order of :meth:`ModelSpec.shapes` (which is the order of the torch module's
``named_parameters()``, checked when the module is built), each parameter
flattened in C (row-major) order.  For ``linear`` with ``outputs=1`` that is
``[weight[0, 0], ..., weight[0, n_features - 1], bias[0]]``; for ``mlp`` it is
``layers.0.weight, layers.0.bias, layers.2.weight, layers.2.bias, ...`` (the odd
indices are the activations).  :func:`flatten` and :func:`unflatten` convert.

The hub needs no torch: shapes, parameter counts and the initial weights are
computed with numpy here (initialisation as torch's ``nn.Linear``:
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` for weights and biases, drawn from a
generator seeded by the study's seed).  Only :meth:`ModelSpec.build` imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

from consortia.errors import HyperparameterError, UnknownModelError, ValidationError

if TYPE_CHECKING:
    import torch

__all__ = [
    "Hyper",
    "ModelSpec",
    "flatten",
    "get_model",
    "register_model",
    "registered_models",
    "unflatten",
]

Shapes = list[tuple[str, tuple[int, ...]]]


@dataclass(frozen=True)
class Hyper:
    """One declared hyperparameter: its JSON kind, default and allowed values.

    Parameters
    ----------
    kind
        ``"int"``, ``"float"``, ``"bool"``, ``"str"`` or ``"int_list"``.
    default
        The value used when a study does not give one.
    minimum
        Smallest allowed value (numbers, and each item of an ``int_list``).
    choices
        Allowed values of a ``"str"``.
    """

    kind: str
    default: Any
    minimum: float | None = None
    choices: tuple[str, ...] = ()

    def check(self, name: str, value: Any, *, model: str) -> Any:
        """Return ``value`` in canonical form, or raise naming ``name`` and the rule."""
        where = f"hyperparameter {name!r} of model {model!r}"
        if self.kind == "int":
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise HyperparameterError(f"{where} must be an integer")
            value = int(value)
        elif self.kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise HyperparameterError(f"{where} must be a number")
            value = float(value)
            if not np.isfinite(value):
                raise HyperparameterError(f"{where} must be finite")
        elif self.kind == "bool":
            if not isinstance(value, (bool, np.bool_)):
                raise HyperparameterError(f"{where} must be true or false")
            return bool(value)
        elif self.kind == "str":
            if not isinstance(value, str):
                raise HyperparameterError(f"{where} must be a string")
            if self.choices and value not in self.choices:
                raise HyperparameterError(f"{where} must be one of {list(self.choices)}")
            return value
        elif self.kind == "int_list":
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise HyperparameterError(f"{where} must be a list of integers")
            items = [Hyper("int", 0, self.minimum).check(name, v, model=model) for v in value]
            return tuple(items)
        else:  # pragma: no cover - a defect in a registration
            raise ValidationError(f"unknown hyperparameter kind {self.kind!r}")
        if self.minimum is not None and value < self.minimum:
            raise HyperparameterError(f"{where} must be >= {self.minimum:g}")
        return value


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its hyperparameters, parameter layout and torch factory.

    Attributes
    ----------
    name
        The registered name.
    hyperparameters
        Name -> :class:`Hyper` declaration.
    layout
        ``layout(n_features, hp)`` -> ``[(parameter name, shape), ...]`` in vector order.
    factory
        ``factory(n_features, hp)`` -> a ``torch.nn.Module`` (float64) whose
        ``named_parameters()`` follow ``layout``.
    description
        One line for catalogues.
    """

    name: str
    hyperparameters: Mapping[str, Hyper]
    layout: Callable[[int, Mapping[str, Any]], Shapes]
    factory: Callable[[int, Mapping[str, Any]], Any]
    description: str = ""

    def validate(self, hyperparameters: Mapping[str, Any] | None) -> dict[str, Any]:
        """Checked hyperparameters with defaults filled in.

        Raises
        ------
        HyperparameterError
            An unknown name, a value of the wrong type or out of range.
        """
        given = dict(hyperparameters or {})
        unknown = sorted(set(given) - set(self.hyperparameters))
        if unknown:
            raise HyperparameterError(
                f"model {self.name!r} has no hyperparameter(s) {unknown} "
                f"(it takes: {sorted(self.hyperparameters)})"
            )
        return {
            k: h.check(k, given[k], model=self.name) if k in given else h.default
            for k, h in self.hyperparameters.items()
        }

    def shapes(self, n_features: int, hyperparameters: Mapping[str, Any] | None = None) -> Shapes:
        """``[(parameter name, shape), ...]`` in the order of the parameter vector."""
        if n_features < 1:
            raise ValidationError("a model needs at least one feature")
        return self.layout(n_features, self.validate(hyperparameters))

    def n_parameters(
        self, n_features: int, hyperparameters: Mapping[str, Any] | None = None
    ) -> int:
        """Length of the parameter vector."""
        return int(sum(int(np.prod(s)) for _, s in self.shapes(n_features, hyperparameters)))

    def initial(
        self, n_features: int, hyperparameters: Mapping[str, Any] | None, *, seed: int
    ) -> np.ndarray:
        """Initial parameter vector: ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` per parameter.

        ``fan_in`` is a weight's second dimension (a bias takes its layer's weight's);
        drawn from ``numpy.random.default_rng(seed)``, parameter after parameter.
        """
        rng = np.random.default_rng(seed)
        out, fan_in = [], 1
        for _, shape in self.shapes(n_features, hyperparameters):
            if len(shape) == 2:
                fan_in = shape[1]
            bound = 1.0 / np.sqrt(fan_in)
            out.append(rng.uniform(-bound, bound, size=int(np.prod(shape))))
        return np.concatenate(out) if out else np.zeros(0)

    def build(self, n_features: int, hyperparameters: Mapping[str, Any] | None = None) -> Any:
        """The torch module (float64), its parameters in the documented vector order."""
        hp = self.validate(hyperparameters)
        module = self.factory(n_features, hp).double()
        got = [(n, tuple(p.shape)) for n, p in module.named_parameters()]
        if got != self.layout(n_features, hp):  # pragma: no cover - a defect in a registration
            raise ValidationError(f"model {self.name!r}: the module does not follow its layout")
        return module


_MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Register ``spec`` under its name (the same name twice is an error)."""
    if spec.name in _MODELS and _MODELS[spec.name] is not spec:
        raise ValidationError(f"a model is already registered under {spec.name!r}")
    _MODELS[spec.name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    """The model registered under ``name``.

    Raises
    ------
    UnknownModelError
        Nothing is registered under ``name``; the message lists the registered names.
    """
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        raise UnknownModelError(
            f"no model is registered under {name!r} (registered: {sorted(_MODELS)})"
        ) from None


def registered_models() -> Mapping[str, ModelSpec]:
    """Read-only view of the registry: name -> :class:`ModelSpec`."""
    return MappingProxyType(_MODELS)


def flatten(module: Any) -> np.ndarray:
    """The module's parameters as one float64 vector (documented order, C order within)."""
    parts = [p.detach().reshape(-1).to(dtype=_torch().float64) for p in module.parameters()]
    if not parts:
        return np.zeros(0)
    return _torch().cat(parts).cpu().numpy().astype(np.float64, copy=True)


def unflatten(module: Any, vector: np.ndarray) -> None:
    """Load a parameter vector (see :func:`flatten`) into the module, in place."""
    torch = _torch()
    vec = np.asarray(vector, dtype=np.float64)
    params = list(module.parameters())
    total = sum(p.numel() for p in params)
    if vec.ndim != 1 or vec.size != total:
        raise ValidationError(
            f"the parameter vector has {vec.size} values; the model has {total} parameters"
        )
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            chunk = torch.from_numpy(vec[offset : offset + n].copy()).reshape(p.shape)
            p.copy_(chunk.to(dtype=p.dtype, device=p.device))
            offset += n


def _torch() -> Any:
    import torch

    return torch


# --------------------------------------------------------------------------- built-ins


def _linear_layout(n: int, hp: Mapping[str, Any]) -> Shapes:
    out: Shapes = [("weight", (hp["outputs"], n))]
    if hp["bias"]:
        out.append(("bias", (hp["outputs"],)))
    return out


def _linear(n: int, hp: Mapping[str, Any]) -> torch.nn.Module:
    from torch import nn

    return nn.Linear(n, hp["outputs"], bias=hp["bias"])


def _cox_layout(n: int, hp: Mapping[str, Any]) -> Shapes:
    return [("weight", (1, n))]


def _cox(n: int, hp: Mapping[str, Any]) -> torch.nn.Module:
    from torch import nn

    return nn.Linear(n, 1, bias=False)


def _mlp_layout(n: int, hp: Mapping[str, Any]) -> Shapes:
    sizes = [n, *hp["hidden"], hp["outputs"]]
    out: Shapes = []
    for i in range(len(sizes) - 1):
        out.append((f"layers.{2 * i}.weight", (sizes[i + 1], sizes[i])))
        out.append((f"layers.{2 * i}.bias", (sizes[i + 1],)))
    return out


def _mlp(n: int, hp: Mapping[str, Any]) -> torch.nn.Module:
    from torch import nn

    sizes = [n, *hp["hidden"], hp["outputs"]]
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[hp["activation"]]
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())

    class MLP(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.Sequential(*layers)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.layers(x)
            return out

    return MLP()


register_model(
    ModelSpec(
        "linear",
        {"outputs": Hyper("int", 1, minimum=1), "bias": Hyper("bool", True)},
        _linear_layout,
        _linear,
        "a linear layer (linear or logistic regression by the task's loss)",
    )
)
register_model(
    ModelSpec(
        "cox_linear",
        {},
        _cox_layout,
        _cox,
        "a linear risk score without intercept (the Cox partial likelihood ignores one)",
    )
)
register_model(
    ModelSpec(
        "mlp",
        {
            "hidden": Hyper("int_list", (32,), minimum=1),
            "outputs": Hyper("int", 1, minimum=1),
            "activation": Hyper("str", "relu", choices=("relu", "tanh")),
        },
        _mlp_layout,
        _mlp,
        "a multilayer perceptron: linear layers with ReLU or tanh between them",
    )
)

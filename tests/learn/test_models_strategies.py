"""The model registry (layout, parameter vector, hyperparameters) and the strategies' server steps.

The strategies' references are the update rules of Reddi et al. 2021 (Algorithm 2,
without bias correction) written out by hand; the model layouts are checked against
torch's own modules.
"""

from __future__ import annotations

import numpy as np
import pytest

from consortia.errors import HyperparameterError, TrainingDivergedError, UnknownModelError
from consortia.learn import get_model, make_strategy, registered_models
from consortia.learn.strategies import DIVERGENCE_NORM, STRATEGIES


def test_registered_models_and_unknown_name() -> None:
    assert {"linear", "mlp", "cox_linear"} <= set(registered_models())
    with pytest.raises(UnknownModelError, match=r"no model is registered under 'resnet'"):
        get_model("resnet")


@pytest.mark.parametrize(
    ("model", "hp", "match"),
    [
        ("mlp", {"hidden": "32"}, r"'hidden' of model 'mlp' must be a list of integers"),
        ("mlp", {"hidden": [8, 2.5]}, r"'hidden' of model 'mlp' must be an integer"),
        ("mlp", {"hidden": [0]}, r"'hidden' of model 'mlp' must be >= 1"),
        ("mlp", {"activation": "gelu"}, r"'activation' of model 'mlp' must be one of"),
        ("linear", {"outputs": True}, r"'outputs' of model 'linear' must be an integer"),
        ("linear", {"bias": "yes"}, r"'bias' of model 'linear' must be true or false"),
        ("linear", {"depth": 3}, r"model 'linear' has no hyperparameter\(s\) \['depth'\]"),
    ],
)
def test_hyperparameters_of_the_wrong_type(model: str, hp: dict, match: str) -> None:
    with pytest.raises(HyperparameterError, match=match):
        get_model(model).validate(hp)


def test_parameter_vector_order_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    from consortia.learn.models import flatten, unflatten

    for name, hp in (("linear", {}), ("mlp", {"hidden": [4, 3]}), ("cox_linear", {})):
        spec = get_model(name)
        module = spec.build(5, hp)
        assert [(n, tuple(p.shape)) for n, p in module.named_parameters()] == spec.shapes(5, hp)
        assert spec.n_parameters(5, hp) == sum(p.numel() for p in module.parameters())
        vec = np.arange(spec.n_parameters(5, hp), dtype=np.float64) / 7
        unflatten(module, vec)
        assert flatten(module).tobytes() == vec.tobytes()
    # linear, documented order: the weight row, then the bias
    lin = get_model("linear").build(3)
    unflatten(lin, np.array([1.0, 2.0, 3.0, 4.0]))
    out = lin(torch.tensor([[1.0, 1.0, 1.0]], dtype=torch.float64))
    assert float(out.detach()[0, 0]) == 1 + 2 + 3 + 4
    with pytest.raises(Exception, match="has 3 values; the model has 4"):
        unflatten(lin, np.zeros(3))


def test_initial_weights_are_seeded_and_bounded() -> None:
    spec = get_model("mlp")
    a = spec.initial(10, {"hidden": [16]}, seed=3)
    assert a.tobytes() == spec.initial(10, {"hidden": [16]}, seed=3).tobytes()
    assert a.tobytes() != spec.initial(10, {"hidden": [16]}, seed=4).tobytes()
    first = 16 * 10 + 16  # layer 0: fan_in 10
    assert np.all(np.abs(a[:first]) <= 1 / np.sqrt(10))
    assert np.all(np.abs(a[first:]) <= 1 / np.sqrt(16))


def _reference(kind: str, deltas: list[np.ndarray], lr: float, b1: float, b2: float, tau: float):
    x = np.zeros_like(deltas[0])
    m, v = np.zeros_like(x), np.zeros_like(x)
    for d in deltas:
        m = b1 * m + (1 - b1) * d
        if kind == "fedadagrad":
            v = v + d**2
        elif kind == "fedadam":
            v = b2 * v + (1 - b2) * d**2
        else:
            v = v - (1 - b2) * d**2 * np.sign(v - d**2)
        x = x + lr * m / (np.sqrt(v) + tau)
    return x


@pytest.mark.parametrize("kind", ["fedadam", "fedyogi", "fedadagrad"])
def test_server_optimisers_follow_reddi_without_bias_correction(kind: str) -> None:
    rng = np.random.default_rng(1)
    deltas = [rng.normal(size=6) for _ in range(5)]
    params = {"server_lr": 0.1, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    strategy = make_strategy(kind, params)
    x, state = np.zeros(6), strategy.init_state(6)
    for d in deltas:
        x, state = strategy.step(x, d, state)
    np.testing.assert_allclose(x, _reference(kind, deltas, 0.1, 0.9, 0.99, 1e-3), rtol=1e-14)
    # the first step of Adam without bias correction is lr * 0.1 / (sqrt(0.01) + tau) * sign
    adam = make_strategy("fedadam", {"server_lr": 1.0, "tau": 1e-12, "beta2": 0.99})
    first, _ = adam.step(np.zeros(1), np.array([2.0]), adam.init_state(1))
    assert first[0] == pytest.approx(0.1 * 2.0 / np.sqrt(0.01 * 4.0))


def test_fedavg_family_and_their_local_terms() -> None:
    assert set(STRATEGIES) == {"fedavg", "fedprox", "scaffold", "fedadam", "fedyogi", "fedadagrad"}
    x, d = np.ones(3), np.array([0.5, -1.0, 2.0])
    for name in ("fedavg", "fedprox", "scaffold"):
        new, _ = make_strategy(name, {"server_lr": 0.5}).step(x, d, {})
        np.testing.assert_array_equal(new, x + 0.5 * d)
    assert make_strategy("fedprox", {"mu": 0.1}).proximal_mu == 0.1
    assert make_strategy("fedavg").proximal_mu == 0.0
    assert make_strategy("scaffold").control_variates
    assert not make_strategy("fedadam").control_variates


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("fedsgd", {}, r"strategy 'fedsgd' is not known"),
        ("fedavg", {"mu": 0.1}, r"strategy 'fedavg' has no parameter\(s\) \['mu'\]"),
        ("fedprox", {"mu": "0.1"}, r"'mu' must be a number"),
        ("fedadam", {"beta1": 1.0}, r"'beta1' must be >= 0 and < 1"),
        ("fedyogi", {"tau": 0}, r"'tau' must be > 0"),
        ("fedavg", {"server_lr": -1}, r"'server_lr' must be > 0"),
    ],
)
def test_bad_strategy_parameters(name: str, params: dict, match: str) -> None:
    with pytest.raises(HyperparameterError, match=match):
        make_strategy(name, params)


def test_diverging_server_optimiser_is_a_typed_error() -> None:
    strategy = make_strategy("fedadagrad", {"server_lr": 10 * DIVERGENCE_NORM})
    with pytest.raises(TrainingDivergedError, match=r"server optimiser 'fedadagrad' diverged"):
        strategy.step(np.zeros(2), np.ones(2), strategy.init_state(2))
    with pytest.raises(TrainingDivergedError, match="diverged"):
        make_strategy("fedavg").step(np.zeros(2), np.array([np.nan, 0.0]), {})

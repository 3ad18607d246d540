"""Federated training (``learn.train``) through the full Simulation path.

Oracles: centralised full-batch gradient descent on the pooled data (numpy, written
out), scikit-learn's ``roc_auc_score`` and lifelines' ``concordance_index`` on the
pooled held-out split.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia import Policy, Simulation
from consortia.data.dataset import Dataset
from consortia.errors import (
    HyperparameterError,
    SchemaError,
    SplitClassError,
    TrainingDivergedError,
    TrainingError,
    UnknownModelError,
    ValidationError,
)
from consortia.learn import Training, TrainingResult
from consortia.learn.evaluation import split_codes
from consortia.protocol import algorithm_from_spec
from consortia.resultcodec import decode_result, encode_result

torch = pytest.importorskip("torch")

OPEN = Policy(max_params_per_sample=1.0, min_cell_count=1)
FEATURES = ("a", "b", "c")


@pytest.fixture(scope="module")
def sites() -> dict[str, pd.DataFrame]:
    """Three sites: features a, b, c; a continuous y; a binary e; survival (T days, E)."""
    rng = np.random.default_rng(7)
    out = {}
    for i, n in enumerate((45, 60, 52)):
        x = rng.normal(i * 0.2, 1.0, size=(n, 3))
        lin = x @ np.array([0.8, -0.5, 0.3])
        t = np.ceil(rng.exponential(200 * np.exp(-lin)))
        c = np.ceil(rng.uniform(20, 400, n))
        out[f"s{i}"] = pd.DataFrame(
            {
                "pid": [f"p{i}-{k}" for k in range(n)],
                "a": x[:, 0],
                "b": x[:, 1],
                "c": x[:, 2],
                "y": 1.0 + lin + rng.normal(0, 0.5, n),
                "e": (rng.random(n) < 1 / (1 + np.exp(-lin))).astype(int),
                "T": np.minimum(t, c),
                "E": (t <= c).astype(int),
            }
        )
    return out


def _pooled(sites: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(sites.values(), ignore_index=True)


def _centralised_gd(sites, task: str, rounds: int, lr: float) -> np.ndarray:
    """Full-batch gradient descent on the pooled mean loss, weights [a, b, c, bias]."""
    df = _pooled(sites)
    x = np.column_stack([df[list(FEATURES)].to_numpy(), np.ones(len(df))])
    w = np.zeros(4)
    for _ in range(rounds):
        eta = x @ w
        if task == "regression":
            g = x.T @ (2 * (eta - df["y"].to_numpy())) / len(df)
        else:
            g = x.T @ (1 / (1 + np.exp(-eta)) - df["e"].to_numpy()) / len(df)
        w = w - lr * g
    return w


@pytest.mark.parametrize(
    ("task", "label", "strategy"),
    [("regression", "y", "fedavg"), ("binary", "e", "fedavg"), ("binary", "e", "scaffold")],
)
def test_one_full_batch_step_per_round_is_centralised_gradient_descent(
    sites, task: str, label: str, strategy: str
) -> None:
    """The exactness anchor: FedAvg (and Scaffold, whose corrections average to zero)
    with one full-batch step per round equals pooled full-batch gradient descent."""
    algo = Training(
        model="linear", features=FEATURES, task=task, label=label, strategy=strategy,
        rounds=12, lr=0.3, init="zeros",
    )  # fmt: skip
    result = Simulation(sites, policy=OPEN).run(algo)
    expected = _centralised_gd(sites, task, 12, 0.3)
    np.testing.assert_allclose(result.weights, expected, rtol=0, atol=1e-6)
    assert result.rounds == 12 and result.best_round == 12 and not result.stopped_early
    assert result.history["clipped_sites"].sum() == 0


def test_fedadam_with_one_full_batch_step_is_the_server_adam_on_pooled_gradients(sites) -> None:
    params = {"server_lr": 0.05, "beta1": 0.9, "beta2": 0.99, "tau": 1e-3}
    algo = Training(
        model="linear", features=FEATURES, task="regression", label="y", rounds=8, lr=0.1,
        init="zeros", strategy="fedadam", strategy_params=params,
    )  # fmt: skip
    result = Simulation(sites, policy=OPEN).run(algo)
    df = _pooled(sites)
    x = np.column_stack([df[list(FEATURES)].to_numpy(), np.ones(len(df))])
    w, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    for _ in range(8):
        d = -0.1 * x.T @ (2 * (x @ w - df["y"].to_numpy())) / len(df)
        m = 0.9 * m + 0.1 * d
        v = 0.99 * v + 0.01 * d**2
        w = w + 0.05 * m / (np.sqrt(v) + 1e-3)
    np.testing.assert_allclose(result.weights, w, rtol=0, atol=1e-6)


def test_minibatch_training_is_bit_identical_across_runs_and_in_a_fresh_site(sites) -> None:
    """Seeded from (seed, round, site): a second simulation and a site that builds the
    algorithm anew from its spec (as a node does) give the same bits."""
    algo = Training(
        model="mlp", hyperparameters={"hidden": [4]}, features=FEATURES, task="binary",
        label="e", rounds=3, local_steps=5, batch_size=8, lr=0.2, seed=11, strategy="fedprox",
        strategy_params={"mu": 0.1},
    )  # fmt: skip
    first = Simulation(sites, policy=OPEN).run(algo)
    second = Simulation(sites, policy=OPEN).run(algorithm_from_spec(algo.spec()))
    assert first.weights.tobytes() == second.weights.tobytes()
    public = {"weights": first.weights, "round": np.array([2.0])}
    data = Dataset(sites["s1"], site="s1")
    a = algorithm_from_spec(algo.spec()).local("train", public, data)
    b = algorithm_from_spec(algo.spec()).local("train", public, data)
    assert a.arrays["update"].tobytes() == b.arrays["update"].tobytes()
    other = algorithm_from_spec(algo.spec()).local("train", public, Dataset(sites["s1"], site="s2"))
    assert other.arrays["update"].tobytes() != a.arrays["update"].tobytes()  # the site's stream


def test_each_site_update_is_clipped_to_the_declared_norm(sites) -> None:
    algo = Training(
        model="linear", features=FEATURES, task="regression", label="y", rounds=2, lr=0.3,
        init="zeros", clip_norm=0.01,
    )  # fmt: skip
    result = Simulation(sites, policy=OPEN).run(algo)
    assert list(result.history["clipped_sites"]) == [3.0, 3.0]
    assert np.all(result.history["update_norm"] <= 0.01 + 1e-9)
    c = algo.local("train", {"weights": np.zeros(4), "round": [0.0]}, Dataset(sites["s0"]))
    assert np.linalg.norm(c.arrays["update"]) <= 45 * 0.01 * (1 + 1e-12)
    with pytest.raises(TrainingError, match="lower 'clip_norm'"):
        Training(
            model="linear", features=FEATURES, task="regression", label="y", clip_norm=1e8
        ).local("train", {"weights": np.zeros(4), "round": [0.0]}, Dataset(sites["s0"]))


def test_held_out_accuracy_and_auc_match_the_pooled_split(sites) -> None:
    from sklearn.metrics import roc_auc_score

    algo = Training(
        model="linear", features=FEATURES, task="binary", label="e", rounds=4, lr=0.5,
        local_steps=3, batch_size=16, id_column="pid", val_fraction=0.2, test_fraction=0.3,
        auc_bins=50, seed=5,
    )  # fmt: skip
    result = Simulation(sites, policy=OPEN).run(algo)
    assert isinstance(result, TrainingResult)
    df = _pooled(sites)
    split = split_codes(df["pid"].to_numpy(), seed=5, val_fraction=0.2, test_fraction=0.3)
    assert result.n == {k: int(np.sum(split == i)) for i, k in enumerate(("train", "val", "test"))}
    w = result.weights
    score = df[list(FEATURES)].to_numpy() @ w[:3] + w[3]
    for k, name in ((1, "val"), (2, "test")):
        rows = split == k
        y = df["e"].to_numpy()[rows]
        acc = np.mean((score[rows] > 0) == (y == 1))
        assert result.metrics[f"{name}_accuracy"] == pytest.approx(acc, abs=1e-12)
        loss = np.mean(np.logaddexp(0, score[rows]) - y * score[rows])
        assert result.metrics[f"{name}_loss"] == pytest.approx(loss, abs=1e-6)
        auc = roc_auc_score(y, score[rows])
        bound = result.metrics[f"{name}_auc_bound"]
        assert bound < 0.02
        assert abs(result.metrics[f"{name}_auc"] - auc) <= bound + 1e-12
    assert list(result.summary.index) == [0, 1, 2, 3]
    back = decode_result(encode_result(result))
    assert back.weights.tobytes() == result.weights.tobytes() and back.metrics == result.metrics


def test_cox_model_c_index_matches_lifelines_within_its_bound(sites) -> None:
    from lifelines.utils import concordance_index

    algo = Training(
        model="cox_linear", features=FEATURES, task="cox", time="T", event="E", rounds=3,
        lr=0.05, local_steps=10, batch_size=8, test_fraction=0.4, id_column="pid",
        strategy="fedadam", strategy_params={"server_lr": 0.1}, time_grid=tuple(
            float(d) for d in range(0, 401)
        ),
    )  # fmt: skip
    result = Simulation(sites, policy=OPEN).run(algo)
    df = _pooled(sites)
    split = split_codes(df["pid"].to_numpy(), seed=0, val_fraction=0.0, test_fraction=0.4)
    test = df[split == 2]
    risk = test[list(FEATURES)].to_numpy() @ result.weights
    expected = concordance_index(test["T"], -risk, test["E"])
    assert result.c_index_split == "test"
    assert abs(result.metrics["c_index"] - expected) <= result.metrics["c_index_bound"] + 1e-12
    assert result.metrics["c_index_bound"] < 0.01
    assert result.metrics["c_index"] > 0.6  # the planted effect is found


def test_early_stopping_keeps_the_weights_of_the_lowest_validation_loss(sites) -> None:
    algo = Training(
        model="linear", features=FEATURES, task="regression", label="y", rounds=30, lr=1.2,
        init="zeros", val_fraction=0.3, id_column="pid", patience=2, clip_norm=1e3,
    )  # fmt: skip
    result = Simulation(sites, policy=OPEN).run(algo)
    val = result.history["val_loss"]
    assert result.stopped_early and result.rounds < 30
    assert result.best_round == int(np.argmin(val))
    assert result.rounds == result.best_round + 3
    assert result.metrics["val_loss"] == pytest.approx(val[result.best_round], rel=1e-9)


def test_bad_input_gives_typed_errors(sites) -> None:
    base = {"features": FEATURES, "task": "binary", "label": "e"}
    with pytest.raises(UnknownModelError, match="'resnet'"):
        Training(model="resnet", **base)
    with pytest.raises(HyperparameterError, match="'outputs' of model 'linear' must be an integer"):
        Training(model="linear", hyperparameters={"outputs": "1"}, **base)
    with pytest.raises(HyperparameterError, match="'mu' must be a number"):
        Training(model="linear", strategy="fedprox", strategy_params={"mu": None}, **base)
    with pytest.raises(ValidationError, match="patience .* needs a validation split"):
        Training(model="linear", patience=3, **base)
    with pytest.raises(ValidationError, match="task must be one of"):
        Training(model="linear", features=FEATURES, task="survival", label="e")
    with pytest.raises(ValidationError, match="time must be a column name"):
        Training(model="cox_linear", features=FEATURES, task="cox", event="E")
    # a site whose training split holds one class
    one_class = {k: v.assign(e=0) if k == "s1" else v for k, v in sites.items()}
    with pytest.raises(SplitClassError, match="single class of label 'e'"):
        Simulation(one_class, policy=OPEN).run(Training(model="linear", rounds=1, **base))
    bad_label = {k: v.assign(e=2) if k == "s0" else v for k, v in sites.items()}
    with pytest.raises(SchemaError, match="label column 'e' must hold only 0 and 1"):
        Simulation(bad_label, policy=OPEN).run(Training(model="linear", rounds=1, **base))


def test_nan_loss_and_a_diverging_server_optimiser(sites) -> None:
    algo = Training(
        model="linear", features=FEATURES, task="regression", label="y", rounds=2, lr=1e6,
        local_steps=60,
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match="local regression loss became NaN or inf"):
        Simulation(sites, policy=OPEN).run(algo)
    blown = {k: v.assign(y=v["y"] * 1e200) for k, v in sites.items()}
    algo = Training(model="linear", features=FEATURES, task="regression", label="y", rounds=2)
    with pytest.raises(TrainingDivergedError, match="loss of the global model is NaN, infinite"):
        Simulation(blown, policy=OPEN).run(algo)
    diverging = Training(
        model="linear", features=FEATURES, task="regression", label="y", rounds=5,
        strategy="fedadagrad", strategy_params={"server_lr": 1e12},
    )  # fmt: skip
    with pytest.raises(TrainingDivergedError, match="server optimiser 'fedadagrad' diverged"):
        Simulation(sites, policy=OPEN).run(diverging)


def test_scaffold_control_variate_is_recomputed_bit_for_bit_by_a_restarted_site(sites) -> None:
    algo = Training(
        model="linear", features=FEATURES, task="binary", label="e", strategy="scaffold",
        rounds=2, local_steps=4, batch_size=8, lr=0.1, seed=3,
    )  # fmt: skip
    data = Dataset(sites["s2"], site="s2")
    w0 = np.array([0.1, -0.2, 0.05, 0.0])
    w1 = w0 + 0.01
    first = {"weights": w0, "round": [0.0], "control": np.zeros(4)}
    second = {"weights": w1, "round": [1.0], "control": np.full(4, 0.02), "previous": w0}
    kept = algorithm_from_spec(algo.spec())
    kept.local("train", first, data)  # keeps c_i at w0
    after_restart = algorithm_from_spec(algo.spec())  # a node restarted between rounds
    a = kept.local("train", second, data)
    b = after_restart.local("train", second, data)
    for name in ("update", "grad"):
        assert a.arrays[name].tobytes() == b.arrays[name].tobytes()

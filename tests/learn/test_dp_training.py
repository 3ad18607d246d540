"""Differentially private training (``learn.train`` with ``dp``) and the node's training rules.

Oracles: Google's ``dp_accounting`` (the same RDP computation, done here directly),
per-row logistic-regression gradients written out in numpy, and the calibrated
variance of the noise (a statistical test with a fixed seed and generous bounds).
"""

from __future__ import annotations

import json
import math

import dp_accounting
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from dp_accounting import rdp

from consortia import Policy, Simulation
from consortia.data.dataset import as_dataset
from consortia.errors import PolicyError, ValidationError
from consortia.learn import Training
from consortia.learn import dp as learn_dp
from consortia.learn.models import get_model
from consortia.privacy.disclosure import DisclosureControl
from consortia.privacy.dp import add_noise
from consortia.protocol import Requirements, TrainingPlan, algorithm_from_spec
from consortia.resultcodec import decode_result, encode_result

torch = pytest.importorskip("torch")

FEATURES = ("a", "b", "c")
OPEN = Policy(min_cell_count=1, epsilon_budget=100.0)


@pytest.fixture(scope="module")
def sites() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(11)
    out = {}
    for i, n in enumerate((70, 90, 80)):
        x = rng.normal(0.0, 1.5, size=(n, 3))
        lin = x @ np.array([1.2, -0.8, 0.5])
        out[f"s{i}"] = pd.DataFrame(
            {
                "a": x[:, 0],
                "b": x[:, 1],
                "c": x[:, 2],
                "e": (rng.random(n) < 1 / (1 + np.exp(-lin))).astype(int),
            }
        )
    return out


def _dp_training(**kw) -> Training:
    params = {
        "model": "linear",
        "features": FEATURES,
        "task": "binary",
        "label": "e",
        "rounds": 8,
        "lr": 0.5,
        "clip_norm": 1.0,
        "init": "zeros",
        "dp": {"noise_multiplier": 1.5, "delta": 1e-5, "sample_rate": 0.5},
    }
    params.update(kw)
    return Training(**params)


# ------------------------------------------------------------------ accounting


@pytest.mark.parametrize(("z", "q", "steps"), [(1.1, 0.01, 500), (2.0, 0.25, 40), (5.0, 1.0, 10)])
def test_epsilon_is_dp_accountings_subsampled_gaussian(z: float, q: float, steps: int) -> None:
    gaussian = dp_accounting.GaussianDpEvent(z)
    one = gaussian if q == 1.0 else dp_accounting.PoissonSampledDpEvent(q, gaussian)
    acc = rdp.RdpAccountant(list(learn_dp.ORDERS))
    acc.compose(dp_accounting.SelfComposedDpEvent(one, steps))
    expected = acc.get_epsilon(1e-5)
    got = learn_dp.epsilon_spent(noise_multiplier=z, sample_rate=q, steps=steps, delta=1e-5)
    assert got == pytest.approx(expected, rel=1e-12)
    # the study declares the same epsilon (rounds steps: one noisy step per round)
    algo = _dp_training(rounds=steps, dp={"noise_multiplier": z, "delta": 1e-5, "sample_rate": q})
    assert algo.privacy_cost() == (pytest.approx(expected, rel=1e-12), 1e-5)


def test_a_target_epsilon_is_calibrated_to_the_smallest_noise_that_meets_it() -> None:
    algo = _dp_training(rounds=30, dp={"epsilon": 1.5, "delta": 1e-6, "sample_rate": 0.1})
    z = algo.dp["noise_multiplier"]
    eps, delta = algo.privacy_cost()
    assert delta == 1e-6 and eps <= 1.5 and eps == pytest.approx(1.5, abs=1e-3)
    above = learn_dp.epsilon_spent(noise_multiplier=z * 0.99, sample_rate=0.1, steps=30, delta=1e-6)
    assert above > 1.5
    # the spec carries the calibrated multiplier: a node rebuilds the same study
    again = algorithm_from_spec(json.loads(json.dumps(algo.spec())))
    assert dict(again.dp) == dict(algo.dp) and again.privacy_cost() == algo.privacy_cost()


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"local_steps": 2}, "local_steps=1"),
        ({"batch_size": 8}, "batch_size=None"),
        ({"strategy": "scaffold"}, "other than scaffold"),
        ({"task": "cox", "label": None, "time": "T", "event": "E"}, "per-record loss"),
        ({"dp": {"delta": 1e-5}}, "exactly one of noise_multiplier and epsilon"),
        ({"dp": {"noise_multiplier": 1.0, "epsilon": 1.0, "delta": 1e-5}}, "exactly one"),
        ({"dp": {"noise_multiplier": 1.0}}, r"dp\.delta"),
        ({"dp": {"noise_multiplier": 1.0, "delta": 1e-5, "sample_rate": 0}}, "sample_rate"),
        ({"dp": {"noise_multiplier": -1.0, "delta": 1e-5}}, "positive"),
        ({"dp": {"sigma": 1.0, "delta": 1e-5}}, "unknown dp setting"),
    ],
)
def test_bad_dp_options_are_clear_errors(kw, match) -> None:
    with pytest.raises(ValidationError, match=match):
        _dp_training(**kw)


# ------------------------------------------------------------------ mechanism


def _row_gradients(df: pd.DataFrame, w: np.ndarray) -> np.ndarray:
    """Per-row gradients of the logistic loss, weights [a, b, c, bias]."""
    x = np.column_stack([df[list(FEATURES)].to_numpy(), np.ones(len(df))])
    p = 1 / (1 + np.exp(-(x @ w)))
    return (p - df["e"].to_numpy())[:, None] * x


def test_per_sample_clipping_bounds_each_rows_gradient(sites) -> None:
    from consortia.learn._local import clipped_gradient_sum

    df = sites["s1"]
    w = np.array([0.4, -0.3, 0.2, 0.1])
    x, y = df[list(FEATURES)].to_numpy(), df[["e"]].to_numpy(dtype=np.float64)
    spec = get_model("linear")
    hp = spec.validate({})
    clip = 1.0
    grads = _row_gradients(df, w)
    norms = np.linalg.norm(grads, axis=1)
    assert (norms > clip).sum() > 5 and (norms < clip).sum() > 5  # both cases present
    some = np.concatenate([np.flatnonzero(norms > clip)[:8], np.flatnonzero(norms <= clip)[:8]])
    for i in some:  # each row alone: its clipped gradient, never above clip
        g, n_clipped = clipped_gradient_sum(
            spec=spec, hp=hp, task="binary", x=x[i : i + 1], y=y[i : i + 1], weights=w,
            clip_norm=clip,
        )  # fmt: skip
        assert np.linalg.norm(g) <= clip * (1 + 1e-12)
        assert n_clipped == int(norms[i] > clip)
        np.testing.assert_allclose(g, grads[i] * min(1.0, clip / norms[i]), rtol=1e-10, atol=1e-14)
    total, n_clipped = clipped_gradient_sum(
        spec=spec, hp=hp, task="binary", x=x, y=y, weights=w, clip_norm=clip, chunk=17
    )
    expected = (grads * np.minimum(1.0, clip / norms)[:, None]).sum(axis=0)
    np.testing.assert_allclose(total, expected, rtol=1e-10, atol=1e-12)
    assert n_clipped == int((norms > clip).sum())


def test_per_sample_clipping_of_a_hidden_layer_model_matches_one_row_batches(sites) -> None:
    """Oracle: the ordinary autograd gradient of a batch of one row, clipped by hand."""
    from consortia.learn._local import batch_gradient, clipped_gradient_sum

    df = sites["s0"].head(12)
    x, y = df[list(FEATURES)].to_numpy(), df[["e"]].to_numpy(dtype=np.float64)
    spec = get_model("mlp")
    hp = spec.validate({"hidden": [4]})
    w = spec.initial(3, hp, seed=5) * 3.0
    common = {"spec": spec, "hp": hp, "task": "binary", "weights": w}
    rows = [batch_gradient(**common, x=x[i : i + 1], y=y[i : i + 1], batch_size=None, seed=0)
            for i in range(len(df))]  # fmt: skip
    norms = np.linalg.norm(rows, axis=1)
    clip = float(np.median(norms))
    expected = sum(g * min(1.0, clip / n) for g, n in zip(rows, norms, strict=True))
    total, n_clipped = clipped_gradient_sum(**common, x=x, y=y, clip_norm=clip)
    np.testing.assert_allclose(total, expected, rtol=1e-10, atol=1e-12)
    assert n_clipped == int((norms > clip).sum()) >= 5


def test_dp_randomness_is_fresh_not_the_studys_seed(sites) -> None:
    """Same study, same seed, twice: the Poisson samples and the noise differ."""
    algo = _dp_training(rounds=2)
    sim = Simulation(sites, policy=OPEN)
    first, second = sim.run(algo).weights, sim.run(algo).weights
    assert not np.array_equal(first, second)


def test_the_summed_noise_has_the_calibrated_variance(sites) -> None:
    """Each site adds a share of variance sigma**2 / n; the sum carries sigma**2."""
    algo = _dp_training(dp={"noise_multiplier": 0.8, "delta": 1e-5})  # sample_rate 1
    w = np.array([0.4, -0.3, 0.2, 0.1])
    public = {"weights": w, "round": np.array([0.0])}
    contribs = [algo.local("train", public, as_dataset(df, name="d")) for df in sites.values()]
    sigma = 0.8 * (learn_dp.UNITS + math.sqrt(4))
    assert all(c.noise == {"update": pytest.approx(sigma)} for c in contribs)
    # the noise-free sum is the pooled sum of clipped gradients, in units
    exact = sum(np.asarray(c.arrays["update"]) for c in contribs)
    grads = _row_gradients(pd.concat(sites.values()), w)
    clipped = grads * np.minimum(1.0, 1.0 / np.linalg.norm(grads, axis=1))[:, None]
    np.testing.assert_allclose(exact / learn_dp.UNITS, clipped.sum(axis=0), atol=3 / learn_dp.UNITS)
    rng = np.random.default_rng(2026)
    draws = []
    for _ in range(300):
        noisy = [add_noise(c.arrays, c.noise, len(contribs), rng=rng)["update"] for c in contribs]
        draws.append(sum(noisy) - exact)
    noise = np.concatenate(draws)  # 1200 draws of the summed noise
    assert abs(noise.mean()) < 4 * sigma / math.sqrt(noise.size)
    assert noise.var() / sigma**2 == pytest.approx(1.0, abs=0.15)
    # one site's share alone has a third of the variance
    own = contribs[0]
    share = np.concatenate(
        [add_noise(own.arrays, own.noise, 3, rng=rng)["update"] - own.arrays["update"]
         for _ in range(300)]
    )  # fmt: skip
    assert share.var() / (sigma**2 / 3) == pytest.approx(1.0, abs=0.15)


def test_dp_training_runs_states_its_privacy_and_hides_training_metrics(sites, tmp_path) -> None:
    from consortia.learn.export import export_model

    algo = _dp_training(rounds=6, test_fraction=0.25)
    res = Simulation(sites, policy=OPEN).run(algo)
    eps, delta = algo.privacy_cost()
    assert res.privacy["epsilon_spent"] == eps and res.privacy["delta_spent"] == delta
    assert res.privacy["noise_multiplier"] == 1.5 and res.privacy["steps"] == 6
    assert not any(k.startswith("train_") for k in (*res.history, *res.metrics))
    assert res.history["clipped_sites"].sum() == 0  # the clipped count is not released
    assert np.isfinite(res.metrics["test_loss"]) and res.rounds == 6
    assert 0.5 < res.metrics["test_auc"] <= 1.0
    back = decode_result(encode_result(res))
    assert dict(back.privacy) == dict(res.privacy)
    files = export_model(res, tmp_path / "model")
    card = json.loads(files.card.read_text())
    assert card["privacy"]["epsilon_spent"] == pytest.approx(eps)
    assert "record-level" in card["privacy"]["mechanism"]


# ------------------------------------------------------------------ the node's budget


def _with_sql_ledgers(sim: Simulation, folder) -> None:
    """Give every site of ``sim`` a persistent release ledger (a node's SQLite)."""
    from consortia.node.releases import SqlReleaseLedger, create_tables

    for name, worker in sim.workers.items():
        engine = sa.create_engine(f"sqlite:///{folder / name}.db")
        create_tables(engine)
        worker.disclosure = DisclosureControl(SqlReleaseLedger(engine))


def test_a_study_over_the_cap_is_refused_before_compute_and_the_budget_persists(
    sites, tmp_path
) -> None:
    cap = Policy(min_cell_count=1, epsilon_budget=6.0)
    first = _dp_training(rounds=4)
    eps1 = first.privacy_cost()[0]
    assert 1.0 < eps1 < 6.0
    sim = Simulation(sites, policy=cap)
    _with_sql_ledgers(sim, tmp_path)
    sim.run(first)
    for worker in sim.workers.values():
        assert worker.disclosure.ledger.spent("local", "data") == (
            pytest.approx(eps1),
            pytest.approx(1e-5),
        )
    # a restarted node (new objects over the same databases) remembers the spend
    again = Simulation(sites, policy=cap)
    _with_sql_ledgers(again, tmp_path)
    # the refusal comes before anything is computed or even checked against the data:
    # the study names a column that no site has, yet the budget rule answers first
    second = _dp_training(rounds=4, features=("a", "b", "missing"))
    assert second.privacy_cost()[0] + eps1 > 6.0
    with pytest.raises(PolicyError, match="privacy_budget") as err:
        again.run(second)
    assert "epsilon" in str(err.value) and "missing" not in str(err.value)
    for worker in again.workers.values():
        assert worker.disclosure.ledger.spent("local", "data")[0] == pytest.approx(eps1)
    # another researcher has a budget of their own
    other = Simulation(sites, policy=cap, researcher="other")
    _with_sql_ledgers(other, tmp_path)
    other.run(_dp_training(rounds=4))


# ------------------------------------------------------------------ training rules


def test_policy_training_rules_are_validated() -> None:
    for kw, match in [
        ({"max_rounds": -1}, "max_rounds"),
        ({"min_samples_per_round": 1.5}, "min_samples_per_round"),
        ({"require_dp": "yes"}, "require_dp"),
        ({"require_clipping": 1}, "require_clipping"),
    ]:
        with pytest.raises(ValidationError, match=match):
            Policy(**kw)
    p = Policy.from_mapping({"max_rounds": 50, "require_dp": True, "min_samples_per_round": 32})
    assert p.to_mapping()["max_rounds"] == 50 and p.require_dp


@pytest.mark.parametrize(
    ("policy", "plan", "rule"),
    [
        (Policy(max_rounds=5), TrainingPlan(rounds=6), "max_rounds"),
        (Policy(require_dp=True), TrainingPlan(rounds=1, clip_norm=1.0), "require_dp"),
        (Policy(require_clipping=True), TrainingPlan(rounds=1), "require_clipping"),
        (Policy(min_samples_per_round=32), TrainingPlan(rounds=1, batch_rows=16), "min_samples"),
        (Policy(min_samples_per_round=32), TrainingPlan(rounds=1, sample_rate=0.1), "min_samples"),
        (Policy(min_samples_per_round=200), TrainingPlan(rounds=1), "min_samples"),
    ],
)
def test_training_rules_refuse_a_plan(policy: Policy, plan: TrainingPlan, rule: str) -> None:
    with pytest.raises(PolicyError, match=rule):
        policy.check_requirements(Requirements(training=plan), n_rows=100)
    # a plan within the rules passes
    policy.check_requirements(
        Requirements(training=TrainingPlan(rounds=5, clip_norm=1.0, dp=True)), n_rows=1000
    )


def test_the_node_refuses_a_training_study_against_its_rules_before_it_runs(sites) -> None:
    plain = Training(model="linear", features=("a", "b", "missing"), task="binary", label="e")
    with pytest.raises(PolicyError, match="require_dp"):  # before the missing column
        Simulation(sites, policy=Policy(min_cell_count=1, require_dp=True)).run(plain)
    rules = Policy(min_cell_count=1, max_rounds=3, epsilon_budget=100.0)
    with pytest.raises(PolicyError, match="max_rounds"):
        Simulation(sites, policy=rules).run(_dp_training(rounds=4))
    tiny = Policy(min_cell_count=1, min_samples_per_round=50, epsilon_budget=100.0)
    with pytest.raises(PolicyError, match="min_samples_per_round"):  # 0.5 * 70 rows < 50
        Simulation(sites, policy=tiny).run(_dp_training(rounds=2))


def test_training_rules_in_the_node_toml(tmp_path) -> None:
    from consortia.node import load_config

    head = "[node]\nname = 'a'\nhub = 'http://h'\ndata_dir = 's'\n[datasets.d]\npath = 'x.csv'\n"
    rules = (
        "[datasets.d.policy]\nmin_samples_per_round = 64\nrequire_clipping = true\n"
        "require_dp = true\nmax_rounds = 200\nepsilon_budget = 8.0\n"
    )
    path = tmp_path / "node.toml"
    path.write_text(head + rules)
    (ds,) = load_config(path).datasets
    assert ds.policy == Policy(
        min_samples_per_round=64,
        require_clipping=True,
        require_dp=True,
        max_rounds=200,
        epsilon_budget=8.0,
    )
    path.write_text(head + "[datasets.d.policy]\nrequire_dp = 'yes'\n")
    with pytest.raises(ValidationError, match="require_dp"):
        load_config(path)

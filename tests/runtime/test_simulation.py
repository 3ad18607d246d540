import numpy as np
import pandas as pd
import pytest

from consortia import Dataset, Policy, PolicyError, Simulation
from consortia.errors import SchemaError, StudyFailed, ValidationError
from consortia.privacy import Layout, SecureAggregator
from consortia.stats import Mean


def test_mean_matches_pooled(toy_sites):
    res = Simulation(toy_sites).run(Mean(columns=("x1", "y")))
    pooled = pd.concat(toy_sites.values())
    np.testing.assert_allclose(res.mean, pooled[["x1", "y"]].mean().to_numpy(), rtol=1e-8)
    assert res.n == len(pooled)


class RecordingAggregator(SecureAggregator):
    seen: list = []

    def add(self, masked):
        RecordingAggregator.seen.append(masked.data.copy())
        super().add(masked)


def test_aggregator_never_holds_an_unmasked_site_array(toy_sites, monkeypatch):
    RecordingAggregator.seen = []
    monkeypatch.setattr(Simulation, "aggregator_cls", RecordingAggregator)
    sim = Simulation(toy_sites)
    algo = Mean(columns=("x1", "x2"))
    sim.run(algo)
    assert len(RecordingAggregator.seen) == len(toy_sites)
    n = len(toy_sites)
    for df in toy_sites.values():
        # what the site would have sent without masking: its encoded contribution
        arrays = algo.local("moments", {}, Dataset(df)).arrays
        plain = sim.precision.encode(Layout.of(arrays).pack(arrays), n_parties=n)
        for seen in RecordingAggregator.seen:
            assert seen.shape == plain.shape
            assert not np.any(seen == plain)  # not even one word in the clear


def test_policy_breach_releases_nothing(toy_sites, monkeypatch):
    RecordingAggregator.seen = []
    monkeypatch.setattr(Simulation, "aggregator_cls", RecordingAggregator)
    policies = {name: Policy() for name in toy_sites}
    policies["site2"] = Policy(min_cohort_size=100)
    sim = Simulation(toy_sites, policy=policies)
    with pytest.raises(PolicyError, match="^policy rule 'min_cohort_size'") as info:
        sim.run(Mean(columns=("x1",)))
    # the rule depends on the data: the researcher learns the rule, not the site
    assert info.value.rule == "min_cohort_size" and info.value.site is None
    # sites are asked in order: the two before site2 sent masked arrays, nothing was unmasked
    assert len(RecordingAggregator.seen) == 2


def test_disallowed_algorithm_refused(toy_sites):
    sim = Simulation(toy_sites, policy=Policy(allowed_algorithms=("survival.*",)))
    with pytest.raises(PolicyError, match="allowed_algorithms"):
        sim.run(Mean(columns=("x1",)))


def test_dropout_reruns_among_survivors(toy_sites):
    sim = Simulation(toy_sites, fail=lambda site, r, a: site == "site1" and a == 0)
    res = sim.run(Mean(columns=("y",)))
    survivors = [df for k, df in toy_sites.items() if k != "site1"]
    np.testing.assert_allclose(res.mean, pd.concat(survivors)[["y"]].mean().to_numpy(), rtol=1e-8)
    assert sim.last_study["attempts"] == 2 and "site1" not in sim.last_study["sites"]


def test_dropout_below_min_sites_fails_clearly(toy_sites):
    sim = Simulation(toy_sites, fail=lambda site, r, a: site in ("site1", "site2"))
    with pytest.raises(PolicyError, match="min_sites"):
        sim.run(Mean(columns=("y",)))
    sim = Simulation(toy_sites, fail=lambda site, r, a: True)
    with pytest.raises(StudyFailed, match="every site dropped out"):
        sim.run(Mean(columns=("y",)))


def test_bad_input_errors(toy_sites):
    with pytest.raises(ValidationError, match="at least one site"):
        Simulation({})
    with pytest.raises(ValidationError, match="DataFrame or a consortia Dataset"):
        Simulation({"a": [1, 2, 3]})
    with pytest.raises(ValidationError, match="needs a consortia Algorithm"):
        Simulation(toy_sites).run("stats.mean")
    with pytest.raises(SchemaError, match=r"column\(s\) \['nope'\] not found"):
        Simulation(toy_sites).run(Mean(columns=("nope",)))
    bad = {k: v.assign(x1=v.x1.where(v.index != 3)) for k, v in toy_sites.items()}
    with pytest.raises(SchemaError, match="column 'x1' contains missing"):
        Simulation(bad).run(Mean(columns=("x1",)))


def test_a_site_lost_between_its_vector_and_its_reveal_is_recovered(toy_sites):
    """Liveness at reveal: the survivors' shares rebuild the lost site's seed.

    The lost site's vector is in the sum, so the result is the pooled one over
    every site (not only the survivors), exactly as without the loss.
    """
    full = Simulation(toy_sites).run(Mean(columns=("y",)))
    sim = Simulation(toy_sites, fail_at_reveal=lambda site, r, a: site == "site3" and r == 0)
    res = sim.run(Mean(columns=("y",)))
    pooled = pd.concat(toy_sites.values())[["y"]].mean().to_numpy()
    np.testing.assert_allclose(res.mean, pooled, rtol=1e-8)
    assert res.mean.tobytes() == full.mean.tobytes()  # bit-identical to no loss
    assert sim.last_study["attempts"] == 1 and "site3" not in sim.last_study["sites"]


def test_a_loss_at_reveal_without_recovery_fails_the_study(toy_sites):
    sim = Simulation(toy_sites, recovery=0, fail_at_reveal=lambda site, r, a: site == "site3")
    with pytest.raises(StudyFailed, match=r"\['site3'\] did not reveal"):
        sim.run(Mean(columns=("y",)))

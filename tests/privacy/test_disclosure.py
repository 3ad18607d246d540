"""Attacks on disclosure control, each played against the same code the nodes run.

Every test first plays the attack a curious researcher (or colluding researchers)
would, through the public API of :class:`consortia.Simulation`, and asserts that it
is refused by the named rule; then that the honest variant still runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from consortia import Policy, Simulation
from consortia.errors import PolicyError
from consortia.privacy.disclosure import (
    DisclosureControl,
    MemoryReleaseLedger,
    content_digest,
    query_digest,
)
from consortia.protocol import Algorithm, Contribution, Round, register
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task
from consortia.stats import Mean


def _sites(n_sites: int = 4, n: int = 60, seed: int = 0) -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n_sites):
        df = pd.DataFrame(
            {
                "pid": [f"s{i}-{k}" for k in range(n)],
                "age": rng.normal(60, 10, n),
                "x2": rng.normal(0, 1, n),
            }
        )
        out[f"site{i}"] = df
    return out


class _Federation:
    """Four sites whose workers persist across studies (as nodes do), any subset per study."""

    def __init__(self, sites: dict[str, pd.DataFrame], policy: Policy | None = None) -> None:
        self.sim = Simulation(sites, policy=policy)

    def run(self, algo: Algorithm, names: list[str] | None = None, researcher: str = "eve"):
        sim = self.sim
        keep = {n: w for n, w in sim.workers.items() if names is None or n in names}
        saved, sim.workers = sim.workers, keep
        sim.researcher = researcher
        try:
            return sim.run(algo)
        finally:
            sim.workers = saved


def test_participant_differencing_is_refused():
    fed = _Federation(_sites())
    names = list(fed.sim.workers)
    first = fed.run(Mean(columns=("age",)), names[:3])
    assert first.n == 180
    # the same query over another 3 of the 4 sites would reveal site3 - site2 exactly
    with pytest.raises(PolicyError, match="repeated_query") as err:
        fed.run(Mean(columns=("age",)), [names[0], names[1], names[3]])
    assert err.value.site in names  # not data-dependent: the site may be named
    # a spec that differs only in form but releases the same bytes is caught by content
    with pytest.raises(PolicyError, match="repeated_query"):
        fed.run(Mean(columns=("age",), dropna=True), names)
    # the same query over the same sites is a repeat that reveals nothing new
    assert fed.run(Mean(columns=("age",)), names[:3]).n == 180


def test_cohort_differencing_is_refused_across_researchers():
    sites = _sites()
    sites["site0"].loc[7, "x2"] = np.nan  # one patient lacks x2
    fed = _Federation(sites)
    full = fed.run(Mean(columns=("age",), dropna=True), researcher="alice")
    assert full.n == 240
    # one patient fewer: the difference of the two sums is that patient's age
    with pytest.raises(PolicyError, match="cohort_difference") as err:
        fed.run(Mean(columns=("age", "x2"), dropna=True), researcher="bob")
    assert err.value.site is None  # data-dependent: the site is not named
    assert "patient" in str(err.value) and "age" not in str(err.value).split("refused")[0]


def test_cohorts_that_differ_by_at_least_min_cohort_size_are_fine():
    sites = _sites()
    sites["site0"].loc[:11, "x2"] = np.nan  # 12 patients
    fed = _Federation(sites)
    assert fed.run(Mean(columns=("age",), dropna=True)).n == 240
    assert fed.run(Mean(columns=("age", "x2"), dropna=True)).n == 228


def test_refusals_count_against_a_limit():
    sites = _sites()
    sites["site0"].loc[3, "x2"] = np.nan
    fed = _Federation(sites, policy=Policy(max_refusals=2))
    fed.run(Mean(columns=("age",), dropna=True))
    for _ in range(2):
        with pytest.raises(PolicyError, match="cohort_difference"):
            fed.run(Mean(columns=("age", "x2"), dropna=True))
    # the limit is reached: even an innocent study of that researcher is refused
    with pytest.raises(PolicyError, match="max_refusals"):
        fed.run(Mean(columns=("age",), dropna=True))
    # another researcher is not affected
    assert fed.run(Mean(columns=("age",), dropna=True), researcher="carol").n == 240


def test_studies_per_day_are_limited():
    fed = _Federation(_sites(), policy=Policy(max_studies_per_day=3))
    for _ in range(3):
        fed.run(Mean(columns=("age",)))
    with pytest.raises(PolicyError, match="max_studies_per_day"):
        fed.run(Mean(columns=("age",)))


@register
class _NoisyCount(Algorithm):
    """A count with declared DP noise (test algorithm)."""

    name = "tests.noisy_count"

    def __init__(self, epsilon: float = 1.0) -> None:
        self.epsilon = epsilon

    def spec(self):
        return {"name": self.name, "params": {"epsilon": self.epsilon}}

    def privacy_cost(self):
        return (self.epsilon, 1e-6)

    def coordinate(self):
        sums = yield Round("count")
        return float(sums["n"][0])

    def local(self, step, public, data):
        return Contribution({"n": [len(data.frame)]}, cohort=len(data.frame), noise={"n": 50.0})


def test_privacy_budget_is_charged_once_per_study_and_enforced():
    fed = _Federation(_sites(), policy=Policy(epsilon_budget=2.5))
    values = [fed.run(_NoisyCount(epsilon=1.0)) for _ in range(2)]
    assert all(v != 240 for v in values) or values[0] != values[1]  # noisy
    worker = fed.sim.workers["site0"]
    left = worker.disclosure.remaining(worker.policy_for("data"), "eve", "data")
    assert left["epsilon_spent"] == pytest.approx(2.0)
    assert left["epsilon_remaining"] == pytest.approx(0.5)
    with pytest.raises(PolicyError, match="privacy_budget"):
        fed.run(_NoisyCount(epsilon=1.0))
    assert fed.run(_NoisyCount(epsilon=0.5)) is not None  # exactly the rest
    with pytest.raises(PolicyError, match="privacy_budget"):
        fed.run(_NoisyCount(epsilon=0.01))


def test_noise_is_added_at_every_site_before_masking():
    fed = _Federation(_sites(), policy=Policy(epsilon_budget=1e6))
    values = np.array([fed.run(_NoisyCount(epsilon=1.0)) for _ in range(40)])
    # 4 shares of variance 50**2/4: the sum has sd 50 around the true 240
    assert abs(values.mean() - 240) < 4 * 50 / np.sqrt(values.size)
    assert 25 < values.std() < 80


def test_untrusted_peers_do_not_count_towards_min_sites():
    """A hub that enrols fake sites cannot make a victim contribute among them."""
    sites = _sites(3)
    victim = SiteWorker("victim", {"data": sites["site0"]}, policies=Policy(min_sites=3))
    fakes = [SiteWorker(f"fake{i}", {"data": sites["site1"] * 0}) for i in range(2)]
    victim.set_trusted({})  # the victim's owner pinned nobody
    task = Task(
        study_id="s1",
        round_index=0,
        attempt=0,
        algorithm=Mean(columns=("age",)).spec(),
        dataset="data",
        step="moments",
        public={},
        participants=(victim.peer_key, *(f.peer_key for f in fakes)),
    )
    with pytest.raises(PolicyError, match="min_sites") as err:
        victim.contribute(task)
    assert err.value.site == "victim"
    # once the owner pins the two peers they count
    victim.set_trusted({f.name: f.identity.identity_public for f in fakes})
    assert victim.contribute(task) is not None


def test_digests_are_canonical():
    a = query_digest({"name": "x", "params": {"b": 1, "a": 2}}, "d")
    b = query_digest({"params": {"a": 2, "b": 1}, "name": "x"}, "d")
    assert a == b and a != query_digest({"name": "x", "params": {"a": 2, "b": 1}}, "e")
    assert content_digest({"n": np.array([1.0])}) != content_digest({"n": np.array([2.0])})


def test_ledger_is_shared_by_the_rules():
    ledger = MemoryReleaseLedger()
    control = DisclosureControl(ledger)
    ids = np.arange(20, dtype=np.uint64)
    kw = {"dataset": "d", "researcher": "r", "query": "q", "content": "c"}
    d = control.check_release(policy=Policy(), dataset="d", cohort=ids)
    control.released(study_id="1", participants=frozenset("ab"), cohort=d, cost=(0, 0), **kw)
    control.before_reveal("1", 0, 0)  # the sum of study 1 becomes computable
    d2 = control.check_release(policy=Policy(), dataset="d", cohort=ids)
    control.released(study_id="2", participants=frozenset("abc"), cohort=d2, cost=(0, 0), **kw)
    with pytest.raises(PolicyError, match="repeated_query"):  # judged when summable
        control.before_reveal("2", 0, 0)
    with pytest.raises(PolicyError, match="cohort_difference"):
        control.check_release(policy=Policy(), dataset="d", cohort=ids[:-1])


def test_histograms_with_shifted_edges_are_refused_on_the_same_cohort():
    """Two exact histograms whose edges differ would difference into an unjudged cell."""
    from consortia.stats import Histogram

    fed = _Federation(_sites(), policy=Policy(min_cell_count=1))
    fed.run(Histogram(column="age", edges=(0.0, 60.0, 200.0)))
    with pytest.raises(PolicyError, match="grid_differencing") as err:
        fed.run(Histogram(column="age", edges=(0.0, 60.5, 200.0)))
    assert "[0, 60, 200]" in str(err.value)  # the released grid is public: say it
    # a coarsening of the released edges reveals nothing new
    assert fed.run(Histogram(column="age", edges=(0.0, 200.0))).n == 240


def test_a_dropout_re_run_is_not_participant_differencing():
    """Attempts that a site dropped out of are never revealed: they do not count."""
    sites = _sites()
    first = Simulation(sites, fail=lambda site, r, a: site == "site3" and a == 0)
    # the same Simulation object keeps each site's memory across studies
    assert first.run(Mean(columns=("age",))).n == 180  # site3 dropped: re-run among 3
    assert first.run(Mean(columns=("age",))).n == 180  # the same again: same 3 sites


def test_a_hub_faking_a_dropout_meets_the_refusal_at_reveal():
    sites = _sites()
    sim = Simulation(sites)
    assert sim.run(Mean(columns=("age",))).n == 240
    sim.fail = lambda site, r, a: site == "site3"  # the hub "loses" site3 in the next study
    with pytest.raises(PolicyError, match="repeated_query"):
        sim.run(Mean(columns=("age",)))


def test_one_point_grid_binary_search_gets_one_answer_at_most():
    """The refusal oracle of issue 7: binary-search a follow-up time with one-point grids."""
    from consortia.survival import KaplanMeier

    rng = np.random.default_rng(4)
    sites = {
        f"s{i}": pd.DataFrame({"T": rng.integers(1, 2000, 80), "E": rng.integers(0, 2, 80)})
        for i in range(3)
    }
    sim = Simulation(sites, policy=Policy(min_cell_count=1))
    lo, hi, answered, refusals = 0.0, 4000.0, 0, []
    for _ in range(12):
        g = (lo + hi) / 2
        try:
            sim.run(KaplanMeier(time="T", event="E", time_grid=(g,)))
            answered += 1
            lo = g
        except PolicyError as err:
            refusals.append(err)
            hi = g
    assert answered == 1  # every later grid would difference with the first
    assert {e.rule for e in refusals} == {"grid_differencing"}
    # a time beyond the grid is censored at its end, never refused: no oracle left
    assert all("beyond" not in str(e) for e in refusals)


def test_noisy_releases_meet_the_same_memory_rules():
    """DP statistics are releases too: other sites, or a cohort one patient smaller."""
    from consortia.stats import DPCount, DPMean
    from consortia.survival import DPKaplanMeier

    sites = _sites()
    sites["site0"].loc[3, "x2"] = np.nan
    fed = _Federation(sites, policy=Policy(epsilon_budget=100.0))
    names = list(fed.sim.workers)
    fed.run(DPCount(epsilon=1.0, delta=1e-6), names[:3])
    with pytest.raises(PolicyError, match="repeated_query"):
        fed.run(DPCount(epsilon=1.0, delta=1e-6), names[1:])
    bounds = {"lower": (0.0,), "upper": (120.0,), "epsilon": 1.0, "delta": 1e-6}
    fed.run(DPMean(columns=("age",), dropna=True, **bounds))
    with pytest.raises(PolicyError, match="cohort_difference"):
        fed.run(
            DPMean(
                columns=("age", "x2"),
                dropna=True,
                **{**bounds, "lower": (0.0, -9.0), "upper": (120.0, 9.0)},
            )
        )
    # a noisy curve on any grid: no exact cell to difference, so no grid rule, no oracle
    km = {"time": "age", "event": "event", "epsilon": 1.0, "delta": 1e-6}
    for df in sites.values():
        df["event"] = 1
    fed = _Federation(sites, policy=Policy(epsilon_budget=100.0))
    fed.run(DPKaplanMeier(time_grid=(50.0, 60.0, 70.0), **km))
    fed.run(DPKaplanMeier(time_grid=(55.0,), **km))


def test_content_digest_hashes_the_arrays_bytes_in_c_order():
    import hashlib

    arrays = {"b": np.arange(6.0).reshape(2, 3).T, "a": np.float64(2.5), "c": np.arange(4)}
    h = hashlib.sha256()
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name], dtype=np.float64)
        h.update(name.encode() + b"\x00" + repr(arr.shape).encode() + b"\x00" + arr.tobytes())
    assert content_digest(arrays) == h.hexdigest()

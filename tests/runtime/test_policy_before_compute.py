"""Policy before compute: what a rule can decide from the task is decided before local().

And a local step that fails (out of memory, a defect) is a typed error that names the
step and the exception's class, never its message; the site and the simulation live on.
"""

from __future__ import annotations

import tracemalloc
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from consortia import Policy, PolicyError, Simulation
from consortia.errors import LocalStepError, SchemaError, ValidationError
from consortia.protocol import Algorithm, Contribution, Requirements, Round, register
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task
from consortia.stats import LinearRegression, Mean
from consortia.survival import CoxPH

N_GENES = 7_399
SECRET = 81.237  # a "patient value" an exception message might carry


def _omics_sites(sizes=(58, 61, 63)) -> dict[str, pd.DataFrame]:
    """Sites of ~60 patients with 7,399 gene covariates, a time and an event."""
    rng = np.random.default_rng(8)
    genes = [f"g{j}" for j in range(N_GENES)]
    sites = {}
    for i, n in enumerate(sizes):
        frame = pd.DataFrame(rng.normal(size=(n, N_GENES)), columns=genes)
        surv = pd.DataFrame(
            {"T": rng.integers(1, 400, n).astype(float), "E": rng.integers(0, 2, n)}
        )
        sites[f"site{i}"] = pd.concat([surv, frame], axis=1)
    return sites


@pytest.fixture
def local_calls(monkeypatch):
    """Record every CoxPH.local call; a wide model is never really computed (GiBs)."""
    calls: list[tuple[str, int]] = []
    real = CoxPH.local

    def counting(self, step, public, data):
        calls.append((step, len(self.covariates)))
        if len(self.covariates) > 50:
            raise AssertionError("local() ran for a model the policy must refuse")
        return real(self, step, public, data)

    monkeypatch.setattr(CoxPH, "local", counting)
    return calls


def test_7399_gene_cox_is_refused_before_local_runs(local_calls):
    sites = _omics_sites()
    covs = tuple(sites["site0"].columns[2:])
    assert len(covs) == N_GENES
    algo = CoxPH(time="T", event="E", covariates=covs, stratify_by_site=True)
    sim = Simulation(sites)
    tracemalloc.start()
    try:
        with pytest.raises(PolicyError, match="max_params_per_sample") as err:
            sim.run(algo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.value.rule == "max_params_per_sample" and err.value.site is None
    assert local_calls == []  # refused at the first round, before anything was computed
    assert peak < 64 * 2**20  # not one array of the model (12.4 GiB before the fix)
    # the counting hook is live: a model the sites can support is computed as before
    small = CoxPH(time="T", event="E", covariates=("g0", "g1"), stratify_by_site=True)
    res = sim.run(small)
    assert res.converged and {s for s, _ in local_calls} == {"summary", "newton"}


def test_pooled_and_planned_cox_are_refused_before_local_too(local_calls):
    sites = _omics_sites(sizes=(30, 31, 32))
    covs = tuple(sites["site0"].columns[2:])
    for algo in (
        CoxPH(time="T", event="E", covariates=covs, time_grid=(100.0, 200.0, 400.0)),
        CoxPH(time="T", event="E", covariates=covs, horizon=400.0),  # a DP plan round first
    ):
        sim = Simulation(sites)
        with pytest.raises(PolicyError, match="max_params_per_sample"):
            sim.run(algo)
        # the planned model's privacy cost was not charged for a refused study
        for w in sim.workers.values():
            assert w.disclosure.ledger.spent("local", "data") == (0.0, 0.0)
    assert local_calls == []


def test_declared_parameters_are_judged_against_the_rows_an_upper_bound(toy_sites):
    # 3 parameters on 40 rows pass at 0.33 per patient; the post-compute check still runs
    sim = Simulation(toy_sites)
    sim.run(LinearRegression(outcome="y", covariates=("x1", "x2")))
    # the exact cohort (after dropping missing rows) is still judged after local()
    for df in toy_sites.values():
        df.loc[df.index[:30], "x2"] = np.nan
    with pytest.raises(PolicyError, match="max_params_per_sample"):
        Simulation(toy_sites, policy=Policy(max_params_per_sample=0.2)).run(
            LinearRegression(outcome="y", covariates=("x1", "x2"), dropna=True)
        )


def test_small_dataset_and_missing_columns_are_refused_before_local(toy_sites, monkeypatch):
    calls: list[tuple[str | None, str]] = []
    real = LinearRegression.local

    def counting(self, step, public, data):
        calls.append((data.site, step))
        return real(self, step, public, data)

    monkeypatch.setattr(LinearRegression, "local", counting)
    sites = dict(toy_sites)
    sites["site1"] = sites["site1"].iloc[:8]
    with pytest.raises(PolicyError, match="min_cohort_size") as err:
        Simulation(sites).run(LinearRegression(outcome="y", covariates=("x1",)))
    assert err.value.site is None and "8" not in str(err.value)
    assert calls == [("site0", "moments")]  # sites answer in order: site1 computed nothing
    calls.clear()
    missing = tuple(f"gene{j}" for j in range(30))
    with pytest.raises(SchemaError, match=r"\['gene0', .*'gene19'\] and 10 more not found"):
        Simulation(toy_sites, policy=Policy(max_params_per_sample=10)).run(
            LinearRegression(outcome="y", covariates=("x1", *missing))
        )
    assert calls == []


def test_requirements_validate():
    assert Requirements(n_parameters=np.int64(3), columns="a") == Requirements(3, ("a",))
    for bad in ({"n_parameters": -1}, {"n_parameters": 1.5}, {"n_parameters": True}):
        with pytest.raises(ValidationError, match="n_parameters"):
            Requirements(**bad)
    with pytest.raises(ValidationError, match="columns"):
        Requirements(columns=("a", ""))
    assert Mean(columns=("x",)).requirements("moments") is None  # default: not declared
    cox = CoxPH(
        time="T",
        event="E",
        covariates=("a", "b"),
        strata="s",
        strata_levels=(0, 1),
        weights="w",
        time_grid=(1.0, 2.0),
    )
    assert cox.requirements("summary") == Requirements(2, ("T", "E", "a", "b", "w", "s"))
    assert cox.requirements("plan") == Requirements(2, ("T", "E"))
    assert LinearRegression(outcome="y", covariates=("a",)).requirements("gram").n_parameters == 2


# --------------------------------------------------------------------------- failures


@register
@dataclass(frozen=True, kw_only=True)
class _Failing(Algorithm):
    """A mean whose local step fails as asked (test algorithm)."""

    name = "tests.failing_local"
    fail: str = "memory"

    def coordinate(self):
        sums = yield Round("sum")
        return float(sums["s"][0])

    def local(self, step, public, data):
        n = len(data.frame)
        if self.fail == "memory":  # a real numpy out-of-memory error, its shape from the data
            np.empty((n * 2**30, 1000 + n))  # ~350 TiB: beyond any address space
        if self.fail == "value":
            raise ValueError(f"patient 17 has value {SECRET}")
        if self.fail == "requirements":
            return Contribution({"s": [0.0]}, cohort=n)
        return Contribution({"s": [float(data.frame["x1"].sum())]}, cohort=n)

    def requirements(self, step):
        if self.fail == "requirements":
            raise KeyError(f"patient {SECRET}")
        return None


@pytest.mark.parametrize(
    ("fail", "cause"),
    [("memory", "MemoryError"), ("value", "ValueError"), ("requirements", "KeyError")],
)
def test_a_failing_local_step_is_a_typed_error_and_the_simulation_lives_on(toy_sites, fail, cause):
    sim = Simulation(toy_sites)
    with pytest.raises(LocalStepError) as err:
        sim.run(_Failing(fail=fail))
    assert err.value.cause == cause and err.value.step == "sum"
    text = str(err.value)
    assert cause in text and "'sum'" in text and "tests.failing_local" in text
    # never the exception's message: not the value, not numpy's "Unable to allocate ..."
    assert str(SECRET) not in text and "allocate" not in text and "patient" not in text
    assert "TiB" not in text and str(40 * 2**30) not in text
    # nothing chained: no traceback of the original error (nor its frames) is kept
    assert err.value.__cause__ is None and err.value.__context__ is None
    # the same simulation (its sites, their ledgers) runs the next study
    pooled = pd.concat(toy_sites.values())
    assert sim.run(_Failing(fail="none")) == pytest.approx(pooled["x1"].sum(), rel=1e-9)
    assert sim.run(Mean(columns=("x1",))).n == len(pooled)


def test_site_worker_reports_out_of_memory_and_answers_the_next_task(toy_sites):
    workers = {
        name: SiteWorker(name, {"data": df}, policies=Policy())
        for name, df in list(toy_sites.items())[:3]
    }
    trusted = {n: w.identity.identity_public for n, w in workers.items()}
    for w in workers.values():
        w.set_trusted(trusted)
    peers = tuple(w.peer_key for w in workers.values())

    def task(study: str, algo: Algorithm) -> Task:
        return Task(study, 0, 0, algo.spec(), "data", "sum", {}, peers)

    site = workers["site0"]
    with pytest.raises(LocalStepError, match=r"'sum' of 'tests.failing_local'.*\(MemoryError\)"):
        site.contribute(task("s1", _Failing(fail="memory")))
    assert site.disclosure.ledger.refusals("local", "data") == 0  # not a policy refusal
    masked = site.contribute(task("s2", _Failing(fail="none")))
    assert masked.data.size > 0

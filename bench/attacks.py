"""Play every attack of issue 7 against a real hub and 4 node processes; report.

    python bench/attacks.py [--workdir DIR]

A hub and four nodes run as processes on 127.0.0.1 under the DEFAULT node policy
(``consortia.Policy()``), the owners having pinned each other's identities as
docs/deployment.md says.  The attacker is a researcher with a token (and, for the
fake-site attack, the hub's operator); every attack goes through the public API
only (``consortia.connect``), except the malicious hub's re-run of a round, which is
played in process against the nodes' own code (the hub is the attacker there, so
it is given the hub's full powers over the protocol).

An attack *succeeds* when it obtains what it was after (one site's exact sum, one
patient's exact value, a site named by a data-dependent refusal, ...).  Then the
demo's honest studies run on the same federation.  The last line reads

    attacks played=<int> succeeded=<int> honest_studies_ok=<int>/<int>

(targets: succeeded=0 and every honest study ok).  This is a report, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from consortia import Policy, connect
from consortia.demo.data import synthetic_data
from consortia.demo.studies import studies_for
from consortia.errors import ConsortiaError, PolicyError, SecureAggregationError
from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeConfig, NodeProcess
from consortia.node.identity import mutual_pins
from consortia.privacy.disclosure import DATA_DEPENDENT_RULES
from consortia.privacy.secagg import SecureAggregator
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task
from consortia.stats import DPCount, Mean
from consortia.survival import Concordance, CoxPH, KaplanMeier, LogRank

N_NODES = 4
DATASET = "cohort"


def _data() -> tuple[dict[str, pd.DataFrame], dict]:
    demo = synthetic_data(n_sites=N_NODES, seed=3)
    sites = {k: v.copy() for k, v in demo.sites.items()}
    first = next(iter(sites))
    sites[first]["x2"] = np.random.default_rng(0).normal(size=len(sites[first]))
    for name, frame in sites.items():
        if name != first:
            frame["x2"] = np.random.default_rng(1).normal(size=len(frame))
    sites[first].loc[sites[first].index[5], "x2"] = np.nan  # one patient lacks x2
    covariates = {**demo.schema.get("covariates", {}), "x2": {"type": "float", "nullable": True}}
    return sites, demo.schema | {"covariates": covariates}


class Cluster:
    """Hub + nodes as processes (stopped on exit)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub = HubProcess(root / "hub.sqlite", node_timeout=10.0, log=root / "hub.log")
        self.nodes: dict[str, NodeProcess] = {}

    def start(self, sites: dict[str, pd.DataFrame], schema: dict) -> None:
        self.hub.start(60)
        pins = mutual_pins({n: self.root / n for n in sites})
        for name, frame in sites.items():
            self.add_node(name, frame, schema, Policy(), peers=pins[name])
        for node in self.nodes.values():
            node.wait_ready(60)

    def add_node(
        self, name: str, frame: pd.DataFrame, schema: dict | None, policy: Policy, **kw
    ) -> NodeProcess:
        csv = self.root / f"{name}.csv"
        frame.to_csv(csv, index=False)
        cfg = NodeConfig(
            name=name,
            hub=self.hub.url,
            data_dir=self.root / name,
            datasets=(DatasetConfig(name=DATASET, path=csv, schema=schema, policy=policy),),
            poll_wait=5,
            **kw,
        )
        token = self.hub.create_token("enrolment", name)
        node = NodeProcess(cfg.write(self.root / f"{name}.toml"), enrol_token=token).start()
        self.nodes[name] = node
        return node

    def stop(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop(timeout=5)
        self.hub.stop(timeout=5)


def _answered(fed, algo, **kw) -> tuple[object | None, str | None]:
    """Run a study; (result, None) if answered, (None, refusal text) if refused."""
    try:
        return fed.run(algo, dataset=DATASET, timeout=120, **kw), None
    except PolicyError as err:
        return None, str(err)
    except ConsortiaError as err:
        return None, f"failed: {err}"


# ---------------------------------------------------------------------- attacks


def participant_differencing(fed, names, sites) -> tuple[bool, str]:
    answers = []
    for left_out in names:
        res, _ = _answered(fed, Mean(columns=("age",)), nodes=[n for n in names if n != left_out])
        if res is not None:
            answers.append(res)
    # two answers over sets that differ by one site give that site's exact n and sum
    return len(answers) >= 2, f"{len(answers)} of {len(names)} subsets answered"


def cohort_differencing(fed, names, sites) -> tuple[bool, str]:
    a, _ = _answered(fed, Mean(columns=("age",), dropna=True))
    b, why = _answered(fed, Mean(columns=("age", "x2"), dropna=True))
    ok = a is not None and b is not None and 0 < a.n - b.n < Policy().min_cohort_size
    return ok, "second study " + ("answered" if b is not None else f"refused ({_rule(why)})")


def refusal_oracle(fed, names, sites) -> tuple[bool, str]:
    """Binary search follow-up times with one-point Kaplan-Meier grids (19 queries)."""
    pooled = pd.concat(sites.values())
    t = pooled["time"].to_numpy(float)
    e = pooled["event"].to_numpy(bool)
    lo, hi = 0.0, float(t.max()) * 2
    named, grids = 0, []
    for _ in range(19):
        g = (lo + hi) / 2
        res, why = _answered(fed, KaplanMeier(time="time", event="event", time_grid=(g,)))
        if (
            why is not None
            and any(f"site {n!r}" in why for n in names)
            and (_rule(why) in DATA_DEPENDENT_RULES)
        ):
            named += 1
        if res is None:
            hi = g
        else:
            grids.append(g)
            lo = g
    # success: a data-dependent refusal named a site, or two exact answers whose grids
    # difference into an interval holding 1 to k-1 events of the pooled cohort
    k = Policy().min_cell_count
    small = any(
        0 < int(((t > a) & (t <= b) & e).sum()) < k
        for i, a in enumerate(sorted(grids))
        for b in sorted(grids)[i + 1 :]
    )
    detail = f"{len(grids)} answered, {named} data-dependent refusals named a site"
    return named > 0 or small, detail


def fake_sites(fed, names, sites, cluster: Cluster) -> tuple[bool, str]:
    victim = names[0]
    for i in range(2):
        frame = sites[victim].copy()
        for c in frame.columns:
            if pd.api.types.is_numeric_dtype(frame[c]):
                frame[c] = 0
        cluster.add_node(
            f"fake{i}", frame, None, Policy(min_sites=1), trust_on_first_use=True
        ).wait_ready(60)
    res, why = _answered(fed, Mean(columns=("age",)), nodes=[victim, "fake0", "fake1"])
    return res is not None, "answered" if res is not None else f"refused ({_rule(why)})"


def per_site_slots(fed, names, sites) -> tuple[bool, str]:
    algo = Concordance(
        time="time",
        event="event",
        covariates=("age",),
        coefficients=(0.03,),
        time_grid=tuple(float(x) for x in range(0, 3000, 30)),
        sites=tuple(names),
    )
    res, why = _answered(fed, algo, nodes=names)
    return res is not None, "answered" if res is not None else f"refused ({_rule(why)})"


def repeated_queries(fed, names, sites) -> tuple[bool, str]:
    """Average away the noise of a DP count by asking it 20 times."""
    answered = 0
    for _ in range(20):
        res, _ = _answered(fed, DPCount(epsilon=1.0, delta=1e-6))
        answered += res is not None
    cap = Policy().epsilon_budget
    # success: more answers than the owner's budget allows at epsilon 1
    return answered > cap, f"{answered} of 20 answered (budget cap epsilon {cap:g})"


def hub_reruns_a_round(fed, names, sites) -> tuple[bool, str]:
    """A malicious hub unmasks a round, then re-runs it without one site to difference it."""
    workers = {n: SiteWorker(n, {"d": sites[n]}, policies=Policy(min_sites=3)) for n in names}
    trusted = {n: w.identity.identity_public for n, w in workers.items()}
    for w in workers.values():
        w.set_trusted(trusted)

    def task(attempt: int, members: list[str]) -> Task:
        return Task(
            study_id="evil",
            round_index=0,
            attempt=attempt,
            algorithm=Mean(columns=("age",)).spec(),
            dataset="d",
            step="moments",
            public={},
            participants=tuple(workers[m].peer_key for m in members),
        )

    full = task(0, names)
    agg = SecureAggregator(full.context)
    for n in names:
        agg.add(workers[n].contribute(full))
    agg.finish({n: workers[n].reveal(full) for n in names})
    rest = names[1:]
    again = task(1, rest)
    agg2 = SecureAggregator(again.context)
    try:
        for n in rest:
            agg2.add(workers[n].contribute(again))
        agg2.finish({n: workers[n].reveal(again) for n in rest})
    except (SecureAggregationError, PolicyError) as err:
        return False, f"re-run refused ({type(err).__name__})"
    return True, "the hub obtained both sums"


def _rule(why: str | None) -> str:
    if not why:
        return "?"
    if "policy rule '" in why:
        return why.split("policy rule '")[1].split("'")[0]
    return why[:60]


def honest_workload(fed, names, sites) -> list[tuple[str, bool, str]]:
    """The demo's studies under the default policy: exact where the policy allows,
    survival on one planned grid (KM first; log-rank and Cox coarsen its grid)."""
    from lifelines import KaplanMeierFitter

    demo = synthetic_data(n_sites=N_NODES, seed=3)
    pooled = pd.concat(sites.values(), ignore_index=True)
    out = []
    for spec in studies_for(demo)[:2]:  # descriptive statistics, logistic regression
        res, why = _answered(fed, spec.algorithm, nodes=names)
        good = res is not None and all(r.rel_diff <= 1e-6 for r in spec.compare(res, pooled))
        out.append((spec.title, good, "exact" if good else _rule(why)))
    groups = demo.groups
    km, why = _answered(
        fed,
        KaplanMeier(
            time=demo.time,
            event=demo.event,
            group=demo.group,
            groups=groups,
            horizon=float(demo.grid_stop),
            plan_epsilon=1.0,
        ),
        nodes=names,
    )
    worst = float("nan")
    if km is not None:
        worst = 0.0
        for g in groups:
            part = pooled[pooled[demo.group] == g]
            ref = KaplanMeierFitter().fit(part[demo.time], part[demo.event])
            curve = km[str(g)]
            days = np.asarray(curve.timeline, dtype=float)
            at_risk = np.array([(part[demo.time] >= d).sum() for d in days])
            keep = at_risk >= 50
            diff = np.abs(
                np.asarray(curve.survival_at(days[keep]))
                - ref.survival_function_at_times(days[keep]).to_numpy()
            )
            worst = max(worst, float(diff.max(initial=0.0)))
    good = km is not None and km.cells_below_k == 0 and worst <= 0.03
    out.append(("Kaplan-Meier by arm (planned grid)", good, f"max|dS|={worst:.4f}" if km else why))
    if km is None:
        return out
    grid = km.plan.grid
    for title, algo in (
        (
            "Log-rank test by arm (on the KM's grid)",
            LogRank(
                time=demo.time,
                event=demo.event,
                group=demo.group,
                groups=groups,
                horizon=grid[-1],
                plan_cells=grid,
                plan_epsilon=1.0,
            ),
        ),
        (
            "Cox model (on the KM's grid)",
            CoxPH(
                time=demo.time,
                event=demo.event,
                covariates=demo.cox_covariates,
                horizon=grid[-1],
                plan_cells=grid,
                plan_epsilon=1.0,
            ),
        ),
    ):
        res, why = _answered(fed, algo, nodes=names)
        out.append((title, res is not None, "answered" if res is not None else _rule(why)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="consortia-attacks-"))
    root.mkdir(parents=True, exist_ok=True)
    sites, schema = _data()
    names = list(sites)
    cluster = Cluster(root)
    played = succeeded = 0
    honest_ok = honest_total = 0
    try:
        cluster.start(sites, schema)
        # the honest workload first (another researcher), then the attacker
        honest = connect(cluster.hub.url, cluster.hub.create_token("researcher", "alice"))
        for title, good, detail in honest_workload(honest, names, sites):
            honest_total += 1
            honest_ok += good
            print(f"honest: {title:45s} {'ok' if good else 'NOT OK'} ({detail})")
        attacker = connect(cluster.hub.url, cluster.hub.create_token("researcher", "eve"))
        attacks: list[tuple[str, Callable[..., tuple[bool, str]]]] = [
            ("participant differencing", participant_differencing),
            ("cohort differencing", cohort_differencing),
            ("refusal oracle", refusal_oracle),
            ("per-site slots", per_site_slots),
            ("repeated noisy queries", repeated_queries),
            ("hub re-runs a round without a site", hub_reruns_a_round),
        ]
        for title, attack in attacks:
            t0 = time.monotonic()
            ok, detail = attack(attacker, names, sites)
            played += 1
            succeeded += ok
            verdict = "SUCCEEDED" if ok else "defeated"
            print(f"{title:38s} {verdict:9s} {detail} ({time.monotonic() - t0:.1f} s)")
        t0 = time.monotonic()
        ok, detail = fake_sites(attacker, names, sites, cluster)
        played += 1
        succeeded += ok
        verdict = "SUCCEEDED" if ok else "defeated"
        print(f"{'fake sites (Sybil)':38s} {verdict:9s} {detail} ({time.monotonic() - t0:.1f} s)")
    finally:
        cluster.stop()
    honest_line = f"honest_studies_ok={honest_ok}/{honest_total}"
    print(f"attacks played={played} succeeded={succeeded} {honest_line}")
    sys.exit(0)


if __name__ == "__main__":
    main()

"""A real hub and three real node processes on 127.0.0.1: results, security, durability."""

from __future__ import annotations

import dataclasses
import hashlib

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from netutil import NETWORK_TEST_TIMEOUT, PATIENCE, start_federation, toy_frame, wait_until

from consortia import Simulation
from consortia.audit import AuditLog
from consortia.errors import PolicyError, ProtocolError, ResultMismatch, StudyFailed
from consortia.node import DatasetConfig, NodeAgent, NodeConfig
from consortia.node.identity import mutual_pins
from consortia.node.store import NodeStore
from consortia.privacy.policy import Policy
from consortia.resultcodec import decode_result, encode_result
from consortia.sdk import connect
from consortia.stats.descriptive import Mean
from consortia.stats.linear import LinearRegression
from consortia.stats.logistic import LogisticRegression
from consortia.survival import CoxPH, KaplanMeier, LogRank, day_grid
from consortia.testing.vector_sum import VectorSum
from consortia.wire import CONTENT_TYPE

pytestmark = pytest.mark.timeout(NETWORK_TEST_TIMEOUT)


@pytest.fixture(scope="module")
def fedn(hub_db, tmp_path_factory):
    f = start_federation(tmp_path_factory.mktemp("fed"), hub_db)
    yield f
    f.stop()


def _audit(f) -> list[dict]:
    r = httpx.get(
        f"{f.hub.url}/v1/audit",
        headers={"Authorization": f"Bearer {f.admin}"},
        params={"limit": 10000},
    )
    assert r.status_code == 200
    return r.json()


def _recorder(out: list[int]):
    return lambda round_index, step: out.append(round_index)


def test_networked_result_equals_simulation(fedn):
    sim = Simulation(fedn.sites())
    for algo in (Mean(columns=("x1", "x2", "y")), VectorSum(size=7, rounds=3)):
        progress: list[int] = []
        got = fedn.fed.run(algo, dataset="data", timeout=PATIENCE, progress=_recorder(progress))
        ref = sim.run(algo)
        if isinstance(algo, Mean):
            assert got.n == ref.n
            np.testing.assert_allclose(got.mean, ref.mean, rtol=0, atol=1e-12)
            pooled = np.concatenate([d.frame[["x1", "x2", "y"]] for d in fedn.sites().values()])
            np.testing.assert_allclose(got.mean, pooled.mean(axis=0), rtol=1e-8)
        else:
            np.testing.assert_allclose(got.last, ref.last, rtol=0, atol=1e-12)
            np.testing.assert_allclose(got.checksums, ref.checksums, rtol=0, atol=1e-12)
            assert progress and progress[-1] <= 2


def test_federated_training_gives_the_simulations_weights_bit_for_bit(fedn):
    """Issue 9: training seeded from (study, round, site) is the same in node processes
    (over HTTP, through the hub) as in the simulation, to the last bit."""
    pytest.importorskip("torch")
    from consortia.learn import Training

    algo = Training(
        model="mlp", hyperparameters={"hidden": [3]}, features=("x1", "x2"), task="regression",
        label="y", rounds=3, local_steps=5, batch_size=8, lr=0.05, seed=9, strategy="scaffold",
        val_fraction=0.2,
    )  # fmt: skip
    got = fedn.fed.run(algo, dataset="data", timeout=PATIENCE)
    ref = Simulation(fedn.sites()).run(algo)
    assert got.weights.tobytes() == ref.weights.tobytes()
    assert got.history["val_loss"].tobytes() == ref.history["val_loss"].tobytes()


def test_dp_training_over_http_charges_each_nodes_budget(fedn):
    """Issue 9 section 2: DP training through node processes; each node's persistent
    ledger charges the accounted epsilon before the first round."""
    pytest.importorskip("torch")
    from consortia.learn import Training

    algo = Training(
        model="linear", features=("x1", "x2"), task="regression", label="y", rounds=3,
        lr=0.1, clip_norm=1.0, dp={"noise_multiplier": 2.0, "delta": 1e-6, "sample_rate": 0.5},
    )  # fmt: skip
    eps, delta = algo.privacy_cost()
    got = fedn.fed.run(algo, dataset="data", timeout=PATIENCE)
    assert got.privacy["epsilon_spent"] == eps and got.privacy["delta_spent"] == delta
    assert np.all(np.isfinite(got.weights)) and got.rounds == 3
    assert not any(k.startswith("train_") for k in got.history)


def test_the_stored_result_is_the_simulations_and_the_replays(fedn):
    """Issue 8: the hub stores each result; the SDK fetches it in one request.

    It is bit for bit the simulation's and the ``verify=True`` replay's; only its
    owner (or an admin) reads it; a stored result that the sums do not give is
    caught by ``verify=True``, and without one the SDK replays the sums.
    """
    fed = fedn.fed
    cases = [
        ("data", VectorSum(size=7, rounds=3)),
        (
            "survival",
            CoxPH(time="time", event="event", covariates=("x1",), time_grid=day_grid(900)),
        ),
    ]
    frames = {}
    for dataset, algo in cases:
        sid = fed.submit(algo, dataset=dataset)
        assert fed.wait(sid, timeout=90).status == "finished"
        policy = Policy(min_sites=3, min_cell_count=1 if dataset == "survival" else 5)
        ref = Simulation(fedn.sites(dataset), policy=policy, dataset=dataset).run(algo)
        frame = fed.stored_result(sid)
        assert frame is not None and frame == encode_result(ref)  # bit-identical
        got = fed.result(sid)
        assert fed.last_study["source"] == "stored" and encode_result(got) == frame
        replayed = fed.result(sid, verify=True)
        assert fed.last_study["source"] == "replay" and encode_result(replayed) == frame
        frames[sid] = frame
    sid, frame = next(iter(frames.items()))  # the vector sum
    url = f"{fedn.hub.url}/v1/studies/{sid}/result"
    digest = hashlib.sha256(frame).hexdigest()
    r = httpx.get(url, headers={"Authorization": f"Bearer {fedn.admin}"})
    assert r.status_code == 200 and r.content == frame
    assert r.headers["content-type"] == CONTENT_TYPE and r.headers["x-consortia-digest"] == digest
    finished = [e for e in _audit(fedn) if e["action"] == "study.finished"]
    assert {"study": sid, "rounds": 3, "result": digest} in [e["details"] for e in finished]
    # another researcher cannot read it (nor learn that the study exists); no token: refused
    mallory = fedn.hub.create_token("researcher", "mallory")
    r = httpx.get(url, headers={"Authorization": f"Bearer {mallory}"})
    assert r.status_code == 404 and r.content != frame
    assert httpx.get(url).status_code in (401, 403)
    with connect(fedn.hub.url, mallory) as other, pytest.raises(ProtocolError, match="404"):
        other.result(sid)
    # a hub that stores a result its sums do not give: verify=True catches it
    eng = sa.create_engine(fedn.hub.db if "://" in fedn.hub.db else f"sqlite:///{fedn.hub.db}")
    ref = decode_result(frame)
    forged = encode_result(dataclasses.replace(ref, last=ref.last + 1.0))
    update = sa.text("UPDATE study_results SET result=:r, digest=:d WHERE study_id=:s")
    try:
        with eng.begin() as c:
            c.execute(update, {"r": forged, "d": hashlib.sha256(forged).hexdigest(), "s": sid})
        assert encode_result(fed.result(sid)) == forged  # trusted without verify
        with pytest.raises(ResultMismatch):
            fed.result(sid, verify=True)
        with eng.begin() as c:  # a frame that does not match its digest
            c.execute(update, {"r": forged, "d": digest, "s": sid})
        with pytest.raises(ProtocolError, match="digest"):
            fed.result(sid)
        with eng.begin() as c:  # no stored result (an older hub): the sums are replayed
            c.execute(sa.text("DELETE FROM study_results WHERE study_id=:s"), {"s": sid})
        assert encode_result(fed.result(sid)) == frame and fed.last_study["source"] == "replay"
    finally:
        eng.dispose()


def test_survival_and_regression_through_connect_equal_the_simulation(fedn):
    """Issue 4: the same estimators run through consortia.connect(...) with identical results."""
    grid = day_grid(900)
    studies = [
        ("data", LinearRegression(outcome="y", covariates=("x1", "x2"))),
        ("data", LogisticRegression(outcome="event", covariates=("x1", "arm"))),
        (
            "data",
            CoxPH(time="time", event="event", covariates=("x1", "arm"), stratify_by_site=True),
        ),
        (
            "survival",
            KaplanMeier(time="time", event="event", time_grid=grid, group="arm", groups=(0, 1)),
        ),
        (
            "survival",
            LogRank(time="time", event="event", group="arm", groups=(0, 1), time_grid=grid),
        ),
        (
            "survival",
            CoxPH(
                time="time", event="event", covariates=("x1", "arm"), time_grid=grid, penalizer=0.01
            ),
        ),
    ]
    for dataset, algo in studies:
        got = fedn.fed.run(algo, dataset=dataset, timeout=PATIENCE)
        policy = Policy(min_sites=3, min_cell_count=1 if dataset == "survival" else 5)
        ref = Simulation(fedn.sites(dataset), policy=policy, dataset=dataset).run(algo)
        _assert_same(got, ref, type(algo).__name__)


def _assert_same(got, ref, path: str) -> None:
    """Recursively compare two result objects to 1e-12."""
    if dataclasses.is_dataclass(ref):
        assert type(got) is type(ref), path
        for f in dataclasses.fields(ref):
            _assert_same(getattr(got, f.name), getattr(ref, f.name), f"{path}.{f.name}")
    elif isinstance(ref, dict):
        assert got.keys() == ref.keys(), path
        for k in ref:
            _assert_same(got[k], ref[k], f"{path}[{k!r}]")
    elif isinstance(ref, pd.DataFrame):
        pd.testing.assert_frame_equal(got, ref, check_exact=False, rtol=1e-12, atol=1e-12)
    elif isinstance(ref, np.ndarray) and ref.dtype.kind == "f":
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12, err_msg=path)
    elif isinstance(ref, np.ndarray):
        np.testing.assert_array_equal(got, ref, err_msg=path)
    elif isinstance(ref, float):
        assert got == pytest.approx(ref, rel=1e-12, abs=1e-12, nan_ok=True), path
    else:
        assert got == ref, path


def test_missing_or_wrong_token_is_401_and_leaves_no_trace(fedn):
    before = _audit(fedn)
    studies_before = fedn.fed.studies()
    body = {"algorithm": Mean(columns=("x1",)).spec(), "dataset": "data"}
    for headers in ({}, {"Authorization": "Bearer cre_wrong"}, {"Authorization": "Basic x"}):
        for method, path, kw in (
            ("POST", "/v1/studies", {"json": body}),
            ("GET", "/v1/studies", {}),
            ("GET", "/v1/node/tasks", {}),
            ("GET", "/v1/catalogue", {}),
            ("POST", "/v1/tokens", {"json": {"role": "admin", "name": "eve"}}),
            ("POST", "/v1/node/studies/x/rounds/0/attempts/0/contribution", {"content": b"x"}),
        ):
            r = httpx.request(method, fedn.hub.url + path, headers=headers, **kw)
            assert r.status_code == 401, (method, path, r.status_code)
    assert _audit(fedn) == before
    assert fedn.fed.studies() == studies_before
    with pytest.raises(Exception, match="401"):
        connect(fedn.hub.url, "cre_not_a_token")


def test_roles_and_ownership(fedn):
    sid = fedn.fed.submit(Mean(columns=("x1",)), dataset="data")
    fedn.fed.wait(sid, timeout=PATIENCE)
    bob = connect(fedn.hub.url, fedn.hub.create_token("researcher", "bob"))
    with pytest.raises(Exception, match="404"):
        bob.status(sid)
    with pytest.raises(Exception, match="404"):
        bob.rounds(sid)
    assert sid not in [s["id"] for s in bob.studies()]
    # a researcher cannot create tokens or read the audit log; an admin sees every study
    r = httpx.post(
        f"{fedn.hub.url}/v1/tokens",
        json={"role": "admin", "name": "eve"},
        headers={"Authorization": f"Bearer {fedn.researcher}"},
    )
    assert r.status_code == 403
    admin = connect(fedn.hub.url, fedn.admin)
    assert admin.status(sid).status == "finished"
    bob.close()
    admin.close()


def test_node_policy_refusal_fails_the_study_with_the_rule(fedn):
    with pytest.raises(PolicyError, match="allowed_algorithms") as info:
        fedn.fed.run(VectorSum(size=3, rounds=2), dataset="restricted", timeout=PATIENCE)
    assert info.value.rule == "allowed_algorithms"
    assert info.value.site in fedn.nodes
    # the refusal is in the refusing node's own audit log, with the rule and no values
    store = NodeStore(fedn.configs[info.value.site].data_dir)
    refusals = [e for e in store.audit.entries() if e.action == "refusal"]
    store.close()
    assert refusals and refusals[-1].details["rule"] == "allowed_algorithms"
    # the same dataset still serves an allowed algorithm
    res = fedn.fed.run(Mean(columns=("y",)), dataset="restricted", timeout=PATIENCE)
    assert res.n == sum(len(d.frame) for d in fedn.sites().values())


def _in_process_agents(fed, tmp_path, dataset: str, seed: int, n_rows: int) -> list[NodeAgent]:
    """Three enrolled in-process node agents holding ``dataset`` (the test drives them)."""
    agents = []
    pins = mutual_pins({f"{dataset}{i}": tmp_path / f"{dataset}{i}" for i in range(3)})
    for i in range(3):
        csv = tmp_path / f"{dataset}{i}.csv"
        toy_frame(seed + i, n_rows).to_csv(csv, index=False)
        cfg = NodeConfig(
            name=f"{dataset}{i}",
            hub=fed.hub.url,
            data_dir=tmp_path / f"{dataset}{i}",
            datasets=(DatasetConfig(name=dataset, path=csv, policy=Policy()),),
            poll_wait=1,
            peers=pins[f"{dataset}{i}"],
        )
        agent = NodeAgent(cfg)
        agent.enrol(fed.hub.create_token("enrolment", cfg.name))
        agent.publish()
        agents.append(agent)
    return agents


def test_malformed_payloads_are_refused_and_the_study_survives(fedn, tmp_path):
    """In-process node agents on dataset 'manual': the test posts bad payloads between steps."""

    agents = _in_process_agents(fedn, tmp_path, "manual", 10, 30)
    try:
        algo = VectorSum(size=5, rounds=1)
        sid = fedn.fed.submit(algo, dataset="manual")
        cred = (agents[0].config.data_dir / "credential").read_text()
        auth = {"Authorization": f"Bearer {cred}"}
        base = f"{fedn.hub.url}/v1/node/studies/{sid}/rounds/0/attempts/0/contribution"
        layout = '[["v", [5]]]'
        from consortia.wire import pack_arrays

        good_shape = pack_arrays({"masked": np.zeros(5, dtype=np.uint64)})
        cases = {
            "not a tensor file": (base, b"GARBAGE" * 10, layout),
            "wrong shape": (base, pack_arrays({"masked": np.zeros(4, np.uint64)}), layout),
            "wrong dtype": (base, pack_arrays({"masked": np.zeros(5)}), layout),
            "bad layout header": (base, good_shape, "{not json"),
            "oversized": (base, b"\0" * (2**20 + 10), layout),
            "wrong study": (base.replace(sid, "0" * 32), good_shape, layout),
            "wrong round": (base.replace("/rounds/0/", "/rounds/7/"), good_shape, layout),
            "wrong attempt": (base.replace("/attempts/0/", "/attempts/3/"), good_shape, layout),
        }
        audit_before = len(_audit(fedn))
        for what, (url, content, lay) in cases.items():
            r = httpx.post(url, content=content, headers={**auth, "X-Consortia-Layout": lay})
            assert 400 <= r.status_code < 500 and r.status_code != 401, (what, r.status_code)
        rejected = [e for e in _audit(fedn)[audit_before:] if e["action"] == "request.rejected"]
        assert len(rejected) == len(cases)
        assert all(e["actor"] == "node:manual0" for e in rejected)
        # a bad seed is refused too
        r = httpx.post(base.replace("contribution", "reveal"), json={"seed": "zz"}, headers=auth)
        assert r.status_code == 422
        # the study is unharmed: the real agents finish it with the exact result
        for _ in range(2):  # contribute, then reveal
            for agent in agents:
                agent.run_once()
        # a retried (identical) contribution is acknowledged, not double-counted
        st = fedn.fed.wait(sid, timeout=PATIENCE)
        assert st.status == "finished"
        got = fedn.fed.result(sid)
        sites = {a.config.name: a.worker().datasets["manual"] for a in agents}
        ref = Simulation(sites, dataset="manual").run(algo)
        np.testing.assert_allclose(got.last, ref.last, rtol=0, atol=1e-12)
        # the node's audit lists what it released: names and shapes, never values
        rel = [e for e in agents[0].store.audit.entries() if e.action == "release"]
        assert rel and rel[-1].details["arrays"] == {"v": [5]}
        assert agents[0].store.audit.verify().ok
    finally:
        for a in agents:
            a.close()


def test_idempotent_retry_is_not_double_counted(fedn, tmp_path):
    from consortia.wire import pack_arrays

    agents = _in_process_agents(fedn, tmp_path, "retry", 20, 25)
    try:
        algo = VectorSum(size=4, rounds=1)
        sid = fedn.fed.submit(algo, dataset="retry")
        for a in agents:
            a.run_once()
        # agent 0 re-answers the same task: the same masked vector (same ledger seed)
        cred = (agents[0].config.data_dir / "credential").read_text()
        auth = {"Authorization": f"Bearer {cred}"}
        r = httpx.get(f"{fedn.hub.url}/v1/node/tasks", headers=auth)
        task = next(t for t in r.json() if t["study_id"] == sid)
        assert task["kind"] == "reveal"
        task["kind"] = "contribute"
        w = agents[0].worker()
        masked = w.contribute(agents[0].tasks.task(task))
        url = f"{fedn.hub.url}/v1/node/studies/{sid}/rounds/0/attempts/0/contribution"
        r = httpx.post(
            url,
            content=pack_arrays({"masked": masked.data}),
            headers={**auth, "X-Consortia-Layout": '[["v", [4]]]'},
        )
        assert r.status_code == 200 and r.json()["status"] == "duplicate"
        for a in agents:
            a.run_once()
        fedn.fed.wait(sid, timeout=PATIENCE)
        got = fedn.fed.result(sid)
        sites = {a.config.name: a.worker().datasets["retry"] for a in agents}
        ref = Simulation(sites, dataset="retry").run(algo)
        np.testing.assert_allclose(got.last, ref.last, rtol=0, atol=1e-12)
    finally:
        for a in agents:
            a.close()


def test_hub_kill_9_mid_study_resumes_with_the_same_result(fedn):
    algo = VectorSum(size=6, rounds=25)
    sid = fedn.fed.submit(algo, dataset="data")
    wait_until(lambda: fedn.fed.status(sid).rounds_done >= 3, PATIENCE, "three rounds")
    fedn.hub.kill()
    fedn.hub.start(timeout=PATIENCE)
    st = fedn.fed.wait(sid, timeout=PATIENCE)
    assert st.status == "finished", st.error
    assert 3 <= st.rounds_done == 25
    rounds = fedn.fed.rounds(sid, limit=1000)
    assert [r["round_index"] for r in rounds] == list(range(25))
    got = fedn.fed.result(sid)
    ref = Simulation(fedn.sites()).run(algo)
    np.testing.assert_allclose(got.checksums, ref.checksums, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.last, ref.last, rtol=0, atol=1e-12)
    # the hub's database holds exactly one row per round
    eng = sa.create_engine(fedn.hub.db if "://" in fedn.hub.db else f"sqlite:///{fedn.hub.db}")
    with eng.connect() as c:
        n = c.execute(
            sa.text("SELECT COUNT(*), COUNT(DISTINCT round_index) FROM rounds WHERE study_id=:s"),
            {"s": sid},
        ).one()
    assert tuple(n) == (25, 25)
    eng.dispose()


def test_audit_logs_verify_and_detect_tampering(fedn):
    # a study of its own: the test must not depend on which tests ran before it (with
    # pytest-xdist it may be the first of its worker, on a federation that did nothing)
    fedn.fed.run(VectorSum(size=2, rounds=1), dataset="data", timeout=PATIENCE)
    url = fedn.hub.db if "://" in fedn.hub.db else f"sqlite:///{fedn.hub.db}"
    eng = sa.create_engine(url)
    log = AuditLog(eng)
    report = log.verify()
    assert report.ok, report.reason
    actions = {e.action for e in log.entries()}
    assert {"node.enrol", "study.submit", "round.finished"} <= actions
    seq = log.entries(limit=3)[2].seq
    with eng.begin() as c:
        old = c.execute(sa.text("SELECT details FROM audit_log WHERE seq=:s"), {"s": seq}).scalar()
        c.execute(
            sa.text("UPDATE audit_log SET details=:d WHERE seq=:s"),
            {"d": old.replace("}", ', "x": 1}', 1) if old != "{}" else '{"x": 1}', "s": seq},
        )
    try:
        bad = log.verify()
        assert not bad.ok and bad.first_bad_seq == seq
    finally:
        with eng.begin() as c:
            c.execute(sa.text("UPDATE audit_log SET details=:d WHERE seq=:s"), {"d": old, "s": seq})
        eng.dispose()
    # each node's own log verifies and records releases by name and shape only
    for cfg in fedn.configs.values():
        store = NodeStore(cfg.data_dir)
        try:
            assert store.audit.verify().ok
            rel = [e for e in store.audit.entries() if e.action == "release"]
            assert rel and all(set(e.details["arrays"]) for e in rel)
            for e in rel:
                assert all(isinstance(v, list) for v in e.details["arrays"].values())
        finally:
            store.close()


def test_cancel_stops_a_running_study(fedn):
    sid = fedn.fed.submit(VectorSum(size=3, rounds=5000), dataset="data")
    wait_until(lambda: fedn.fed.status(sid).rounds_done >= 2, PATIENCE, "two rounds")
    st = fedn.fed.cancel(sid)
    assert st.status == "cancelled"
    done = st.rounds_done
    with pytest.raises(StudyFailed, match="cancelled"):
        fedn.fed.result(sid)
    # the nodes are free for the next study
    assert fedn.fed.run(Mean(columns=("y",)), dataset="data", timeout=PATIENCE).n > 0
    # every node has since answered another study: a round of the cancelled one still
    # on its way would have landed by now
    assert fedn.fed.status(sid).rounds_done == done  # no round after the cancellation


def test_a_node_refuses_a_substituted_peer_key(fedn, tmp_path):
    """A hub that swaps a peer's masking key (to learn a pairwise mask) is refused."""
    from consortia.privacy.keys import SiteIdentity

    agents = _in_process_agents(fedn, tmp_path, "keys", 30, 25)
    try:
        sid = fedn.fed.submit(VectorSum(size=2, rounds=2), dataset="keys")
        for a in agents:  # round 0 contributions: each node binds its peers' identities
            a.run_once()
        cred = (agents[0].config.data_dir / "credential").read_text()
        task = httpx.get(
            f"{fedn.hub.url}/v1/node/tasks", headers={"Authorization": f"Bearer {cred}"}
        ).json()[0]
        # the "hub" replaces keys1's signed key by one of its own making
        forged = SiteIdentity.generate().peer_key("keys1").to_json()
        task["participants"] = [forged if p["site"] == "keys1" else p for p in task["participants"]]
        task["kind"], task["round_index"] = "contribute", 1
        releases = len([e for e in agents[0].store.audit.entries() if e.action == "release"])
        agents[0].handle(task, follow=0)
        entries = agents[0].store.audit.entries()
        assert [e for e in entries if e.action == "release"][releases:] == []
        # the refusal (the hub may then refuse the post of it: post.rejected)
        last = next(e for e in reversed(entries) if e.action != "post.rejected")
        assert last.action == "refusal"
        assert last.details["rule"] == "KeyVerificationError"
        assert fedn.fed.status(sid).status in ("running", "failed")
    finally:
        for a in agents:
            a.close()


def test_an_out_of_memory_local_step_is_a_refusal_and_the_node_lives_on(
    fedn, tmp_path, monkeypatch
):
    """A node whose local step runs out of memory refuses (rule and exception class only)
    instead of dying; the hub fails the study naming the rule; the node serves the next."""
    agents = _in_process_agents(fedn, tmp_path, "oom", 50, 30)
    real = Mean.local

    def hungry(self, step, public, data):
        if data.site == "oom1":  # numpy's MemoryError, its message holding a shape from the data
            np.empty((len(data.frame) * 2**30, 1000))
        return real(self, step, public, data)

    monkeypatch.setattr(Mean, "local", hungry)
    try:
        sid = fedn.fed.submit(Mean(columns=("y",)), dataset="oom")
        for a in agents:
            a.run_once()  # the agent's loop calls the same handle(): it must not raise
        st = fedn.fed.wait(sid, timeout=60)
        assert st.status == "failed" and st.error_rule == "LocalStepError"
        with pytest.raises(StudyFailed, match=r"LocalStepError.*MemoryError") as err:
            fedn.fed.result(sid)
        assert "TiB" not in str(err.value) and str(30 * 2**30) not in str(err.value)
        assert "oom1" not in str(err.value)  # anonymous: it may be a fact about the data
        refusals = [e for e in agents[1].store.audit.entries() if e.action == "refusal"]
        assert [e.details["rule"] for e in refusals] == ["LocalStepError"]
        monkeypatch.undo()
        # out of memory outside the algorithm (masking, say): refused too, class only
        from consortia.runtime.site import SiteWorker

        def no_memory(self, task, contribution):
            raise MemoryError("Unable to allocate 3.1 TiB for an array with shape (424242,)")

        monkeypatch.setattr(SiteWorker, "mask", no_memory)
        sid = fedn.fed.submit(Mean(columns=("y",)), dataset="oom")
        for a in agents:
            a.run_once()
        st = fedn.fed.wait(sid, timeout=60)
        assert st.status == "failed" and st.error_rule == "MemoryError"
        assert "424242" not in str(st.error) and "TiB" not in str(st.error)
        monkeypatch.undo()
        sid = fedn.fed.submit(Mean(columns=("y",)), dataset="oom")

        def answered() -> bool:
            for a in agents:
                a.run_once()
            return fedn.fed.status(sid).status != "running"

        wait_until(answered, 60, "the next study")
        assert fedn.fed.result(sid).n == 90
    finally:
        for a in agents:
            a.close()

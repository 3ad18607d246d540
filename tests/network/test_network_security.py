"""Node and hub under refusals and tampering, over real HTTP: a real hub process and
in-process node agents driven by the test.

* a post the hub refuses (4xx) is not re-posted in a loop: the node holds the task back;
* a node survives a task poll answered 200 with a body that is not JSON;
* one dataset that fails to load does not take the node's other datasets down;
* the hub anchors each node's audit head: a node log truncated, or rewritten and
  re-chained, fails ``consortia audit verify --hub``.
"""

from __future__ import annotations

import http.server
import sqlite3
import threading

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from netutil import NETWORK_TEST_TIMEOUT, PATIENCE, toy_frame, wait_until

from consortia.audit import AuditLog, write_key_file
from consortia.cli import main
from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeAgent, NodeConfig
from consortia.privacy.policy import Policy
from consortia.sdk import connect
from consortia.testing.vector_sum import VectorSum

pytestmark = pytest.mark.timeout(NETWORK_TEST_TIMEOUT)


@pytest.fixture(scope="module")
def hub(hub_db, tmp_path_factory):
    """A hub refusing contributions over 4 KiB (so that a test can provoke a 413)."""
    root = tmp_path_factory.mktemp("sechub")
    h = HubProcess(hub_db, max_payload=4096, node_timeout=120, log=root / "hub.log").start()
    h.admin = h.create_token("admin", "root")
    h.researcher = h.create_token("researcher", "alice")
    yield h
    h.stop(timeout=5)


def _agent(hub, tmp_path, name: str, datasets=None, **extra) -> NodeAgent:
    csv = tmp_path / f"{name}.csv"
    toy_frame(len(name), 30).to_csv(csv, index=False)
    if datasets is None:
        datasets = (DatasetConfig(name=name, path=csv, policy=Policy(min_sites=1)),)
    cfg = NodeConfig(
        name=name,
        hub=hub.url,
        data_dir=tmp_path / name,
        datasets=datasets,
        poll_wait=1,
        **extra,
    )
    agent = NodeAgent(cfg)
    agent.enrol(hub.create_token("enrolment", name))
    return agent


def _admin_get(hub, path: str):
    r = httpx.get(f"{hub.url}{path}", headers={"Authorization": f"Bearer {hub.admin}"})
    assert r.status_code == 200, r.text
    return r.json()


def _hub_rejections(hub, node: str) -> int:
    entries = _admin_get(hub, "/v1/audit?limit=10000")
    return sum(e["action"] == "request.rejected" and e["actor"] == f"node:{node}" for e in entries)


def test_a_refused_contribution_is_held_back_not_reposted_in_a_loop(hub, tmp_path):
    agent = _agent(hub, tmp_path, "loud")
    runner = threading.Thread(target=agent.run, daemon=True)
    try:
        agent.publish()
        with connect(hub.url, hub.researcher) as fed:
            fed.submit(VectorSum(size=1000), dataset="loud")  # 8 KB > the hub's 4 KiB: 413
        runner.start()

        def refusals():
            return [e for e in agent.store.audit.entries() if e.action == "post.rejected"]

        wait_until(lambda: len(refusals()) >= 3, PATIENCE, "three refused contributions")
        agent.stop()
        runner.join(30)
        assert not runner.is_alive()
        got = refusals()
        assert [e.details["status"] for e in got] == [413] * len(got)
        assert [e.details["retry_after"] for e in got[:3]] == [1.0, 2.0, 4.0]  # bounded backoff
        # every post the hub refused is one the node recorded: no loop of re-posts
        assert _hub_rejections(hub, "loud") == len(got)
    finally:
        agent.stop()
        agent.close()


class _NotJson(http.server.BaseHTTPRequestHandler):
    """A 'hub' (a proxy's error page, say) answering every task poll 200 with HTML."""

    polls = 0

    def do_GET(self):
        type(self).polls += 1
        self._send(b"<html>gateway error</html>", "text/html")

    def do_PUT(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._send(b'{"datasets": []}', "application/json")

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_task_poll_that_is_not_json_is_logged_and_retried(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotJson)
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    csv = tmp_path / "d.csv"
    toy_frame(1, 20).to_csv(csv, index=False)
    cfg = NodeConfig(
        name="n",
        hub=f"http://127.0.0.1:{server.server_address[1]}",
        data_dir=tmp_path / "n",
        datasets=(DatasetConfig(name="d", path=csv),),
        poll_wait=1,
    )
    cfg.data_dir.mkdir()
    (cfg.data_dir / "credential").write_text("cno_x")
    (cfg.data_dir / "credential").chmod(0o600)
    agent = NodeAgent(cfg)
    failed: list[BaseException] = []

    def run():
        try:
            agent.run()
        except BaseException as exc:  # the test fails on any
            failed.append(exc)

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: _NotJson.polls >= 3 or failed, PATIENCE, "three polls")
        assert not failed and runner.is_alive()
    finally:
        agent.stop()
        runner.join(30)
        agent.close()
        server.shutdown()
        server.server_close()


def test_one_dataset_failing_to_load_leaves_the_others_served(hub, tmp_path):
    good = tmp_path / "good.csv"
    toy_frame(3, 30).to_csv(good, index=False)
    datasets = (
        DatasetConfig(name="fine", path=good, policy=Policy(min_sites=1)),
        DatasetConfig(name="broken", path=good, schema={"time": "no_such_column"}),
        DatasetConfig(name="gone", path=tmp_path / "missing.csv"),
    )
    agent = _agent(hub, tmp_path, "halfway", datasets=datasets)
    try:
        agent.publish()
        assert set(agent.worker().datasets) == {"fine"}
        assert set(agent.unavailable) == {"broken", "gone"}
        published = connect(hub.url, hub.researcher).catalogue()["halfway"]
        assert published["broken"] == {"name": "broken", "available": False}
        assert published["gone"] == {"name": "gone", "available": False}
        assert published["fine"]["rows"] == 30
        unavailable = [e for e in agent.store.audit.entries() if e.action == "dataset.unavailable"]
        assert sorted(e.details["dataset"] for e in unavailable) == ["broken", "gone"]
        with connect(hub.url, hub.researcher) as fed:
            sid = fed.submit(VectorSum(size=2), dataset="fine")
            for _ in range(2):
                agent.run_once()
            assert fed.wait(sid, timeout=PATIENCE).status == "finished"
            r = fed.transport._http.post(
                "/v1/studies",
                json={"algorithm": VectorSum(size=2).spec(), "dataset": "broken"},
            )
            assert r.status_code == 422  # no node serves it
    finally:
        agent.close()


def _copy(src, dst) -> None:
    """Copy a SQLite database in WAL mode (its -wal file included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def _verify(db, hub, token_file, *extra) -> tuple[int, str]:
    args = ["audit", "verify", "--db", str(db), "--hub", hub.url, "--token-file", str(token_file)]
    result = CliRunner().invoke(main, [*args, *extra])
    return result.exit_code, result.output


def test_node_audit_heads_anchored_at_the_hub_detect_truncation_and_rewrites(hub, tmp_path):
    key_file = tmp_path / "node-audit.key"
    write_key_file(key_file)
    agents = [
        _agent(hub, tmp_path, "anchor0", audit_key_file=key_file),
        _agent(hub, tmp_path, "anchor1"),
    ]
    token_file = tmp_path / "admin.token"
    token_file.write_text(hub.admin)
    try:
        for a in agents:
            a.publish()
        with connect(hub.url, hub.researcher) as fed:
            for name in ("anchor0", "anchor1"):
                sid = fed.submit(VectorSum(size=3, rounds=3), dataset=name)

                def done(sid=sid):
                    for a in agents:
                        a.run_once()
                    return fed.status(sid).status != "running"

                wait_until(done, PATIENCE, "the study to finish")
                assert fed.status(sid).status == "finished"
        # a node's audit log can be keyed ([node] audit_key_file)
        assert agents[0].store.audit.keyed and not agents[1].store.audit.keyed
        db0 = agents[0].config.data_dir / "node.sqlite"
        code, out = _verify(db0, hub, token_file, "--key-file", str(key_file))
        assert code == 0 and out.startswith("OK"), out
        # the hub holds several heads of each node, and the intact log matches them
        heads = _admin_get(hub, "/v1/nodes/anchor1/audit-heads")
        assert len(heads) >= 3 and [h["seq"] for h in heads] == sorted({h["seq"] for h in heads})
        db = agents[1].config.data_dir / "node.sqlite"
        code, out = _verify(db, hub, token_file)
        assert code == 0 and out.startswith("OK"), out
        for a in agents:
            a.close()

        # truncation with the head record moved: the log alone still verifies
        cut = tmp_path / "truncated.sqlite"
        _copy(db, cut)
        keep = heads[-1]["seq"] - 1
        eng = sa.create_engine(f"sqlite:///{cut}")
        with eng.begin() as c:
            c.execute(sa.text("DELETE FROM audit_log WHERE seq > :k"), {"k": keep})
            last = c.execute(sa.text("SELECT hash FROM audit_log WHERE seq = :k"), {"k": keep})
            c.execute(
                sa.text("UPDATE audit_log_head SET seq = :k, hash = :h"),
                {"k": keep, "h": last.scalar()},
            )
        assert AuditLog(eng).verify().ok
        eng.dispose()
        code, out = _verify(cut, hub, token_file)
        assert code == 1 and "truncated" in out, out

        # rewrite and re-chain: every hash recomputed, same length
        original = AuditLog(sa.create_engine(f"sqlite:///{db}")).entries()
        forged = tmp_path / "rewritten.sqlite"
        eng = sa.create_engine(f"sqlite:///{forged}")
        log = AuditLog(eng)
        for e in original:
            details = dict(e.details)
            if e.action == "release":
                details["arrays"] = {}  # hide what was released
            log.append(e.actor, e.action, details)
        assert log.verify().ok and len(log) == len(original)
        eng.dispose()
        code, out = _verify(forged, hub, token_file, "--node", "anchor1")
        assert code == 1 and "rewritten" in out, out
    finally:
        for a in agents:
            a.close()

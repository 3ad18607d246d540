"""Hostile or malformed requests: each is a clear 4xx naming the field, never a 500."""

from __future__ import annotations

import json
import socket
import struct
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hubutil import KM, bearer, enrol

from consortia.hub import HubProcess, HubSettings, bootstrap_token, create_app
from consortia.privacy.keys import SiteIdentity
from consortia.wire import CONTENT_TYPE, MAGIC


@pytest.fixture
def client(hub_url):
    with TestClient(create_app(HubSettings(db=hub_url))) as c:
        yield c, hub_url


def _submit_raw(c, token: str, text: str):
    headers = {**bearer(token), "Content-Type": "application/json"}
    return c.post("/v1/studies", content=text.encode(), headers=headers)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
@pytest.mark.parametrize("algorithm", ["survival.kaplan_meier", "survival.logrank"])
def test_non_finite_study_parameters_are_refused_before_anything_is_committed(
    client, literal, algorithm
):
    c, db = client
    node = enrol(c, db, "hosp-a")
    researcher = bootstrap_token(db, "researcher", "alice")
    grid = ', "time_grid": [1.0, 2.0]' if algorithm == "survival.kaplan_meier" else ""
    params = '{"time": "time", "event": "event", "group": "arm", "groups": [0, LIT]GRID}'
    params = params.replace("LIT", literal).replace("GRID", grid)
    text = '{"algorithm": {"name": "ALG", "params": PARAMS}, "dataset": "data"}'
    text = text.replace("ALG", algorithm).replace("PARAMS", params)
    r = _submit_raw(c, researcher, text)
    assert r.status_code == 422, r.text
    assert "groups" in r.json()["detail"] and "finite" in r.json()["detail"]
    assert c.get("/v1/studies", headers=bearer(researcher)).json() == []
    assert c.get("/v1/node/tasks", headers=bearer(node)).status_code == 200


def test_a_study_that_cannot_be_serialised_does_not_poison_the_others(tmp_path):
    """A study whose stored spec holds NaN (SQLite, written before validation) fails alone."""
    hub_url = str(tmp_path / "hub.sqlite")
    with TestClient(create_app(HubSettings(db=hub_url))) as c:
        node = enrol(c, hub_url, "hosp-a")
        researcher = bootstrap_token(hub_url, "researcher", "alice")
        bad = c.post(
            "/v1/studies", json={"algorithm": KM, "dataset": "data"}, headers=bearer(researcher)
        )
        assert bad.status_code == 200, bad.text
        good = c.post(
            "/v1/studies", json={"algorithm": KM, "dataset": "data"}, headers=bearer(researcher)
        )
        bad_id, good_id = bad.json()["id"], good.json()["id"]
    engine = sa.create_engine(f"sqlite:///{hub_url}")
    spec = dict(KM, params={**KM["params"], "alpha": float("nan")})
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE studies SET algorithm = :a WHERE id = :i"),
            {"a": json.dumps(spec), "i": bad_id},
        )
    engine.dispose()
    with TestClient(create_app(HubSettings(db=hub_url))) as c:  # restarted
        r = c.get("/v1/node/tasks", headers=bearer(node))
        assert r.status_code == 200, r.text
        assert [t["study_id"] for t in r.json()] == [good_id]
        r = c.get(f"/v1/studies/{bad_id}", headers=bearer(researcher))
        assert r.json()["status"] == "failed"
        assert c.get("/v1/node/tasks", headers=bearer(node)).status_code == 200


# ---------------------------------------------------------------- tokens and roles


def test_a_deleted_token_stops_working_at_once(client):
    c, db = client
    researcher = bootstrap_token(db, "researcher", "alice")
    assert c.get("/v1/whoami", headers=bearer(researcher)).status_code == 200
    assert c.get("/v1/catalogue", headers=bearer(researcher)).status_code == 200
    url = db if "://" in db else f"sqlite:///{db}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM tokens WHERE role = 'researcher'"))
    engine.dispose()
    assert c.get("/v1/whoami", headers=bearer(researcher)).status_code == 401
    assert c.get("/v1/catalogue", headers=bearer(researcher)).status_code == 401


def test_node_list_is_for_admins_and_researchers_get_the_catalogue(client):
    c, db = client
    enrol(c, db, "hosp-a")
    researcher = bootstrap_token(db, "researcher", "alice")
    admin = bootstrap_token(db, "admin", "ops")
    assert c.get("/v1/nodes", headers=bearer(researcher)).status_code == 403
    nodes = c.get("/v1/nodes", headers=bearer(admin)).json()
    assert [n["name"] for n in nodes] == ["hosp-a"]
    assert list(c.get("/v1/catalogue", headers=bearer(researcher)).json()) == ["hosp-a"]


def test_the_hub_database_file_is_private(tmp_path):
    from consortia.hub.db import make_engine

    for name, url in (
        ("a.sqlite", str(tmp_path / "a.sqlite")),
        ("b.db", f"sqlite:///{tmp_path}/b.db"),
    ):
        make_engine(url).dispose()
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600


# ---------------------------------------------------------------- malformed values


@pytest.fixture
def running(client):
    """A node with an open vector_sum task (round 0, attempt 0), and its credential."""
    c, db = client
    node = enrol(c, db, "hosp-a")
    researcher = bootstrap_token(db, "researcher", "alice")
    spec = {"name": "testing.vector_sum", "params": {"size": 3}}
    r = c.post(
        "/v1/studies", json={"algorithm": spec, "dataset": "data"}, headers=bearer(researcher)
    )
    assert r.status_code == 200, r.text
    return c, node, researcher, r.json()["id"]


def _contribute(c, node, sid, layout: str, body: bytes = b"x", round_index=0):
    path = f"/v1/node/studies/{sid}/rounds/{round_index}/attempts/0/contribution"
    headers = {**bearer(node), "X-Consortia-Layout": layout, "Content-Type": CONTENT_TYPE}
    return c.post(path, content=body, headers=headers)


@pytest.mark.parametrize(
    ("layout", "field"),
    [
        ('[["v", [-3]]]', "dimensions"),
        ('[["v", [1e999]]]', "dimensions"),
        ('[["v", [3.0]]]', "dimensions"),
        ("[" * 5000 + "]" * 5000, "X-Consortia-Layout"),
    ],
)
def test_malformed_layouts_are_a_4xx_naming_the_field(running, layout, field):
    c, node, _, sid = running
    r = _contribute(c, node, sid, layout)
    assert r.status_code == 400, r.text
    assert field in r.json()["detail"]


def test_a_deeply_nested_tensor_header_is_a_4xx(running):
    c, node, _, sid = running
    header = b'{"arrays": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    header += b" " * (-(16 + len(header)) % 8)
    body = MAGIC + struct.pack("<Q", len(header)) + header
    r = _contribute(c, node, sid, '[["v", [3]]]', body)
    assert r.status_code == 400 and "tensor header" in r.json()["detail"]


def test_a_huge_round_index_is_a_422(running):
    c, node, researcher, sid = running
    r = _contribute(c, node, sid, '[["v", [3]]]', round_index=2**70)
    assert r.status_code == 422 and "round_index" in r.json()["detail"]
    r = c.get(f"/v1/studies/{sid}/rounds/{2**70}/sums", headers=bearer(researcher))
    assert r.status_code == 422 and "round_index" in r.json()["detail"]


def test_oversized_study_parameters_are_refused(client):
    c, db = client
    enrol(c, db, "hosp-a")
    researcher = bootstrap_token(db, "researcher", "alice")

    def submit(params):
        spec = {"name": "testing.vector_sum", "params": params}
        return c.post(
            "/v1/studies", json={"algorithm": spec, "dataset": "data"}, headers=bearer(researcher)
        )

    r = submit({"size": 10**12})
    assert r.status_code == 422 and "size" in r.json()["detail"]
    r = submit({"x" * 200: 1})
    assert r.status_code == 422 and "parameter name" in r.json()["detail"]
    r = submit({"x" * (2 * 2**20): 1})
    assert r.status_code == 413
    assert c.get("/v1/studies", headers=bearer(researcher)).json() == []


# ---------------------------------------------------------------- real HTTP


@pytest.fixture
def hub(hub_url, tmp_path):
    h = HubProcess(hub_url, log=tmp_path / "hub.log").start()
    yield h
    h.stop(timeout=5)


def test_one_enrolment_token_enrols_exactly_one_of_ten_concurrent_nodes(hub):
    token = hub.create_token("enrolment", "*")
    gate = threading.Barrier(10)

    def enrol_one(i: int) -> int:
        name = f"node{i}"
        body = {"name": name, "peer_key": SiteIdentity.generate().peer_key(name).to_json()}
        with httpx.Client(base_url=hub.url, timeout=60) as http:
            gate.wait(timeout=60)
            return http.post("/v1/enrol", json=body, headers=bearer(token)).status_code

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(enrol_one, range(10)))
    assert codes.count(200) == 1 and set(codes) == {200, 401}, codes
    admin = hub.create_token("admin", "ops")
    nodes = httpx.get(f"{hub.url}/v1/nodes", headers=bearer(admin)).json()
    assert len(nodes) == 1


def _raw_request(hub, head: str, body_chunks=()) -> int:
    """Send a request head (and body chunks) on a raw socket; return the answer's status."""
    with socket.create_connection((hub.host, hub.port), timeout=60) as sock:
        sock.sendall(head.encode("latin-1"))
        for chunk in body_chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the hub answered and closed: stop sending
                break
        data = b""
        while b"\r\n" not in data:
            more = sock.recv(4096)
            if not more:
                break
            data += more
    return int(data.split(b" ", 2)[1])


def test_a_body_without_a_valid_token_is_refused_before_it_is_read(hub):
    # 300 MB announced, none sent: the 401 must come without waiting for the body
    head = "POST /v1/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 300000000\r\n\r\n"
    assert _raw_request(hub, head) == 401
    head = head.replace("\r\n\r\n", "\r\nAuthorization: Bearer cre_nope\r\n\r\n")
    assert _raw_request(hub, head) == 401


def test_oversized_bodies_are_refused_before_or_while_reading(hub):
    researcher = hub.create_token("researcher", "alice")
    auth = f"Authorization: Bearer {researcher}\r\n"
    head = f"POST /v1/studies HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {2**20 + 1}\r\n\r\n"
    assert _raw_request(hub, head) == 413  # declared: refused before reading
    head = f"POST /v1/studies HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\n\r\n"
    chunk = b"10000\r\n" + b"a" * 0x10000 + b"\r\n"  # 64 KiB chunks, never terminated
    assert _raw_request(hub, head, [chunk] * 20) == 413  # streamed: cut at the limit
    admin = hub.create_token("admin", "ops")
    entries = httpx.get(f"{hub.url}/v1/audit", headers=bearer(admin)).json()
    refused = [e["details"]["status"] for e in entries if e["action"] == "request.rejected"]
    assert refused == [413, 413]  # both refusals are audited

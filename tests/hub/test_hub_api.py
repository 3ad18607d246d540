"""The hub's HTTP API in process (FastAPI TestClient): enrolment, roles, OpenAPI."""

from __future__ import annotations

import sys

import pytest
from fastapi.testclient import TestClient

from consortia.errors import ConsortiaError, ValidationError
from consortia.hub import HubSettings, bootstrap_token, create_app
from consortia.hub.server import http_implementation, is_loopback, serve
from consortia.privacy.keys import SiteIdentity


@pytest.fixture
def client(hub_url):
    with TestClient(create_app(HubSettings(db=hub_url))) as c:
        yield c, hub_url


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_enrolment_is_one_time_bound_and_signed(client):
    c, db = client
    ident = SiteIdentity.generate()
    body = {"name": "hosp-a", "peer_key": ident.peer_key("hosp-a").to_json()}
    token = bootstrap_token(db, "enrolment", "hosp-a")
    other = bootstrap_token(db, "enrolment", "hosp-b")
    assert c.post("/v1/enrol", json=body, headers=_bearer(other)).status_code == 403
    r = c.post("/v1/enrol", json=body, headers=_bearer(token))
    assert r.status_code == 200
    cred = r.json()["credential"]
    assert c.post("/v1/enrol", json=body, headers=_bearer(token)).status_code == 401  # spent
    assert c.get("/v1/whoami", headers=_bearer(cred)).json() == {"role": "node", "name": "hosp-a"}
    # a key signed for another name, or a forged signature, is refused
    anyone = bootstrap_token(db, "enrolment", "*")
    forged = {"name": "hosp-c", "peer_key": ident.peer_key("hosp-a").to_json() | {"site": "hosp-c"}}
    r = c.post("/v1/enrol", json=forged, headers=_bearer(anyone))
    assert r.status_code == 422 and "signature" in r.json()["detail"]
    # the same name twice is refused
    again = {"name": "hosp-a", "peer_key": SiteIdentity.generate().peer_key("hosp-a").to_json()}
    assert c.post("/v1/enrol", json=again, headers=_bearer(anyone)).status_code == 409


def test_roles_are_enforced(client):
    c, db = client
    researcher = bootstrap_token(db, "researcher", "alice")
    admin = bootstrap_token(db, "admin", "ops")
    assert c.get("/v1/node/tasks", headers=_bearer(researcher)).status_code == 403
    assert c.get("/v1/audit", headers=_bearer(researcher)).status_code == 403
    r = c.post("/v1/tokens", json={"role": "researcher", "name": "bob"}, headers=_bearer(admin))
    assert r.status_code == 200 and r.json()["token"].startswith("cre_")
    assert c.get("/v1/audit/verify", headers=_bearer(admin)).json()["ok"] is True
    bad = {"algorithm": {"name": "stats.mean", "params": {}}, "dataset": "x", "evil": 1}
    assert c.post("/v1/studies", json=bad, headers=_bearer(researcher)).status_code == 422


def test_openapi_describes_the_api(client):
    c, _ = client
    paths = c.get("/openapi.json").json()["paths"]
    for p in ("/v1/enrol", "/v1/studies", "/v1/node/tasks", "/v1/studies/{study_id}/rounds"):
        assert p in paths


def test_plain_http_needs_the_flag_and_loopback(tmp_path):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("hub.example.org")
    settings = HubSettings(db=str(tmp_path / "h.sqlite"))
    with pytest.raises(ValidationError, match="--tls-cert"):
        serve(settings, host="127.0.0.1", port=1)
    with pytest.raises(ValidationError, match="loopback"):
        serve(settings, host="0.0.0.0", port=1, insecure_http=True)
    with pytest.raises(ValidationError, match="go together"):
        serve(settings, tls_cert="x.pem")


def test_the_hub_serves_with_the_c_http_parser_or_refuses_to_start(tmp_path, monkeypatch):
    """uvicorn would fall back to its pure-Python parser without a word: the hub does not."""
    assert http_implementation() == "httptools"
    monkeypatch.setitem(sys.modules, "httptools", None)  # as if it were not installed
    with pytest.raises(ConsortiaError, match="pip install httptools"):
        http_implementation()
    settings = HubSettings(db=str(tmp_path / "h.sqlite"))
    with pytest.raises(ConsortiaError, match="httptools"):
        serve(settings, host="127.0.0.1", port=1, insecure_http=True)


def test_node_calls_answer_the_same_on_the_fast_path_and_through_fastapi(client):
    """Contribution and reveal of a known node skip FastAPI; their answers must not change."""
    c, db = client
    ident = SiteIdentity.generate()
    token = bootstrap_token(db, "enrolment", "hosp-a")
    body = {"name": "hosp-a", "peer_key": ident.peer_key("hosp-a").to_json()}
    cred = c.post("/v1/enrol", json=body, headers=_bearer(token)).json()["credential"]
    path = "/v1/node/studies/nope/rounds/0/attempts/0"
    seed = {"seed": "ab" * 32}

    def calls() -> list[tuple[int, str]]:
        out = []
        for url, kw in (
            (f"{path}/reveal", {"json": seed}),  # unknown study: 404
            (f"{path}/reveal?wait=0.5", {"json": seed}),
            (f"{path}/reveal", {"json": {"seed": "xyz"}}),  # invalid body: 422
            (f"{path}/reveal?wait=99", {"json": seed}),  # out of range: 422
            (f"{path}/reveal?wait=1&x=2", {"json": seed}),
            (f"{path}/contribution", {"content": b"x", "headers": {"X-Consortia-Layout": "{"}}),
            (f"{path}/contribution", {"content": b"x", "headers": {"X-Consortia-Layout": "[]"}}),
        ):
            headers = {**_bearer(cred), **kw.pop("headers", {})}
            r = c.post(url, headers=headers, **kw)
            out.append((r.status_code, r.json()["detail"]))
        return out

    # the well-formed calls (4 of 7) take the fast path
    first = calls()
    assert c.app.state.fast_calls == 4
    assert calls() == first
    assert c.app.state.fast_calls == 8
    assert [s for s, _ in first] == [404, 404, 422, 422, 404, 400, 404]
    assert "no task of this node" in first[0][1] and "X-Consortia-Layout" in first[5][1]
    # refused calls are audited on both paths, a wrong token is still 401
    admin = bootstrap_token(db, "admin", "ops")
    rejected = [
        e
        for e in c.get("/v1/audit", headers=_bearer(admin)).json()
        if e["action"] == "request.rejected"
    ]
    assert len(rejected) == 2 * len(first)
    assert c.post(f"{path}/reveal", json=seed, headers=_bearer("cno_x")).status_code == 401

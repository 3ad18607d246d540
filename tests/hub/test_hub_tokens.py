"""Token expiry and revocation: through a real hub over HTTP, through the admin API, and the
``consortia token`` commands (create --expires-in, list, revoke)."""

from __future__ import annotations

import hashlib
import re
import time

import httpx
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient
from hubutil import bearer
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from consortia.audit import write_key_file
from consortia.cli import main
from consortia.cli.tokens import parse_duration
from consortia.errors import AuthenticationError, ValidationError
from consortia.hub import HubProcess, HubSettings, bootstrap_token, create_app
from consortia.hub.auth import DEFAULT_EXPIRY, ROLE_DEFAULT, resolve
from consortia.hub.db import TokenRow, make_engine
from consortia.hub.tokens import list_tokens, revoke_token
from consortia.privacy.keys import SiteIdentity

DAY = 86400.0


def _url(db: str) -> str:
    return db if "://" in db else f"sqlite:///{db}"


def _expire(db: str, name: str) -> None:
    """Move the expiry of ``name``'s tokens into the past (no waiting on the clock)."""
    eng = sa.create_engine(_url(db), poolclass=NullPool)
    with eng.begin() as c:
        c.execute(
            sa.update(TokenRow).where(TokenRow.name == name).values(expires_at=time.time() - 1)
        )
    eng.dispose()


def _cli(*args: str) -> str:
    r = CliRunner().invoke(main, list(args))
    assert r.exit_code == 0, r.output
    return r.output


# ---------------------------------------------------------------- real HTTP


def test_revocation_and_expiry_over_http_take_effect_at_the_next_request(hub_url, tmp_path):
    with HubProcess(hub_url, log=tmp_path / "hub.log") as hub:
        alice = _cli(
            "token",
            "create",
            "--db",
            hub_url,
            "--role",
            "researcher",
            "--name",
            "alice",
            "--expires-in",
            "30d",
        ).strip()
        bob = _cli(
            "hub", "token", "create", "--db", hub_url, "--role", "researcher", "--name", "bob"
        ).strip()
        carol = bootstrap_token(hub_url, "researcher", "carol")
        with httpx.Client(base_url=hub.url, timeout=60) as http:
            for token in (alice, bob, carol):
                assert http.get("/v1/whoami", headers=bearer(token)).status_code == 200
            # revoked by its hint, as `token list` shows it: refused at once, saying why only
            _cli("token", "revoke", alice[:12], "--db", hub_url)
            r = http.get("/v1/whoami", headers=bearer(alice))
            assert r.status_code == 401 and r.json() == {
                "detail": "this bearer token has been revoked"
            }
            assert r.headers["www-authenticate"] == "Bearer"
            # also on a route whose body the guard bounds (refused before the body is read)
            study = {"algorithm": {"name": "stats.count", "params": {}}, "dataset": "data"}
            r = http.post("/v1/studies", json=study, headers=bearer(alice))
            assert r.status_code == 401 and "revoked" in r.json()["detail"]
            # expired
            _expire(hub_url, "bob")
            r = http.get("/v1/whoami", headers=bearer(bob))
            assert r.status_code == 401 and r.json() == {"detail": "this bearer token has expired"}
            # an unknown token learns nothing more than before
            r = http.get("/v1/whoami", headers=bearer("cre_" + "x" * 43))
            assert r.status_code == 401 and r.json() == {
                "detail": "missing or invalid bearer token"
            }
            # the others are untouched
            assert http.get("/v1/whoami", headers=bearer(carol)).json()["name"] == "carol"


# ---------------------------------------------------------------- in process


@pytest.fixture
def client(hub_url):
    app = create_app(HubSettings(db=hub_url))
    with TestClient(app) as c:
        yield c, hub_url
    app.state.db.dispose()


def test_default_expiry_by_role_and_never(hub_url):
    before = time.time()
    tokens = {
        "researcher": bootstrap_token(hub_url, "researcher", "r"),
        "admin": bootstrap_token(hub_url, "admin", "a"),
        "enrolment": bootstrap_token(hub_url, "enrolment", "e"),
    }
    forever = bootstrap_token(hub_url, "researcher", "f", expires_in=None)
    short = bootstrap_token(hub_url, "researcher", "s", expires_in=3600)
    infos = {i.name: i for i in list_tokens(hub_url)}
    after = time.time()
    for role, name in (("researcher", "r"), ("admin", "a"), ("enrolment", "e")):
        exp = infos[name].expires_at
        assert exp is not None
        assert before + DEFAULT_EXPIRY[role] <= exp <= after + DEFAULT_EXPIRY[role]
        assert infos[name].hint == tokens[role][:12]
    assert DEFAULT_EXPIRY["researcher"] == 90 * DAY and DEFAULT_EXPIRY["enrolment"] == 7 * DAY
    assert infos["f"].expires_at is None and infos["f"].hint == forever[:12]
    assert before + 3600 <= infos["s"].expires_at <= after + 3600
    assert short.startswith("cre_")
    with pytest.raises(ValidationError, match="expires_in"):
        bootstrap_token(hub_url, "researcher", "z", expires_in=0)


def test_a_token_is_refused_from_the_instant_it_expires(tmp_path):
    db = str(tmp_path / "hub.sqlite")
    token = bootstrap_token(db, "researcher", "alice", expires_in=100)
    eng = make_engine(db)
    with Session(eng) as s:
        exp = s.scalar(sa.select(TokenRow.expires_at))
        assert resolve(s, token, now=exp - 1e-3).name == "alice"
        with pytest.raises(AuthenticationError, match="expired"):
            resolve(s, token, now=exp)
    eng.dispose()


def test_admins_list_and_revoke_tokens_through_the_api(client):
    c, db = client
    admin = bootstrap_token(db, "admin", "ops")
    r = c.post(
        "/v1/tokens",
        json={"role": "researcher", "name": "bob", "expires_in": 60},
        headers=bearer(admin),
    )
    assert r.status_code == 200, r.text
    bob, bob_id = r.json()["token"], r.json()["id"]
    assert 0 < r.json()["expires_at"] - time.time() <= 60
    listed = c.get("/v1/tokens", headers=bearer(admin)).json()
    assert [t["name"] for t in listed] == ["ops", "bob"]
    text = repr(listed)
    for secret in (admin, bob):  # never a secret, nor its hash
        assert secret not in text and hashlib.sha256(secret.encode()).hexdigest() not in text
    assert c.post(f"/v1/tokens/{bob_id}/revoke", headers=bearer(bob)).status_code == 403
    r = c.post(f"/v1/tokens/{bob_id}/revoke", headers=bearer(admin))
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    r = c.get("/v1/whoami", headers=bearer(bob))
    assert r.status_code == 401 and "revoked" in r.json()["detail"]
    assert c.post("/v1/tokens/999/revoke", headers=bearer(admin)).status_code == 404
    entries = c.get("/v1/audit", headers=bearer(admin)).json()
    assert [e["details"] for e in entries if e["action"] == "token.revoke"] == [
        {"id": bob_id, "role": "researcher", "name": "bob"}
    ]
    # an admin who revokes their own token locks themselves out at once
    me = c.get("/v1/tokens", headers=bearer(admin)).json()[0]["id"]
    assert c.post(f"/v1/tokens/{me}/revoke", headers=bearer(admin)).status_code == 200
    assert c.get("/v1/tokens", headers=bearer(admin)).status_code == 401


def test_a_revoked_or_expired_enrolment_token_enrols_nobody(client):
    c, db = client
    revoked = bootstrap_token(db, "enrolment", "hosp-a")
    expired = bootstrap_token(db, "enrolment", "hosp-b")
    revoke_token(db, revoked)  # by the whole token
    _expire(db, "hosp-b")
    for name, token, why in (("hosp-a", revoked, "revoked"), ("hosp-b", expired, "expired")):
        body = {"name": name, "peer_key": SiteIdentity.generate().peer_key(name).to_json()}
        r = c.post("/v1/enrol", json=body, headers=bearer(token))
        assert r.status_code == 401 and why in r.json()["detail"], r.text
    admin = bootstrap_token(db, "admin", "ops")
    assert c.get("/v1/nodes", headers=bearer(admin)).json() == []


# ---------------------------------------------------------------- CLI


def test_token_list_shows_ids_roles_expiry_and_state_never_secrets(tmp_path):
    db = str(tmp_path / "hub.sqlite")
    alice = _cli("token", "create", "--db", db, "--role", "researcher", "--name", "alice").strip()
    ops = _cli(
        "token", "create", "--db", db, "--role", "admin", "--name", "ops", "--expires-in", "never"
    ).strip()
    enrol = _cli(
        "hub", "enrolment-token", "create", "--db", db, "--node", "hosp-a", "--expires-in", "12h"
    ).strip()
    out = _cli("token", "list", "--db", db)
    for secret in (alice, ops, enrol):
        assert secret not in out and hashlib.sha256(secret.encode()).hexdigest() not in out
        assert secret[:12] in out
    assert re.search(r"1\s+researcher\s+alice", out) and "never" in out
    assert out.count("active") == 3
    _cli("token", "revoke", "1", "--db", db)
    assert "alice" not in _cli("token", "list", "--db", db)  # active ones only
    listed = _cli("hub", "token", "list", "--db", db, "--all")
    assert re.search(r"alice.*revoked \d{4}-\d\d-\d\d", listed)
    # revoking again changes nothing
    assert "revoked" in _cli("token", "revoke", alice, "--db", db)
    assert [i.state() for i in list_tokens(db)] == ["revoked", "active", "active"]


def test_token_revoke_names_exactly_one_token(tmp_path):
    db = str(tmp_path / "hub.sqlite")
    bootstrap_token(db, "researcher", "alice")
    runner = CliRunner()
    for ref, why in (
        ("42", "no token matches"),
        ("cre_", "at least 8"),
        ("cre_zzzzzzzz", "no token matches"),
    ):
        r = runner.invoke(main, ["token", "revoke", ref, "--db", db])
        assert r.exit_code != 0 and why in r.output, r.output
    r = runner.invoke(
        main,
        [
            "token",
            "create",
            "--db",
            db,
            "--role",
            "researcher",
            "--name",
            "x",
            "--expires-in",
            "0d",
        ],
    )
    assert r.exit_code != 0 and "--expires-in" in r.output
    assert parse_duration("2w") == 14 * DAY and parse_duration("90m") == 5400
    assert parse_duration("never") is None and parse_duration(None) == ROLE_DEFAULT


def test_revoking_on_a_keyed_hub_needs_its_key_and_keeps_the_log_verifiable(tmp_path):
    db = str(tmp_path / "hub.sqlite")
    key_file = tmp_path / "audit.key"
    write_key_file(key_file)
    settings = HubSettings(db=db, audit_key_file=str(key_file))
    keyed = ["--db", db, "--audit-key-file", str(key_file)]
    admin = _cli("token", "create", "--role", "admin", "--name", "ops", *keyed).strip()
    alice = _cli("token", "create", "--role", "researcher", "--name", "alice", *keyed).strip()
    r = CliRunner().invoke(main, ["token", "revoke", alice, "--db", db])
    assert r.exit_code != 0 and "audit key" in r.output
    _cli("token", "revoke", alice, *keyed)
    app = create_app(settings)
    with TestClient(app) as c:
        assert c.get("/v1/whoami", headers=bearer(alice)).status_code == 401
        report = c.get("/v1/audit/verify", headers=bearer(admin)).json()
        assert report["ok"] and report["n_entries"] == 3, report
    app.state.db.dispose()

"""Helpers of the in-process hub tests: enrol a node, publish a catalogue, bearer headers."""

from __future__ import annotations

from fastapi.testclient import TestClient

from consortia.hub import bootstrap_token
from consortia.privacy.keys import SiteIdentity

KM = {
    "name": "survival.kaplan_meier",
    "params": {"time": "time", "event": "event", "time_grid": [10.0, 20.0]},
}


def bearer(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


def enrol(c: TestClient, db: str, name: str, datasets: tuple[str, ...] = ("data",)) -> str:
    """Enrol node ``name`` through the API, publish ``datasets``; return its credential."""
    ident = SiteIdentity.generate()
    token = bootstrap_token(db, "enrolment", name)
    body = {"name": name, "peer_key": ident.peer_key(name).to_json()}
    r = c.post("/v1/enrol", json=body, headers=bearer(token))
    assert r.status_code == 200, r.text
    cred = r.json()["credential"]
    entries = {d: {"rows": 40} for d in datasets}
    r = c.put("/v1/node/catalogue", json={"datasets": entries}, headers=bearer(cred))
    assert r.status_code == 200, r.text
    return cred

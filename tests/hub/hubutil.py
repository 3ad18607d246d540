"""Helpers of the in-process hub tests: enrol a node, publish a catalogue, bearer headers."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from consortia.hub import bootstrap_token
from consortia.hub.payloads import read_blob
from consortia.messages import TaskMessage
from consortia.privacy.keys import SiteIdentity
from consortia.runtime.task import Task
from consortia.wire import unpack_arrays

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


def task_of(engine: Engine, node: str, msg: dict[str, Any]) -> Task:
    """The Task of a task message, its public arrays read by digest as the node's fetch does."""
    m = TaskMessage.model_validate(msg)
    public = {}
    if m.public is not None:
        raw = read_blob(engine, node, m.public.sha256)
        assert hashlib.sha256(raw).hexdigest() == m.public.sha256 and len(raw) == m.public.size
        public = unpack_arrays(raw, copy=True)
    return m.to_task(public)

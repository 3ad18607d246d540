"""Hostile or malformed requests: each is a clear 4xx naming the field, never a 500."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hubutil import KM, bearer, enrol

from consortia.hub import HubSettings, bootstrap_token, create_app


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

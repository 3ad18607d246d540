"""The node's keep-alive link to the hub: answers, reconnection, transport errors."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time

import httpx
import numpy as np
import pytest

from consortia.hub import HubProcess, HubSettings
from consortia.hub.app import RETRY_AFTER, SLOT_WAIT
from consortia.hub.process import free_port
from consortia.messages import ContributionHeader
from consortia.node import NodeConfig
from consortia.node.agent import NodeAgent
from consortia.node.link import EXPECT_CONTINUE_MIN, HubLink
from consortia.privacy.keys import SiteIdentity
from consortia.privacy.secagg import Layout
from consortia.wire import CONTENT_TYPE, pack_parts


def test_link_answers_reconnects_after_a_hub_restart_and_reports_transport_errors(tmp_path):
    with HubProcess(tmp_path / "hub.sqlite") as hub:
        link = HubLink(hub.url + "/", timeout=10)
        path = "/v1/node/studies/s/rounds/0/attempts/0/reveal?wait=0.0"
        headers = {"Authorization": "Bearer cno_unknown", "Content-Type": "application/json"}
        r = link.post(path, b'{"seed": "00"}', headers)
        assert r.status_code == 401 and "bearer" in r.json()["detail"] and r.text
        hub.kill()  # the kept-alive connection dies with the hub
        with pytest.raises(httpx.TransportError):
            link.post(path, b"{}", headers)
        hub.start()
        assert link.post(path, b"{}", headers).status_code == 401  # a fresh connection
        link.close()
    with pytest.raises(httpx.TransportError):
        HubLink(f"http://127.0.0.1:{free_port()}", connect_timeout=2).post("/x", b"", {})
    with pytest.raises(ValueError, match="http"):
        HubLink("ftp://hub")


def _node_credential(hub: HubProcess, name: str) -> str:
    body = {"name": name, "peer_key": SiteIdentity.generate().peer_key(name).to_json()}
    token = hub.create_token("enrolment", name)
    r = httpx.post(f"{hub.url}/v1/enrol", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return str(r.json()["credential"])


def _hold_every_slot(
    hub: HubProcess, path: str, headers: dict[str, str], slots: int
) -> list[socket.socket]:
    """Uploads that never finish hold every slot (sent without announcing their body)."""
    stuck = []
    for _ in range(slots):
        sock = socket.create_connection((hub.host, hub.port))
        head = [f"POST {path} HTTP/1.1", f"Host: {hub.host}", "Content-Length: 10000000"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + b"x" * 65536)
        stuck.append(sock)
    return stuck


def _wait_until_busy(hub, path: str, headers: dict) -> None:
    """Wait (generous ceiling) until the hub has the stuck uploads in every slot.

    Until it has read their heads, a new upload could still take a slot.
    """
    masked = np.arange(EXPECT_CONTINUE_MIN, dtype=np.uint64)
    link = HubLink(hub.url, timeout=30)
    try:
        deadline = time.monotonic() + 60
        while True:
            r = link.post(path, pack_parts({"masked": masked}), headers)
            if r.status_code == 503:
                return
            assert time.monotonic() < deadline, "the stuck uploads never filled the slots"
            time.sleep(0.05)
    finally:
        link.close()


def test_a_busy_hub_answers_an_announced_body_at_once_and_takes_it_when_a_slot_frees(tmp_path):
    """Every upload slot taken: 503 + Retry-After before the body is sent, never a queue."""
    masked = np.arange(EXPECT_CONTINUE_MIN, dtype=np.uint64)  # 8 x the announcing size
    layout = Layout.from_json([["v", [masked.size]]])
    headers = {
        **ContributionHeader.of(layout).to_headers(),
        "Content-Type": CONTENT_TYPE,
    }
    path = "/v1/node/studies/nope/rounds/0/attempts/0/contribution"
    slots = next(
        f.default for f in dataclasses.fields(HubSettings) if f.name == "max_concurrent_uploads"
    )
    with HubProcess(tmp_path / "hub.sqlite") as hub:
        headers["Authorization"] = f"Bearer {_node_credential(hub, 'n0')}"
        stuck = _hold_every_slot(hub, path, headers, slots)
        link = HubLink(hub.url, timeout=30)
        parts = pack_parts({"masked": masked})
        deadline = time.monotonic() + 60  # generous: the hub must first read the stuck ones
        while True:
            r = link.post(path, parts, headers)
            if r.status_code == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # the stuck uploads are not in their slots yet
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        assert r.retry_after() == RETRY_AFTER
        for sock in stuck:
            sock.close()  # the hub drops the half-read bodies and frees their slots
        while True:
            r = link.post(path, parts, headers)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        # the body was read this time: the study is unknown to the hub
        assert r.status_code == 404, r.text
        small = link.post(path, b"{}", headers)  # a small body is sent at once, unannounced
        assert small.status_code == 404
        link.close()


def test_a_node_waits_its_turn_while_the_hub_is_busy_and_then_posts(tmp_path):
    """The agent honours Retry-After (bounded) instead of failing or re-sending a payload."""
    masked = np.arange(EXPECT_CONTINUE_MIN, dtype=np.uint64)
    layout = Layout.from_json([["v", [masked.size]]])
    path = "/v1/node/studies/nope/rounds/0/attempts/0/contribution"
    slots = next(
        f.default for f in dataclasses.fields(HubSettings) if f.name == "max_concurrent_uploads"
    )
    with HubProcess(tmp_path / "hub.sqlite") as hub:
        cfg = NodeConfig(name="n0", hub=hub.url, data_dir=tmp_path / "n0", datasets=(), poll_wait=5)
        agent = NodeAgent(cfg)
        try:
            agent.enrol(hub.create_token("enrolment", "n0"))
            headers = {**agent._auth(), **ContributionHeader.of(layout).to_headers()}
            headers["Content-Type"] = CONTENT_TYPE
            stuck = _hold_every_slot(hub, path, headers, slots)
            _wait_until_busy(hub, path, headers)
            answers: list = []
            post = threading.Thread(
                target=lambda: answers.append(
                    agent._post(
                        path,
                        pack_parts({"masked": masked}),
                        content_type=CONTENT_TYPE,
                        headers=ContributionHeader.of(layout).to_headers(),
                    )
                )
            )
            post.start()
            # every answer it can get meanwhile is a 503: it must still be trying
            post.join(2 * SLOT_WAIT + 2 * RETRY_AFTER)
            assert post.is_alive() and not answers
            for sock in stuck:
                sock.close()
            post.join(120)
            assert not post.is_alive()
            (r,) = answers
            assert r is not None and r.status_code == 404  # taken: the study is unknown
        finally:
            agent.close()

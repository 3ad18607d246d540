"""The node's keep-alive link to the hub: answers, reconnection, transport errors."""

from __future__ import annotations

import httpx
import pytest

from consortia.hub import HubProcess
from consortia.hub.process import free_port
from consortia.node.link import HubLink


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

"""A hub and its node agents in this process, reached over HTTP or in memory.

``mode="http"``: the hub's FastAPI app served by uvicorn in a thread on a loopback
port, nodes and researcher through the HTTP transports (the real wire, without
child processes).  ``mode="memory"``: the hub's study engine called directly
through the in-memory transports.  Node agents run their own loop
(:meth:`NodeAgent.run`) in threads, so a test can register an algorithm that
blocks on an event.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from pathlib import Path

import pandas as pd
import uvicorn

from consortia.data import load_dataset
from consortia.hub import bootstrap_token
from consortia.hub.app import create_app
from consortia.hub.db import make_engine
from consortia.hub.service import StudyEngine
from consortia.hub.settings import HubSettings
from consortia.node import DatasetConfig, NodeAgent, NodeConfig
from consortia.node.identity import mutual_pins
from consortia.privacy.policy import Policy
from consortia.sdk import RemoteFederation
from consortia.transport.memory import MemoryNodeTransport, MemoryResearcherTransport

MODES = ("http", "memory")
PATIENCE = 120.0  # generous ceiling of every wait (a loaded machine is slow, never wrong)


class LocalFederation:
    """A hub, one node agent per site (each in a thread) and a researcher's client.

    Parameters
    ----------
    root
        A private folder (hub database, node state, the sites' CSV files).
    sites
        Site name -> its ``data`` table.
    mode
        ``http`` or ``memory``.
    node_timeout
        The hub's node timeout (nodes heartbeat at a third of it).
    max_tasks
        Each node's ``max_tasks``.
    node_options
        Node name -> NodeConfig fields that replace the defaults.
    """

    def __init__(
        self,
        root: Path,
        sites: dict[str, pd.DataFrame],
        *,
        mode: str,
        node_timeout: float = 20.0,
        max_tasks: int = 4,
        node_options: dict[str, dict] | None = None,
    ) -> None:
        self.root, self.mode = root, mode
        db = str(root / "hub.sqlite")
        self._server: uvicorn.Server | None = None
        self._threads: list[threading.Thread] = []
        if mode == "http":
            app = create_app(HubSettings(db=db, node_timeout=node_timeout))
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            self._server = uvicorn.Server(
                uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
            )
            server = threading.Thread(
                target=self._server.run, kwargs={"sockets": [sock]}, daemon=True
            )
            server.start()
            self._threads.append(server)
            self.url = f"http://127.0.0.1:{port}"
            self.hub: StudyEngine = app.state.studies
            _wait(lambda: self._server is not None and self._server.started, "the hub to start")
        else:
            self.url = "http://memory.invalid"
            self.hub = StudyEngine(make_engine(db), node_timeout=node_timeout)
            self.hub.start()
        pins = mutual_pins({name: root / name for name in sites})
        self.agents: dict[str, NodeAgent] = {}
        for name, frame in sites.items():
            csv = root / f"{name}.csv"
            frame.to_csv(csv, index=False)
            cfg = NodeConfig(
                name=name,
                hub=self.url,
                data_dir=root / name,
                datasets=(DatasetConfig(name="data", path=csv, policy=Policy()),),
                poll_wait=1,
                peers=pins[name],
                max_tasks=max_tasks,
            )
            cfg = dataclasses.replace(cfg, **(node_options or {}).get(name, {}))
            transport = MemoryNodeTransport(self.hub) if mode == "memory" else None
            agent = NodeAgent(cfg, transport=transport)
            agent.enrol(bootstrap_token(db, "enrolment", name))
            self.agents[name] = agent
        if mode == "http":
            self.fed = RemoteFederation(self.url, bootstrap_token(db, "researcher", "alice"))
        else:
            self.fed = RemoteFederation(transport=MemoryResearcherTransport(self.hub, "alice"))
        for agent in self.agents.values():
            t = threading.Thread(target=agent.run, daemon=True, name=f"agent-{agent.config.name}")
            t.start()
            self._threads.append(t)
        _wait(lambda: len(self.fed.catalogue()) == len(sites), "the nodes to publish")

    def datasets(self) -> dict:
        """The sites' ``data`` as the nodes loaded it from their files (for the simulation)."""
        out = {}
        for name, agent in self.agents.items():
            (ds,) = agent.config.datasets
            out[name] = load_dataset(str(ds.path), schema=ds.schema, name=ds.name)
        return out

    def stop(self) -> None:
        """Stop the agents, then the hub."""
        for agent in self.agents.values():
            agent.stop()
        for t in self._threads[1 if self._server is not None else 0 :]:
            t.join(PATIENCE)
        for agent in self.agents.values():
            agent.close()
        self.fed.close()
        if self._server is not None:
            self._server.should_exit = True
            self._threads[0].join(PATIENCE)
        else:
            self.hub.stop()
        self.hub.engine.dispose()


def _wait(pred, what: str) -> None:
    done = threading.Event()
    for _ in range(int(PATIENCE / 0.02)):
        if pred():
            return
        done.wait(0.02)
    raise AssertionError(f"timed out waiting for {what}")

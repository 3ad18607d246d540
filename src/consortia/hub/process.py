"""Start and stop a hub as a real process (for the demo, benchmarks and tests)."""

from __future__ import annotations

import os
import socket
import ssl
import sys
import time
from pathlib import Path

import httpx

from consortia._child import ChildProcess
from consortia.audit import read_key_file
from consortia.errors import ConsortiaError
from consortia.hub import settings as defaults
from consortia.hub.app import bootstrap_token

__all__ = ["HubProcess", "free_port"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class HubProcess(ChildProcess):
    """A hub running as ``python -m consortia.hub`` in a child process.

    Parameters
    ----------
    db
        SQLAlchemy URL or SQLite file path.
    port
        TCP port (a free one if omitted).
    host
        Interface to bind (plain HTTP is allowed on loopback only).
    node_timeout, reveal_timeout, max_payload, approval_timeout
        See :class:`~consortia.hub.settings.HubSettings` (defaults from
        :mod:`consortia.hub.settings`).
    tls_cert, tls_key, ca
        Serve HTTPS with this chain and key; ``ca`` is what clients should trust.
    log
        File to receive the hub's stderr/stdout (default: discarded).
    audit_key_file
        The hub's audit HMAC key file (tokens created here are MACed with it too).
    process_group
        See :class:`consortia._child.ChildProcess` (0: lead a new group; a gid: join it).

    Examples
    --------
    >>> with HubProcess("hub.sqlite") as hub:              # doctest: +SKIP
    ...     token = hub.create_token("researcher", "alice")
    ...     print(hub.url)
    """

    def __init__(
        self,
        db: str | Path,
        *,
        port: int | None = None,
        host: str = defaults.HOST,
        node_timeout: float = defaults.NODE_TIMEOUT,
        reveal_timeout: float = defaults.REVEAL_TIMEOUT,
        max_payload: int = defaults.MAX_PAYLOAD,
        approval_timeout: float = defaults.APPROVAL_TIMEOUT,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        ca: str | Path | None = None,
        log: str | Path | None = None,
        process_group: int | None = None,
        audit_key_file: str | Path | None = None,
    ) -> None:
        self.db = str(db)
        self.host = host
        self.port = port or free_port(host)
        self.node_timeout = node_timeout
        self.reveal_timeout = reveal_timeout
        self.max_payload = max_payload
        self.approval_timeout = approval_timeout
        self.tls_cert, self.tls_key, self.ca = tls_cert, tls_key, ca
        self.audit_key_file = audit_key_file
        super().__init__(log=log, process_group=process_group)

    @property
    def url(self) -> str:
        """The hub's base URL."""
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line that starts the hub."""
        cmd = [
            sys.executable,
            "-m",
            "consortia.hub",
            "--db",
            self.db,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--node-timeout",
            str(self.node_timeout),
            "--reveal-timeout",
            str(self.reveal_timeout),
            "--max-payload",
            str(self.max_payload),
            "--approval-timeout",
            str(self.approval_timeout),
        ]
        if self.audit_key_file:
            cmd += ["--audit-key-file", str(self.audit_key_file)]
        if self.tls_cert:
            cmd += ["--tls-cert", str(self.tls_cert), "--tls-key", str(self.tls_key)]
        else:
            cmd.append("--insecure-http")
        return cmd

    def start(self, timeout: float = 120.0) -> HubProcess:
        """Start the process and wait until it answers (at most ``timeout`` seconds)."""
        if self.running:
            return self
        env = os.environ.copy()
        # large payloads: keep glibc from growing its mmap threshold (and the hub's RSS)
        env.setdefault("MALLOC_MMAP_THRESHOLD_", "1048576")
        self._spawn(env)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Wait until ``/healthz`` answers; raise if the process died or time ran out."""
        verify: ssl.SSLContext | bool = True
        if self.ca:
            verify = ssl.create_default_context(cafile=str(self.ca))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc is not None and self.proc.poll() is not None:
                raise ConsortiaError(f"the hub exited with code {self.proc.returncode}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1, verify=verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise ConsortiaError(f"the hub did not answer within {timeout:g}s")

    def create_token(self, role: str, name: str) -> str:
        """Create a token (``admin``, ``researcher`` or ``enrolment``) in the hub's database.

        For an enrolment token, ``name`` is the node it is for (``"*"``: any node).
        """
        key = read_key_file(self.audit_key_file) if self.audit_key_file else None
        return bootstrap_token(self.db, role, name, audit_key=key)

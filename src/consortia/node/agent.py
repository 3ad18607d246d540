"""The node agent: enrols once, publishes its catalogue, long-polls the hub and answers tasks.

The node only ever opens outbound connections.  It reaches the hub through a
:class:`~consortia.transport.NodeTransport` (HTTP(S) by default, or a hub in the
same process).  Each task is answered through :class:`consortia.runtime.SiteWorker`,
the same policy, encoding and masking path as the simulation
(:mod:`consortia.node.tasks`); up to ``max_tasks`` tasks of different attempts are
answered at once (:mod:`consortia.node.dispatch`), so a study's long local step
never holds another study's rounds back.  The secure-aggregation ledger lives in
the node's own SQLite (:class:`~consortia.node.store.SqlLedger`), so a restarted
node keeps the one-reveal-per-round rule and picks its work up again.  Every
release (array names and shapes, never values) and every refusal (the rule) is
written to the node's own audit log.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consortia.data import catalogue, load_dataset
from consortia.errors import ConsortiaError, HubUnreachable, ProtocolError, ValidationError
from consortia.node._helpers import audit_key, settle_gc, tls_verify
from consortia.node.approvals import Approvals
from consortia.node.config import NodeConfig
from consortia.node.dispatch import Dispatcher
from consortia.node.identity import fingerprint, load_identity, read_private, write_private
from consortia.node.payloads import BlobCache
from consortia.node.store import NodeStore
from consortia.node.tasks import TaskAnswerer
from consortia.runtime.site import SiteWorker
from consortia.transport.base import NodeTransport, Reply
from consortia.transport.http import HttpNodeTransport

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["NodeAgent"]

log = logging.getLogger("consortia.node")

BUSY_POLL = 0.25
"""Seconds between polls while tasks are being answered (the hub lists them until answered).

The delay doubles while nothing starts or ends, up to :data:`MAX_BUSY_POLL`."""
MAX_BUSY_POLL = 1.0
"""Longest delay between polls while tasks are being answered, in seconds."""


class NodeAgent:
    """One institution's node.

    Parameters
    ----------
    config
        The node's configuration (see :mod:`consortia.node.config`).
    transport
        How the hub is reached (default: HTTP(S) to ``config.hub``, see
        :class:`~consortia.transport.HttpNodeTransport`).

    Examples
    --------
    >>> agent = NodeAgent(load_config("node.toml"))  # doctest: +SKIP
    >>> agent.enrol("cen_...")                        # once, with a token from the hub admin
    >>> agent.run()                                   # until stop() or SIGTERM
    """

    def __init__(self, config: NodeConfig, *, transport: NodeTransport | None = None) -> None:
        self.config = config
        self.identity = load_identity(config.data_dir)
        self.store = NodeStore(config.data_dir, audit_key=audit_key(config), fsync=config.fsync)
        self.approvals = Approvals(
            self.store.engine,
            self.store.audit,
            mode=config.approval,
            auto_approve=config.auto_approve,
        )
        self._stop = threading.Event()
        self._secret: str | None = None
        if transport is None:
            transport = HttpNodeTransport(
                config.hub,
                self._credential,
                verify=tls_verify(config),
                timeout=config.poll_wait + 30,
            )
        self.transport = transport
        self._worker: SiteWorker | None = None
        self.blobs = BlobCache()  # rounds' public arrays by digest (verified)
        self.unavailable: dict[str, str] = {}  # dataset -> error class (it did not load)
        self.tasks = TaskAnswerer(self)

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of this node's identity key (peers may pin it)."""
        return fingerprint(self.identity.identity_public)

    @property
    def _credential_path(self) -> Path:
        return self.config.data_dir / "credential"

    # ------------------------------------------------------------------ enrolment

    def enrol(self, token: str) -> str:
        """Enrol with a one-time enrolment token; store the credential (0600) and return it."""
        peer = self.identity.peer_key(self.config.name)
        credential = self.transport.enrol(token, self.config.name, peer.to_json())
        write_private(self._credential_path, credential.encode())
        self._secret = None
        self.store.audit.append(
            f"node:{self.config.name}",
            "enrol",
            {"hub": self.config.hub, "fingerprint": self.fingerprint},
        )
        return credential

    def _credential(self) -> str:
        if self._secret is None:  # read once: the credential never changes
            if not self._credential_path.exists():
                raise ValidationError(
                    f"node {self.config.name!r} is not enrolled: run `consortia node enrol` first"
                )
            self._secret = read_private(self._credential_path).decode()
        return self._secret

    def _auth(self) -> dict[str, str]:
        """The node's ``Authorization`` header (for tools and tests that call the hub)."""
        return {"Authorization": f"Bearer {self._credential()}"}

    # ------------------------------------------------------------------ datasets

    def worker(self) -> SiteWorker:
        """Load the datasets (validated against their schemas) into a SiteWorker.

        A dataset that fails to load (missing file, schema error...) is left out and
        listed in :attr:`unavailable` (its error class only); the others are served.
        """
        if self._worker is None:
            datasets, policies = {}, {}
            for ds in self.config.datasets:
                try:
                    datasets[ds.name] = load_dataset(
                        str(ds.path),
                        schema=ds.schema,
                        name=ds.name,
                        expression=str(ds.expression) if ds.expression else None,
                        tiles=str(ds.tiles) if ds.tiles else None,
                        expression_layer=ds.expression_layer,
                        expression_patient_id=ds.expression_patient_id,
                        expression_gene_id=ds.expression_gene_id,
                        expression_obs=ds.expression_obs,
                    )
                except (ConsortiaError, OSError, ValueError, TypeError, KeyError) as exc:
                    # the message stays in the node's own log; the hub sees only the class
                    log.error("dataset %r is unavailable: %s: %s", ds.name, type(exc).__name__, exc)
                    self.unavailable[ds.name] = type(exc).__name__
                    self.store.audit.append(
                        f"node:{self.config.name}",
                        "dataset.unavailable",
                        {"dataset": ds.name, "error": type(exc).__name__},
                    )
                    continue
                policies[ds.name] = ds.policy
            self._worker = SiteWorker(
                self.config.name,
                datasets,
                policies=policies,
                identity=self.identity,
                ledger=self.store.ledger,
                releases=self.store.releases,
            )
        return self._worker

    def publish(self) -> dict[str, Any]:
        """Publish the catalogue (names, columns, types, rounded counts; no values)."""
        worker = self.worker()
        entries = {name: catalogue(ds) for name, ds in worker.datasets.items()}
        for name in self.unavailable:  # listed, without details, so that none is silent
            entries[name] = {"name": name, "available": False}
        self.transport.publish(entries)
        self.store.audit.append(
            f"node:{self.config.name}", "catalogue.publish", {"datasets": sorted(entries)}
        )
        return entries

    # ------------------------------------------------------------------ loop

    def stop(self) -> None:
        """Ask :meth:`run` to return (after the tasks being answered)."""
        self._stop.set()
        self.transport.stop()

    def run(self) -> None:
        """Publish the catalogue, then long-poll and answer tasks until :meth:`stop`.

        Up to ``max_tasks`` tasks (of different attempts) are answered at once.
        """
        backoff, busy = 0.1, BUSY_POLL
        published = False
        dispatcher = Dispatcher(self.handle, self.config.max_tasks, self.tasks.holds)
        try:
            while not self._stop.is_set():
                try:
                    if not published:
                        self.publish()
                        published = True
                        settle_gc()
                        # tells a supervisor (NodeProcess.wait_ready) that this process serves
                        (self.config.data_dir / "agent.pid").write_text(f"{os.getpid()}\n")
                    asked = time.monotonic()
                    if dispatcher.pending():  # an answer brought the node's open tasks back
                        queue = []
                    else:  # while tasks run, the hub lists them: it would not wait
                        wait = 0.0 if dispatcher.running else self.config.poll_wait
                        queue = self.transport.poll(wait)
                    if self._stop.is_set():
                        break
                    started, held = dispatcher.offer(queue, asked)
                    if held and not started and not dispatcher.running:
                        # only refused tasks: wait for the first hold to end
                        self._stop.wait(self.tasks.holds.left(self.config.poll_wait))
                    busy = BUSY_POLL if started else min(2 * busy, MAX_BUSY_POLL)
                    if self._await(dispatcher, asked, busy):
                        busy = BUSY_POLL
                    backoff = 0.1
                except (HubUnreachable, ProtocolError) as exc:
                    log.warning("hub unreachable or refusing (%s); retrying in %.1fs", exc, backoff)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 2.0)
        finally:
            dispatcher.wake()
            dispatcher.shutdown()

    def _await(self, dispatcher: Dispatcher, polled: float, busy: float) -> bool:
        """While tasks run, wait until one ends or the hub should be polled again.

        A task posting its answer long-polls the hub for the node's next tasks
        itself; only while a task computes (its study's task is listed until it is
        answered, so the hub's long-poll would not wait) is the hub polled, every
        ``busy`` seconds once that task has computed :data:`BUSY_POLL` seconds.
        Returns whether a task ended.
        """
        while dispatcher.running and not dispatcher.pending() and not self._stop.is_set():
            age = self.tasks.computing_age()
            now = time.monotonic()
            if age is None:  # every running task is at the hub (look again shortly)
                timeout = MAX_BUSY_POLL
            else:
                due = max(polled + busy, now - age + BUSY_POLL)
                if now >= due:
                    return False
                timeout = due - now
            if dispatcher.wait(timeout):
                return True
        return False

    def run_once(self, wait: float = 0.0) -> int:
        """Poll once and answer the tasks received, one after the other; return how many."""
        tasks = self.transport.poll(wait)
        for task in tasks:
            self.handle(task, follow=0.0)
        return len(tasks)

    def handle(self, msg: Mapping[str, Any], *, follow: float | None = None) -> list[dict]:
        """Answer one task message from the hub (see :meth:`TaskAnswerer.handle
        <consortia.node.tasks.TaskAnswerer.handle>`); return the next tasks that came back."""
        return self.tasks.handle(msg, follow=follow)

    def pins(self, study_id: str | None = None) -> dict[str, str]:
        """The peers this node's owner trusts: ``[peers]`` merged with the CLI's pins."""
        return self.tasks.pins(study_id)

    def _post(
        self,
        path: str,
        body: bytes | Sequence[Buffer],
        *,
        content_type: str = "application/json",
        wait: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply | None:
        """POST through the HTTP transport's keep-alive link (retried; see its ``post``)."""
        if not isinstance(self.transport, HttpNodeTransport):
            raise ValidationError("_post needs the HTTP transport")
        return self.transport.post(
            path, body, content_type=content_type, wait=wait, headers=headers
        )

    def close(self) -> None:
        """Close the transport and the database."""
        self.transport.close()
        self.store.close()

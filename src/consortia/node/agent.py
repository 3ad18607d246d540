"""The node agent: enrols once, publishes its catalogue, long-polls the hub and answers tasks.

The node only ever opens outbound connections.  Each task is answered through
:class:`consortia.runtime.SiteWorker`, the same policy, encoding and masking
path as the simulation; the secure-aggregation ledger lives in the node's own
SQLite (:class:`~consortia.node.store.SqlLedger`), so a restarted node keeps
the one-reveal-per-round rule and picks its work up again.  Every release
(array names and shapes, never values) and every refusal (the rule) is written
to the node's own audit log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from consortia.data import catalogue, load_dataset
from consortia.errors import (
    AlgorithmError,
    ConsortiaError,
    PolicyError,
    ProtocolError,
    ValidationError,
)
from consortia.messages import (
    ContributionHeader,
    RefusalKind,
    RefusalMessage,
    RevealMessage,
    ShareMessage,
    TaskKind,
    TaskMessage,
    refusal_kind,
)
from consortia.node._helpers import (
    audit_key,
    detail,
    next_tasks,
    release_details,
    settle_gc,
    tls_verify,
)
from consortia.node.approvals import Approvals, study_digest
from consortia.node.config import NodeConfig
from consortia.node.identity import fingerprint, load_identity, read_private, write_private
from consortia.node.link import EXPECT_CONTINUE_MIN, Answer, HubLink
from consortia.node.payloads import BlobCache, fetch_blob
from consortia.node.store import NodeStore
from consortia.runtime.site import SiteWorker
from consortia.runtime.task import Task
from consortia.wire import CONTENT_TYPE, DEFAULT_MAX_BYTES, pack_parts, unpack_arrays

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["NodeAgent"]

log = logging.getLogger("consortia.node")


class NodeAgent:
    """One institution's node.

    Parameters
    ----------
    config
        The node's configuration (see :mod:`consortia.node.config`).

    Examples
    --------
    >>> agent = NodeAgent(load_config("node.toml"))  # doctest: +SKIP
    >>> agent.enrol("cen_...")                        # once, with a token from the hub admin
    >>> agent.run()                                   # until stop() or SIGTERM
    """

    def __init__(self, config: NodeConfig) -> None:
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
        verify = tls_verify(config)
        self._client = httpx.Client(
            base_url=config.hub,
            verify=verify,
            timeout=httpx.Timeout(config.poll_wait + 30, connect=10),
        )
        # the per-round posts (vector, seed, refusal) use a lighter keep-alive connection
        self._link = HubLink(
            config.hub,
            ssl_context=verify if isinstance(verify, ssl.SSLContext) else None,
            timeout=config.poll_wait + 30,
        )
        self._worker: SiteWorker | None = None
        self._trusted: dict[str, bytes] = {}
        self._pins: tuple[str, dict[str, str]] | None = None  # (study, pins read for it)
        self._pinned = dict(config.peers)
        self._auth_header: dict[str, str] | None = None
        # (study, round, attempt) -> (monotonic time until which it is held, last delay):
        # a task whose post the hub refused (4xx) is not answered again before then
        self._held: dict[tuple[str, int, int], tuple[float, float]] = {}
        self.blobs = BlobCache()  # rounds' public arrays by digest (verified)
        self.unavailable: dict[str, str] = {}  # dataset -> error class (it did not load)

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of this node's identity key (peers may pin it)."""
        return fingerprint(self.identity.identity_public)

    @property
    def _credential_path(self):
        return self.config.data_dir / "credential"

    # ------------------------------------------------------------------ enrolment

    def enrol(self, token: str) -> str:
        """Enrol with a one-time enrolment token; store the credential (0600) and return it."""
        peer = self.identity.peer_key(self.config.name)
        r = self._client.post(
            "/v1/enrol",
            json={"name": self.config.name, "peer_key": peer.to_json()},
            headers={"Authorization": f"Bearer {token}"},
        )
        if r.status_code != 200:
            raise ProtocolError(f"enrolment refused ({r.status_code}): {detail(r)}")
        credential = r.json()["credential"]
        write_private(self._credential_path, credential.encode())
        self._auth_header = None
        self.store.audit.append(
            f"node:{self.config.name}",
            "enrol",
            {"hub": self.config.hub, "fingerprint": self.fingerprint},
        )
        return credential

    def _auth(self) -> dict[str, str]:
        if self._auth_header is None:  # read once: the credential never changes
            if not self._credential_path.exists():
                raise ValidationError(
                    f"node {self.config.name!r} is not enrolled: run `consortia node enrol` first"
                )
            secret = read_private(self._credential_path).decode()
            self._auth_header = {"Authorization": f"Bearer {secret}"}
        return self._auth_header

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
        r = self._client.put("/v1/node/catalogue", json={"datasets": entries}, headers=self._auth())
        if r.status_code != 200:
            raise ProtocolError(f"catalogue refused ({r.status_code}): {detail(r)}")
        self.store.audit.append(
            f"node:{self.config.name}", "catalogue.publish", {"datasets": sorted(entries)}
        )
        return entries

    # ------------------------------------------------------------------ loop

    def stop(self) -> None:
        """Ask :meth:`run` to return after the current request."""
        self._stop.set()

    def run(self) -> None:
        """Publish the catalogue, then long-poll and answer tasks until :meth:`stop`."""
        backoff = 0.1
        published = False
        while not self._stop.is_set():
            try:
                if not published:
                    self.publish()
                    published = True
                    settle_gc()
                    # tells a supervisor (NodeProcess.wait_ready) that this process is serving
                    (self.config.data_dir / "agent.pid").write_text(f"{os.getpid()}\n")
                r = self._client.get(
                    "/v1/node/tasks", params={"wait": self.config.poll_wait}, headers=self._auth()
                )
                if r.status_code != 200:
                    raise ProtocolError(f"task poll refused ({r.status_code}): {detail(r)}")
                try:
                    queue = r.json()
                except ValueError:
                    raise ProtocolError("the task poll answer is not JSON") from None
                if not isinstance(queue, list):
                    raise ProtocolError("the task poll answer is not a list of tasks")
                answered = held = 0
                while queue and not self._stop.is_set():
                    msg = queue.pop(0)
                    if self._holding(msg):
                        held += 1
                        continue
                    answered += 1
                    # each answer brings back the node's next tasks (no extra poll)
                    queue.extend(t for t in self.handle(msg) if t not in queue)
                if held and not answered:  # only refused tasks: wait for the first hold to end
                    self._stop.wait(self._hold_left())
                backoff = 0.1
            except (httpx.TransportError, ProtocolError) as exc:
                log.warning("hub unreachable or refusing (%s); retrying in %.1fs", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)

    # ------------------------------------------------------------------ refused posts

    @staticmethod
    def _key(msg: Mapping[str, Any]) -> tuple[str, int, int] | None:
        try:
            return (str(msg["study_id"]), int(msg["round_index"]), int(msg["attempt"]))
        except (KeyError, TypeError, ValueError):
            return None

    def _holding(self, msg: Any) -> bool:
        """Whether a task is held back because the hub refused this node's last post for it."""
        key = self._key(msg) if isinstance(msg, Mapping) else None
        hold = self._held.get(key) if key is not None else None
        return hold is not None and hold[0] > time.monotonic()

    def _hold_left(self) -> float:
        now = time.monotonic()
        left = [until - now for until, _ in self._held.values() if until > now]
        return min([*left, self.config.poll_wait])

    def _answered(self, task: Task, what: str, r: Answer | None) -> None:
        """Note the hub's answer to a post: a 4xx holds the task back (1 s doubling to 60 s).

        The refusal is logged and written to the node's audit log; the task is not
        answered again before its hold ends (a post the hub refuses is never retried
        in a loop).  A 2xx answer clears the hold.
        """
        key = (task.study_id, task.round_index, task.attempt)
        if r is None or r.status_code < 400:
            self._held.pop(key, None)
            return
        if r.status_code >= 500:
            log.warning("the hub failed on this node's %s (%s)", what, r.status_code)
            return
        delay = self._hold(key)
        log.warning(
            "the hub refused this node's %s (%s): %s; not retried for %.0fs",
            what,
            r.status_code,
            detail(r),
            delay,
        )
        self.store.audit.append(
            f"node:{self.config.name}",
            "post.rejected",
            {
                "study": task.study_id,
                "round": task.round_index,
                "attempt": task.attempt,
                "post": what,
                "status": r.status_code,
                "retry_after": delay,
            },
        )

    def _hold(self, key: tuple[str, int, int]) -> float:
        """Hold a task back (1 s, doubling to 60 s); return the delay."""
        now = time.monotonic()
        delay = min(max(1.0, 2 * self._held.get(key, (0.0, 0.0))[1]), _MAX_HOLD)
        for k in [k for k, (until, _) in self._held.items() if until < now - _MAX_HOLD]:
            del self._held[k]  # forgotten tasks
        self._held[key] = (now + delay, delay)
        return delay

    def run_once(self, wait: float = 0.0) -> int:
        """Poll once and answer the tasks received; return how many (for tests and tools)."""
        r = self._client.get("/v1/node/tasks", params={"wait": wait}, headers=self._auth())
        r.raise_for_status()
        tasks = r.json()
        for task in tasks:
            self.handle(task, follow=0.0)
        return len(tasks)

    # ------------------------------------------------------------------ one task

    def _task(self, msg: Mapping[str, Any] | TaskMessage) -> Task:
        """Validate a task message and fetch its round's public arrays (by digest).

        A reveal, or a round without public arrays, needs no fetch; a fetched frame
        is checked against its digest and cached (:attr:`blobs`).

        Raises
        ------
        pydantic.ValidationError
            The message is not a :class:`~consortia.messages.TaskMessage`.
        ProtocolError
            The public arrays could not be fetched or are not what the task announced
            (the task is then held back, as after a refused post).
        httpx.TransportError
            The hub could not be reached.
        """
        m = msg if isinstance(msg, TaskMessage) else TaskMessage.model_validate(msg)
        if m.kind is TaskKind.REVEAL or m.public is None:
            return m.to_task({})
        try:
            raw = fetch_blob(
                self._client, m.public, self._auth(), cache=self.blobs, max_bytes=_MAX_PUBLIC
            )
            public = unpack_arrays(raw, max_bytes=_MAX_PUBLIC, copy=True)
        except ProtocolError:
            self._hold((m.study_id, m.round_index, m.attempt))
            raise
        return m.to_task(public)

    def _path(self, task: Task, what: str) -> str:
        return (
            f"/v1/node/studies/{quote(task.study_id, safe='')}/rounds/{task.round_index}"
            f"/attempts/{task.attempt}/{what}"
        )

    def _post(
        self,
        path: str,
        body: bytes | Sequence[Buffer],
        *,
        content_type: str = "application/json",
        wait: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer | None:
        """POST on the node's keep-alive link, retried on transport errors (None: gave up).

        ``body`` may be parts (see :func:`consortia.wire.pack_parts`), sent without
        being joined.  A hub whose upload slots are all busy answers ``503`` with
        ``Retry-After`` before the body is sent: the post is tried again after a
        random part of that delay (at most :data:`_MAX_RETRY_AFTER` s each time, for at
        most :data:`_MAX_BUSY` s in all), so the waiting nodes do not come back at once.
        """
        if wait is not None:
            path = f"{path}?wait={float(wait)!r}"
        sent = {**self._auth(), "Content-Type": content_type, **(headers or {})}
        busy_until = time.monotonic() + _MAX_BUSY
        delays = iter((0.1, 0.3, 1.0, 2.0, None))
        while True:
            try:
                r = self._link.post(path, body, sent)
            except httpx.TransportError as exc:
                delay = next(delays, None)
                if delay is None or self._stop.is_set():
                    log.warning("could not reach the hub (%s); the task will come again", exc)
                    return None
                time.sleep(delay)
                continue
            after = r.retry_after() if r.status_code == 503 else None
            if after is None or time.monotonic() >= busy_until or self._stop.is_set():
                return r
            self._stop.wait(min(after, _MAX_RETRY_AFTER) * random.uniform(0.1, 1.0))

    def pins(self, study_id: str | None = None) -> dict[str, str]:
        """The peers this node's owner trusts: ``[peers]`` merged with the CLI's pins.

        Read from the database once per study (not on every round): a pin added or
        removed with ``consortia node peers`` applies from the next study on.
        """
        if study_id is not None and self._pins is not None and self._pins[0] == study_id:
            return self._pins[1]
        pins = {**self.store.pins.all(), **self._pinned}
        if study_id is not None:
            self._pins = (study_id, pins)
        return pins

    def _refuse(
        self,
        task: Task,
        rule: str,
        message: str,
        *,
        anonymous: bool = False,
        kind: RefusalKind | None = None,
    ) -> None:
        """Report a refusal to the hub (and the node's audit log).

        ``kind`` defaults to :func:`consortia.messages.refusal_kind` of the rule: a
        policy rule, a local failure (an error class of the local step) or a
        protocol error.
        """
        kind = refusal_kind(rule) if kind is None else kind
        self.store.audit.append(
            f"node:{self.config.name}",
            "refusal",
            {
                "study": task.study_id,
                "round": task.round_index,
                "attempt": task.attempt,
                "algorithm": task.algorithm.get("name"),
                "dataset": task.dataset,
                "researcher": task.researcher,
                "rule": rule,
                "kind": kind.value,
            },
        )
        refusal = RefusalMessage(
            rule=rule[:64] or "refused", message=message[:2000], anonymous=anonymous, kind=kind
        )
        body = refusal.model_dump_json().encode()
        self._answered(task, "refusal", self._post(self._path(task, "refusal"), body))

    def handle(self, msg: Mapping[str, Any], *, follow: float | None = None) -> list[dict]:
        """Answer one task message from the hub (``contribute`` or ``reveal``).

        The hub's answer carries this node's next tasks, waiting up to ``follow``
        seconds for one (default: half the poll wait); they are returned.
        """
        try:
            task = self._task(msg)
        except (ConsortiaError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignoring a malformed task: %s", exc)
            return []
        wait = self.config.poll_wait / 2 if follow is None else follow
        worker = self.worker()
        actor = f"node:{self.config.name}"
        share = msg.get("kind") == "share"  # a reveal that also rebuilds lost seeds
        reveal = share or msg.get("kind") == "reveal"
        # owner approval (airlock): a study the owner has not approved is not computed
        if not reveal and self.approvals.required and not self._approved(worker, task, msg):
            return []
        refusal: tuple[str, str] | None = None
        anonymous = False
        # the task's ledger change and its audit entry commit together, before anything leaves
        hb = None if reveal else msg.get("heartbeat")
        with self.store.ledger.deferred(), self.store.releases.deferred(), self._beating(task, hb):
            try:
                trusted = self.store.check_peers(
                    task.participants,
                    self.pins(task.study_id),
                    trust_on_first_use=self.config.trust_on_first_use,
                )
                changed = False
                for p in task.participants:  # pins may change while the node runs
                    want = trusted.get(p.site)
                    if self._trusted.get(p.site) != want:
                        changed = True
                        if want is None:
                            self._trusted.pop(p.site, None)
                        else:
                            self._trusted[p.site] = want
                if changed:
                    worker.set_trusted(self._trusted)
                if share:
                    lost = [str(x) for x in msg.get("lost", ())]
                    cts = {str(k): bytes.fromhex(v) for k, v in msg.get("ciphertexts", {}).items()}
                    answer = worker.reveal_and_share(task, lost, cts)
                    seed, shares = answer.seed, answer.shares
                elif reveal:
                    seed = worker.reveal(task)
                else:
                    masked = worker.contribute(task)
            except PolicyError as err:
                refusal = (err.rule, err.detail)
                anonymous = err.site is None  # a data-dependent rule: the site is not named
            except ConsortiaError as err:
                refusal = (type(err).__name__, str(err))
                # a bad column, a missing value, an empty group: may be a fact about this
                # site's data, so the researcher is not told which site (the log is)
                anonymous = isinstance(err, (ValidationError, AlgorithmError))
            except Exception as exc:  # out of memory, a defect: refused, never a dead node
                cause = "MemoryError" if isinstance(exc, MemoryError) else type(exc).__name__
                log.error("task of study %s failed: %s", task.study_id, cause)
                # the class only: the exception's message may hold patient values
                refusal = (cause, f"the node failed to answer the task ({cause})")
                anonymous = True
            else:
                if reveal:
                    where = {"study": task.study_id, "round": task.round_index}
                    if share:  # which lost seeds this node helped rebuild (never the shares)
                        where["lost"] = sorted(shares)
                    self.store.record(actor, "reveal", {**where, "attempt": task.attempt})
                else:
                    self.store.record(actor, "release", release_details(worker, task, masked))
        if refusal is not None:
            self._refuse(task, *refusal, anonymous=anonymous)
            return []
        if share:
            hexed = {k: v.hex() for k, v in shares.items()}
            body = ShareMessage(seed=seed.hex(), shares=hexed).model_dump_json().encode()
            r = self._post(self._path(task, "shares"), body, wait=wait)
            self._answered(task, "shares", r)
            return next_tasks(r)
        if reveal:
            body = RevealMessage(seed=seed.hex()).model_dump_json().encode()
            r = self._post(self._path(task, "reveal"), body, wait=wait)
            self._answered(task, "reveal", r)
            return next_tasks(r)
        self._report_budget(worker, task)
        # sent from the masked array's own buffer; heartbeats go on while the hub's upload
        # slots are busy, so that a node waiting its turn is never taken for a silent one
        # (a small body needs no slot: no heartbeat thread for it)
        with self._beating(task, hb if masked.data.nbytes >= EXPECT_CONTINUE_MIN else None):
            r = self._post(
                self._path(task, "contribution"),
                pack_parts({"masked": masked.data}),
                content_type=CONTENT_TYPE,
                # the audit head anchors this node's log at the hub (detects truncation, rewrites)
                headers=ContributionHeader.of(
                    masked.layout,
                    self.store.audit.head(),
                    masked.shares.to_json() if masked.shares is not None else None,
                ).to_headers(),
                wait=wait,
            )
        del masked
        self._answered(task, "contribution", r)
        return next_tasks(r)

    @contextlib.contextmanager
    def _beating(self, task: Task, interval: Any) -> Iterator[None]:
        """While the body runs, tell the hub every ``interval`` s that this node is computing.

        A long local step (model training, a genome-wide screen) then never gets this
        site excluded for being slow; the hub's deadline is the step's own limit.
        """
        try:
            every = float(interval)
        except (TypeError, ValueError):
            every = 0.0
        if not every > 0.0 or every != every:
            yield
            return
        done = threading.Event()
        path = self._path(task, "heartbeat")

        def beat() -> None:
            while not done.wait(max(every, 0.05)):
                try:
                    r = self._client.post(path, json={}, headers=self._auth())
                except httpx.TransportError as exc:
                    log.warning("heartbeat not delivered (%s)", exc)
                    continue
                if r.status_code != 200:  # the attempt moved on: stop beating
                    log.info("the hub declined a heartbeat (%s): %s", r.status_code, detail(r))
                    return

        thread = threading.Thread(target=beat, daemon=True, name="node-heartbeat")
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=max(every, 1.0) + 30.0)

    def _report_budget(self, worker: SiteWorker, task: Task) -> None:
        """Tell the hub what remains of the researcher's privacy budget (DP studies only)."""
        report = worker.budget(task) if task.round_index == 0 else None
        if report is None:
            return
        try:
            r = self._client.put("/v1/node/budget", json=report, headers=self._auth())
            if r.status_code != 200:
                log.warning("the hub refused a budget report (%s)", r.status_code)
        except httpx.TransportError as exc:
            log.warning("could not report the privacy budget to the hub: %s", exc)

    def _approved(self, worker: SiteWorker, task: Task, msg: Mapping[str, Any]) -> bool:
        """Whether the owner approved ``task``'s study; else refuse (denied) or wait.

        A first request is recorded once (see :mod:`consortia.node.approvals`); while
        it is pending the hub is told that the study waits for this node's owner (again
        only when its task does not already say so, for example after a hub restart).
        """
        try:
            status = self.approvals.admit(task, worker, actor=f"node:{self.config.name}")
        except ConsortiaError as err:
            self._refuse(task, type(err).__name__, str(err))
            return False
        if status == "approved":
            return True
        if status == "denied":
            self._refuse(task, "owner_denied", "the data owner did not approve this study")
        elif not msg.get("waiting"):
            digest = study_digest(task.algorithm, task.dataset, task.researcher)
            r = self._post(self._path(task, "pending"), json.dumps({"digest": digest}).encode())
            if r is not None and r.status_code != 200:
                log.warning("the hub refused a pending notice (%s): %s", r.status_code, detail(r))
        return False

    def close(self) -> None:
        """Close the HTTP client and the database."""
        self._client.close()
        self._link.close()
        self.store.close()


_MAX_HOLD = 60.0  # longest a refused task is held back, in seconds
_MAX_RETRY_AFTER = 10.0  # longest wait before a post the hub was too busy for is tried again
_MAX_BUSY = 3600.0  # longest a post is tried again while the hub says it is busy
_MAX_PUBLIC = DEFAULT_MAX_BYTES  # largest public arrays a node fetches

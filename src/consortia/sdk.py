"""The researcher's client of a remote hub, with the same study API as the simulation.

>>> fed = connect("https://hub.example.org:8443", token, ca="ca.pem")  # doctest: +SKIP
>>> result = fed.run(Mean(columns=("age",)), dataset="cohort")          # doctest: +SKIP

The hub stores each study's result when the study finishes (a
:mod:`consortia.resultcodec` frame, no pickle) and the SDK fetches it in one
request.  With ``verify=True`` (and whenever the hub holds no stored result) the
SDK rebuilds the result itself: it fetches the study's securely aggregated round
sums (what the researcher is entitled to) and replays the algorithm's
:meth:`~consortia.protocol.Algorithm.coordinate` over them with
:meth:`consortia.protocol.Coordinator.replay` semantics; ``verify=True`` also
checks that the replayed result encodes to exactly the stored bytes.  The sums
are exact fixed-point integers, so the networked result is bit-identical to the
simulation's on the same data, stored or replayed.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError as PydanticValidationError

from consortia.errors import (
    ConsortiaError,
    HubUnreachable,
    PolicyError,
    ProtocolError,
    ResultCodecError,
    ResultMismatch,
    StudyFailed,
    ValidationError,
)
from consortia.messages import StudyStatusMessage
from consortia.privacy.fixedpoint import FixedPoint
from consortia.protocol import Algorithm, Coordinator, algorithm_from_spec
from consortia.resultcodec import decode_result, encode_result
from consortia.transport.base import ResearcherTransport
from consortia.transport.http import HttpResearcherTransport
from consortia.wire import unpack_arrays

__all__ = ["HubUnreachable", "RemoteFederation", "StudyStatus", "connect"]

Progress = Callable[[int, str], None]
"""``progress(round_index, step)``, called when a round starts (as in the simulation)."""


@dataclass(frozen=True)
class StudyStatus:
    """A study's state at the hub.

    Attributes
    ----------
    id, status
        The study and its state: ``running``, ``finished``, ``failed`` or ``cancelled``.
    rounds_done
        Rounds whose sums are final.
    step, attempt, phase
        The open round's step name, attempt number and phase (``collect``/``reveal``).
    participants
        Nodes taking part (survivors after exclusions).
    error, error_rule
        Why the study failed, and the policy rule that refused, when one did
        (``owner_denied``: a node's data owner denied it; ``approval_timeout``: an
        owner did not decide in time).
    raw
        The hub's full answer.
    waiting_approval
        Nodes whose data owner has not yet approved the study (it waits for them).
    """

    id: str
    status: str
    rounds_done: int
    step: str | None
    attempt: int | None
    phase: str | None
    participants: tuple[str, ...]
    error: str | None
    error_rule: str | None
    raw: dict[str, Any]
    waiting_approval: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StudyStatus:
        """Parse the hub's answer (a :class:`~consortia.messages.StudyStatusMessage`).

        Raises
        ------
        ProtocolError
            The answer is not a study status.
        """
        try:
            msg = StudyStatusMessage.model_validate(obj)
        except PydanticValidationError:
            raise ProtocolError("the hub's answer is not a study status") from None
        cur = msg.current
        return cls(
            id=msg.id,
            status=msg.status.value,
            rounds_done=msg.rounds_done,
            step=cur.step if cur else None,
            attempt=cur.attempt if cur else None,
            phase=cur.phase if cur else None,
            participants=tuple(msg.participants),
            error=msg.error,
            error_rule=msg.error_rule,
            raw=obj,
            waiting_approval=tuple(cur.waiting_approval) if cur else (),
        )

    @property
    def done(self) -> bool:
        """Whether the study reached a final state."""
        return self.status in ("finished", "failed", "cancelled")


class RemoteFederation:
    """A federation behind a hub: submit studies, follow them, get their results.

    Use :func:`connect` to build one.  :meth:`run` mirrors
    :meth:`consortia.Simulation.run`.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        ca: str | Path | None = None,
        transport: ResearcherTransport | None = None,
    ) -> None:
        if transport is None:
            if url is None or token is None:
                raise ValidationError("RemoteFederation needs a url and a token, or a transport")
            verify: Any = True
            if ca is not None:
                from consortia.certs import client_ssl_context

                verify = client_ssl_context(ca)
            transport = HttpResearcherTransport(url, token, verify=verify)
        self.transport = transport
        self.url = transport.url
        self.last_study: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def close(self) -> None:
        """Close the transport's connections."""
        self.transport.close()

    def __enter__(self) -> RemoteFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ discovery

    def whoami(self) -> dict[str, str]:
        """The role and name of this client's token."""
        return self.transport.whoami()

    def catalogue(self) -> dict[str, dict[str, Any]]:
        """What the nodes published: node -> dataset -> description (no values)."""
        return self.transport.catalogue()

    def budget(self) -> list[dict[str, Any]]:
        """Your remaining differential-privacy budget per node and dataset.

        Each node keeps the budget and reports it after every study that spends
        some; a node that never ran a noisy study of yours has no row.
        """
        return self.transport.budget()

    def nodes(self) -> list[dict[str, Any]]:
        """Enrolled nodes with their identity fingerprints and last contact (admin token)."""
        return self.transport.nodes()

    @property
    def sites(self) -> list[str]:
        """Names of the nodes publishing a catalogue (what a researcher can study)."""
        return sorted(self.catalogue())

    # ------------------------------------------------------------------ studies

    def submit(
        self,
        algorithm: Algorithm,
        *,
        dataset: str = "data",
        nodes: list[str] | None = None,
        precision: FixedPoint | None = None,
    ) -> str:
        """Submit a study; return its id at once (see :meth:`wait` and :meth:`result`)."""
        if not isinstance(algorithm, Algorithm):
            raise ValidationError(
                f"submit() needs a consortia Algorithm, not {type(algorithm).__name__}"
            )
        body: dict[str, Any] = {
            "algorithm": algorithm.spec(),
            "dataset": dataset,
            "frac_bits": (precision or FixedPoint()).frac_bits,
        }
        if nodes is not None:
            body["nodes"] = list(nodes)
        return str(self.transport.submit(body)["id"])

    def status(self, study_id: str) -> StudyStatus:
        """The study's current state."""
        return StudyStatus.from_json(self.transport.status(study_id))

    def studies(self) -> list[dict[str, Any]]:
        """This researcher's studies, newest first."""
        return self.transport.studies()

    def cancel(self, study_id: str) -> StudyStatus:
        """Cancel a running study."""
        return StudyStatus.from_json(self.transport.cancel(study_id))

    def wait(
        self,
        study_id: str,
        *,
        timeout: float | None = None,
        progress: Progress | None = None,
    ) -> StudyStatus:
        """Block until the study reaches a final state.

        Long-polls the hub; while the hub is unreachable (for example restarting) it
        retries until ``timeout``.

        Raises
        ------
        StudyFailed
            If ``timeout`` seconds pass first (the study keeps running at the hub).
        """
        end = None if timeout is None else time.monotonic() + timeout
        version: int | None = None
        seen: tuple[int, str | None] | None = None
        while True:
            wait = 20.0 if end is None else max(0.0, min(20.0, end - time.monotonic()))
            try:
                raw = self.transport.status(study_id, version=version, wait=wait)
            except HubUnreachable:
                if end is not None and time.monotonic() >= end:
                    raise
                time.sleep(0.5)  # the hub restarts: the study resumes where it stopped
                continue
            version = raw.get("version")
            st = StudyStatus.from_json(raw)
            cur = raw.get("current")
            if progress is not None and cur is not None:
                step = str(cur.get("step"))
                if st.waiting_approval:
                    step += f" (waiting for the owner of {', '.join(st.waiting_approval)})"
                key = (int(cur["round_index"]), step)
                if key != seen:
                    seen = key
                    progress(key[0], str(key[1]))
            if st.done:
                return st
            if end is not None and time.monotonic() >= end:
                raise StudyFailed(
                    f"study {study_id} did not finish within {timeout:g}s "
                    "(it is still running at the hub)"
                )

    def rounds(self, study_id: str, start: int = 0, limit: int = 100) -> list[dict[str, Any]]:
        """Finished rounds of the study: index, step, attempt, participants (no sums)."""
        return self.transport.rounds(study_id, start, limit)

    def round_sums(self, study_id: str, round_index: int) -> dict[str, np.ndarray]:
        """The securely aggregated sums of one finished round, by array name."""
        frame = self.transport.round_sums(study_id, round_index)
        return unpack_arrays(frame, max_bytes=2**40, copy=True)

    def stored_result(self, study_id: str) -> bytes | None:
        """The result frame the hub stored when the study finished (``None``: it holds none).

        The frame is checked against the hub's ``X-Consortia-Digest`` (sha256);
        :func:`consortia.resultcodec.decode_result` turns it into the result.
        """
        stored = self.transport.result(study_id)
        if stored is None:  # not stored (or a hub older than stored results)
            return None
        frame, digest = stored
        if hashlib.sha256(frame).hexdigest() != digest:
            raise ProtocolError(f"study {study_id}: the result does not match its digest")
        return frame

    def result(
        self, study_id: str, algorithm: Algorithm | None = None, *, verify: bool = False
    ) -> Any:
        """The result of a finished study, as stored at the hub (one request).

        Parameters
        ----------
        study_id
            The study.
        algorithm
            The study's algorithm, for a replay (default: rebuilt from the study's spec).
        verify
            Rebuild the result from the study's aggregated round sums (replaying
            the algorithm's ``coordinate()``) and check that it encodes to exactly
            the bytes the hub stored.  Without a stored result (a hub older than
            stored results, or a result it could not encode) the SDK replays in
            any case; a stored result this client cannot decode (another version
            of its class) is replayed with a warning.

        Raises
        ------
        PolicyError
            If a node's policy refused (naming the rule and the site).
        StudyFailed
            If the study failed for another reason, was cancelled or is not finished.
        ResultMismatch
            With ``verify=True``: the replayed result differs from the stored one.
        """
        st = self.status(study_id)
        if st.status != "finished":
            _raise_for(st)
        frame = self.stored_result(study_id)
        self.last_study = {
            "study_id": study_id,
            "rounds": st.rounds_done,
            "sites": list(st.participants),
            "source": "stored",
        }
        if frame is not None and not verify:
            try:
                return decode_result(frame)
            except ResultCodecError as exc:
                warnings.warn(
                    f"study {study_id}: the stored result cannot be read here ({exc}); "
                    "rebuilding it from the round sums",
                    RuntimeWarning,
                    stacklevel=2,
                )
        result = self._replay(study_id, st, algorithm)
        if verify and frame is not None and encode_result(result) != frame:
            raise ResultMismatch(
                f"study {study_id}: the result the hub stored differs from the one "
                "replayed from its round sums"
            )
        return result

    def _replay(self, study_id: str, st: StudyStatus, algorithm: Algorithm | None) -> Any:
        """The result rebuilt from the study's round sums (``coordinate()`` replayed)."""
        algo = algorithm or algorithm_from_spec(st.raw["algorithm"])
        coord = Coordinator(algo, keep_history=False)
        start = 0
        while not coord.done:
            page = self.rounds(study_id, start=start)
            if not page:
                raise StudyFailed(
                    f"study {study_id}: the hub holds {start} rounds but the algorithm wants more"
                )
            for r in page:
                if r["round_index"] != coord.round_index:
                    raise ProtocolError(f"study {study_id}: round {coord.round_index} is missing")
                coord.advance(self.round_sums(study_id, r["round_index"]))
            start += len(page)
        self.last_study = {
            "study_id": study_id,
            "rounds": coord.round_index,
            "sites": list(st.participants),
            "source": "replay",
        }
        return coord.result

    def run(
        self,
        algorithm: Algorithm,
        *,
        dataset: str = "data",
        nodes: list[str] | None = None,
        precision: FixedPoint | None = None,
        timeout: float | None = None,
        progress: Progress | None = None,
        verify: bool = False,
    ) -> Any:
        """Run ``algorithm`` across the nodes holding ``dataset`` and return its result.

        The same call as :meth:`consortia.Simulation.run`, and the same result on the
        same data.  Blocks until the study ends (or ``timeout`` seconds).  With
        ``verify=True`` the result is also rebuilt from the round sums and checked
        against the hub's stored one (see :meth:`result`).
        """
        study_id = self.submit(algorithm, dataset=dataset, nodes=nodes, precision=precision)
        st = self.wait(study_id, timeout=timeout, progress=progress)
        if st.status != "finished":
            _raise_for(st)
        return self.result(study_id, algorithm, verify=verify)


def _raise_for(st: StudyStatus) -> None:
    raw = st.raw
    rule = st.error_rule
    if st.status == "failed" and rule and not rule[:1].isupper():
        raise PolicyError(rule, raw.get("error_detail") or "", site=raw.get("error_site"))
    if st.status == "running":
        raise StudyFailed(f"study {st.id} is still running")
    raise StudyFailed(f"study {st.id} {st.status}: {st.error}")


def connect(url: str, token: str, *, ca: str | Path | None = None) -> RemoteFederation:
    """Connect to a hub as a researcher (or admin).

    Parameters
    ----------
    url
        The hub's base URL, for example ``https://hub.example.org:8443``.
    token
        A researcher token created by the hub's administrator.
    ca
        The CA certificate that signed the hub's TLS certificate (PEM); the
        system's trust store is used if omitted.

    Returns
    -------
    RemoteFederation
        With the same ``run(algorithm, dataset=...)`` as :class:`consortia.Simulation`.
    """
    fed = RemoteFederation(url, token, ca=ca)
    try:
        fed.whoami()
    except ConsortiaError:
        fed.close()
        raise
    return fed

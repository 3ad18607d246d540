"""Read side of the hub's study engine: study state, rounds, sums and the catalogue."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from consortia.hub.context import HubContext
from consortia.hub.errors import HubError
from consortia.hub.studies import Studies
from consortia.messages import StudyStatusMessage

__all__ = ["HubError", "Queries"]


class Queries:
    """What a researcher (or the catalogue) reads; never a study's lock.

    Parameters
    ----------
    ctx
        The engine's shared parts.
    studies
        Ownership checks.
    """

    def __init__(self, ctx: HubContext, studies: Studies) -> None:
        self.ctx = ctx
        self.studies = studies

    def status(self, study_id: str, researcher: str | None) -> dict[str, Any]:
        """The study's public state (``researcher=None``: any study, for admins).

        The JSON of a :class:`~consortia.messages.StudyStatusMessage`.
        """
        study = self.studies.owned(study_id, researcher)
        out: dict[str, Any] = {
            "id": study.id,
            "researcher": study.researcher,
            "algorithm": study.algorithm,
            "dataset": study.dataset,
            "frac_bits": study.frac_bits,
            "status": study.status,
            "participants": list(study.participants),
            "rounds_done": study.n_rounds,
            "error": study.error,
            "error_rule": study.error_rule,
            "error_site": study.error_site,
            "error_detail": study.error_detail,
            "current": None,
        }
        live = self.ctx.registry.get(study_id)
        if out["status"] == "running" and live is not None:
            rnd = live.round  # one snapshot: the state is replaced whole, never changed
            state = rnd.state
            out["current"] = {
                "round_index": state.index,
                "step": rnd.step,
                "attempt": state.attempt,
                "phase": state.phase,
                "received": sorted(state.received),
                "progress": dict(sorted(dict(live.progress).items())),
                "waiting_approval": sorted(dict(live.waiting)),
            }
        return StudyStatusMessage.model_validate(out).model_dump(mode="json")

    def wait_status(
        self, study_id: str, researcher: str | None, known: int | None, timeout: float
    ) -> dict[str, Any]:
        """Long-poll: return once the study's version differs from ``known`` (or on timeout).

        The version changes when a round finishes, an attempt is re-run or the
        study ends.
        """
        live = self.ctx.registry.get(study_id)
        if not (live is not None and researcher in (None, live.researcher)):
            self.studies.owned(study_id, researcher)  # 404 if not theirs
        end = time.monotonic() + max(0.0, min(timeout, 60.0))
        version = self.ctx.registry.wait_study(study_id, known, end)
        out = self.status(study_id, researcher)
        out["version"] = version
        return out

    def list_studies(self, researcher: str | None) -> list[dict[str, Any]]:
        """Studies of ``researcher`` (all for ``None``), newest first.

        Each: id, status, dataset, algorithm (its spec), rounds done, participants
        and the submission time (seconds since the epoch).
        """
        return [
            {
                "id": r.id,
                "status": r.status,
                "dataset": r.dataset,
                "algorithm": r.algorithm,
                "rounds_done": r.n_rounds,
                "participants": list(r.participants),
                "created_at": r.created_at,
            }
            for r in self.ctx.store.list_studies(researcher)
        ]

    def round_list(
        self, study_id: str, researcher: str | None, start: int = 0, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Finished rounds from ``start``: index, step, attempt and participants."""
        self.studies.owned(study_id, researcher)
        rows = self.ctx.store.finished_rounds(study_id, start, max(1, min(limit, 1000)))
        return [
            {
                "round_index": r.index,
                "step": r.step,
                "attempt": r.attempt,
                "participants": list(r.participants),
                "finished_at": r.finished_at,
            }
            for r in rows
        ]

    def round_sums(self, study_id: str, researcher: str | None, round_index: int) -> bytes:
        """The aggregated sums of one finished round (a consortia.wire message)."""
        self.studies.owned(study_id, researcher)
        raw = self.ctx.store.sums(study_id, round_index)
        if raw is None:
            raise HubError(404, f"round {round_index} of study {study_id!r} is not finished")
        return raw

    def result(self, study_id: str, researcher: str | None) -> tuple[bytes, str]:
        """A finished study's stored result frame and its digest (404 if there is none)."""
        study = self.studies.owned(study_id, researcher)
        stored = self.ctx.store.result(study_id)
        if stored is None:
            if study.status != "finished":
                raise HubError(404, f"study {study_id!r} is {study.status}: it has no result")
            raise HubError(
                404,
                f"the hub holds no stored result for study {study_id!r}: "
                "rebuild it from the round sums (result(..., verify=True))",
            )
        return stored

    def publish(self, node: str, datasets: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the node's published catalogue."""
        self.ctx.store.publish(node, datasets)
        self.ctx.audit.log.append(
            f"node:{node}", "catalogue.publish", {"datasets": sorted(datasets)}
        )

    def catalogue(self) -> dict[str, dict[str, Any]]:
        """Published catalogue: node -> dataset name -> entry."""
        return self.ctx.store.catalogue()

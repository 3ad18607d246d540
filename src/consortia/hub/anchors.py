"""Nodes' audit-log heads anchored at the hub.

A node sends the head of its own audit log (``seq:hash``) in the
``X-Consortia-Audit-Head`` header of every contribution.  The hub keeps every head
that moves the node's log forward (append-only); a head that goes back, or names
another hash for an anchored sequence number, is not stored and is written to the
hub's audit log.  ``consortia audit verify --hub`` checks a node's log against
these heads: a log truncated, or rewritten and re-chained, no longer matches.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from consortia.audit import AuditLog
from consortia.hub.db import NodeAuditHeadRow
from consortia.hub.errors import HubError

__all__ = ["HEAD_HEADER", "anchor_head", "node_heads", "parse_head"]

HEAD_HEADER = "x-consortia-audit-head"
"""The request header carrying a node's audit head (``<seq>:<64 hex>``)."""

_HEAD = re.compile(r"([0-9]{1,18}):([0-9a-f]{64})")
log = logging.getLogger("consortia.hub")


def parse_head(value: str | None) -> tuple[int, str] | None:
    """The ``(seq, hash)`` of an ``X-Consortia-Audit-Head`` value (None if absent).

    Raises
    ------
    HubError
        400 when the header is present but not ``<seq>:<64 lowercase hex>``.
    """
    if value is None:
        return None
    m = _HEAD.fullmatch(value.strip())
    if m is None:
        raise HubError(400, "the X-Consortia-Audit-Head header must be <seq>:<64 hex digits>")
    return int(m[1]), m[2]


_LAST: dict[tuple[str, str], int] = {}  # (database URL, node) -> last anchored seq (a cache)


def anchor_head(engine: Engine, audit: AuditLog, node: str, head: tuple[int, str]) -> None:
    """Store ``node``'s audit head if it moves its log forward; audit a head that goes back."""
    seq, digest = head
    key = (str(engine.url), node)
    last_known = _LAST.get(key)
    if last_known is not None and seq > last_known:  # the usual case: one insert, no read
        heads = cast(Table, NodeAuditHeadRow.__table__)  # typed as a FromClause
        insert = heads.insert().values(node=node, seq=seq, hash=digest)
        # an IntegrityError: the same head, anchored by a concurrent request
        with contextlib.suppress(IntegrityError), engine.begin() as c:
            c.execute(insert)
        _LAST[key] = seq
        return
    with Session(engine) as s:
        last = s.scalar(select(func.max(NodeAuditHeadRow.seq)).where(NodeAuditHeadRow.node == node))
        if last is None or seq > last:
            s.add(NodeAuditHeadRow(node=node, seq=seq, hash=digest))
            try:
                s.commit()
            except IntegrityError:  # the same head, anchored by a concurrent request
                s.rollback()
            _LAST[key] = seq
            return
        known = s.get(NodeAuditHeadRow, (node, seq))
    if known is not None and known.hash == digest:
        return  # already anchored
    # a log only grows: an older head, or another hash for an anchored one, is a rollback
    log.warning("node %s sent an audit head that contradicts the anchored ones", node)
    audit.append(
        "hub",
        "node.audit_head.conflict",
        {"node": node, "seq": seq, "hash": digest, "anchored_seq": int(last)},
    )


def node_heads(engine: Engine, node: str) -> list[dict[str, Any]]:
    """Every anchored head of ``node``, oldest first."""
    with Session(engine) as s:
        rows = s.scalars(
            select(NodeAuditHeadRow)
            .where(NodeAuditHeadRow.node == node)
            .order_by(NodeAuditHeadRow.seq)
        )
        return [{"seq": r.seq, "hash": r.hash, "received_at": r.received_at} for r in rows]

"""Writing the hub's payload-sized blobs: running masked sums and round sums.

Big blobs live in their own tables (``round_acc``, ``round_sums``) so that the
small, frequent updates of a round never rewrite them.  On SQLite they are
written with incremental blob I/O, in place and in chunks, inside the caller's
transaction: no payload-sized copy is bound to a statement (the ``sqlite3``
module keeps a statement's last bound values alive in its statement cache, one
copy per pooled connection), and a running sum of an unchanged layout is
overwritten in its existing pages.  Other databases get an ordinary bound
parameter.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, func, insert, literal_column, select, update
from sqlalchemy.orm import Session

from consortia.hub.db import RoundAccRow, RoundSumsRow

__all__ = ["put_acc", "put_sums"]

_ACC = RoundAccRow.__table__
_SUMS = RoundSumsRow.__table__
_CHUNK = 1 << 20


def _as_bytes(data: np.ndarray | bytes) -> memoryview:
    return memoryview(data).cast("B") if isinstance(data, np.ndarray) else memoryview(data)


def _write_in_place(s: Session, table, where, column: str, data: memoryview) -> None:
    conn = s.connection()
    rowid = conn.execute(
        select(literal_column("rowid")).select_from(table).where(*where)
    ).scalar_one()
    raw = conn.connection.dbapi_connection
    with raw.blobopen(table.name, column, rowid) as blob:  # type: ignore[union-attr]
        for start in range(0, len(data), _CHUNK):
            blob.write(data[start : start + _CHUNK])


def _sqlite(s: Session) -> bool:
    return s.get_bind().dialect.name == "sqlite"


def put_acc(
    s: Session, study_id: str, round_index: int, attempt: int, total: np.ndarray, *, first: bool
) -> None:
    """Store the running masked sum of an attempt (``first``: its first vector)."""
    data = _as_bytes(total)
    where = (_ACC.c.study_id == study_id, _ACC.c.round_index == round_index)
    sqlite = _sqlite(s)
    if first:  # an older attempt's sum, if any, is dropped
        s.execute(delete(_ACC).where(*where))
        value = func.zeroblob(len(data)) if sqlite else data
        s.execute(
            insert(_ACC).values(
                study_id=study_id, round_index=round_index, attempt=attempt, acc=value
            )
        )
    elif not sqlite:
        s.execute(update(_ACC).where(*where).values(acc=data))
    if sqlite:
        _write_in_place(s, _ACC, where, "acc", data)


def put_sums(s: Session, study_id: str, round_index: int, packed: bytes) -> None:
    """Store a finished round's sums and drop its running masked sum."""
    s.execute(delete(_ACC).where(_ACC.c.study_id == study_id, _ACC.c.round_index == round_index))
    data = _as_bytes(packed)
    sqlite = _sqlite(s)
    value = func.zeroblob(len(data)) if sqlite else data
    s.execute(insert(_SUMS).values(study_id=study_id, round_index=round_index, sums=value))
    if sqlite:
        where = (_SUMS.c.study_id == study_id, _SUMS.c.round_index == round_index)
        _write_in_place(s, _SUMS, where, "sums", data)

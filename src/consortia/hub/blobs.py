"""Writing the hub's payload-sized blobs: running masked sums, round sums, public arrays.

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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from sqlalchemy import (
    Select,
    Table,
    bindparam,
    delete,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session

from consortia.hub.db import BlobRow, RoundAccRow, RoundSumsRow, StudyResultRow

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["put_acc", "put_blob", "put_result", "put_sums"]

# ``__table__`` is typed as a FromClause: a declarative class's is a Table
_ACC = cast(Table, RoundAccRow.__table__)
_SUMS = cast(Table, RoundSumsRow.__table__)
_BLOBS = cast(Table, BlobRow.__table__)
_RESULTS = cast(Table, StudyResultRow.__table__)
_CHUNK = 1 << 20
_IN_PLACE = 1 << 16  # smaller blobs are simply bound (nothing big is kept alive)


def _key(table: Table) -> tuple:
    return (
        table.c.study_id == bindparam("k_study"),
        table.c.round_index == bindparam("k_round"),
    )


_DEL_ACC = delete(_ACC).where(*_key(_ACC))
_INS_ACC = insert(_ACC).values(
    study_id=bindparam("k_study"),
    round_index=bindparam("k_round"),
    attempt=bindparam("v_attempt"),
    acc=bindparam("v_acc", type_=_ACC.c.acc.type),
)
_INS_ACC_ZERO = insert(_ACC).values(
    study_id=bindparam("k_study"),
    round_index=bindparam("k_round"),
    attempt=bindparam("v_attempt"),
    acc=func.zeroblob(bindparam("v_size")),
)
_UPD_ACC = update(_ACC).where(*_key(_ACC)).values(acc=bindparam("v_acc", type_=_ACC.c.acc.type))
_INS_SUMS = insert(_SUMS).values(
    study_id=bindparam("k_study"),
    round_index=bindparam("k_round"),
    sums=bindparam("v_sums", type_=_SUMS.c.sums.type),
)
_INS_SUMS_ZERO = insert(_SUMS).values(
    study_id=bindparam("k_study"),
    round_index=bindparam("k_round"),
    sums=func.zeroblob(bindparam("v_size")),
)
_INS_BLOB = insert(_BLOBS).values(
    sha256=bindparam("k_digest"),
    size=bindparam("v_size"),
    data=bindparam("v_data", type_=_BLOBS.c.data.type),
)
_INS_BLOB_ZERO = insert(_BLOBS).values(
    sha256=bindparam("k_digest"), size=bindparam("v_size"), data=func.zeroblob(bindparam("v_size"))
)
_ROWID: dict[str, Select[Any]] = {
    t.name: select(literal_column("rowid")).select_from(t).where(*_key(t)) for t in (_ACC, _SUMS)
}
_ROWID[_RESULTS.name] = (
    select(literal_column("rowid"))
    .select_from(_RESULTS)
    .where(_RESULTS.c.study_id == bindparam("k_study"))
)
_INS_RESULT = insert(_RESULTS).values(
    study_id=bindparam("k_study"),
    result=bindparam("v_data", type_=_RESULTS.c.result.type),
    digest=bindparam("v_digest"),
    size=bindparam("v_size"),
    encoded_at=bindparam("v_time"),
)
_INS_RESULT_ZERO = insert(_RESULTS).values(
    study_id=bindparam("k_study"),
    result=func.zeroblob(bindparam("v_size")),
    digest=bindparam("v_digest"),
    size=bindparam("v_size"),
    encoded_at=bindparam("v_time"),
)
_ROWID[_BLOBS.name] = (
    select(literal_column("rowid"))
    .select_from(_BLOBS)
    .where(_BLOBS.c.sha256 == bindparam("k_digest"))
)


def _as_bytes(data: np.ndarray | Buffer) -> memoryview:
    if isinstance(data, np.ndarray):
        # numpy's stubs declare ndarray.__buffer__ for Python >= 3.12 only
        return memoryview(cast("Buffer", data)).cast("B")
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def _write_in_place(
    s: Session, table: Table, key: dict, column: str, data: memoryview | Sequence[memoryview]
) -> None:
    conn = s.connection()
    rowid = conn.execute(_ROWID[table.name], key).scalar_one()
    raw = conn.connection.dbapi_connection
    parts = [data] if isinstance(data, memoryview) else data
    with raw.blobopen(table.name, column, rowid) as blob:  # type: ignore[union-attr]
        for part in parts:  # one after the other: the blob's write position advances
            for start in range(0, len(part), _CHUNK):
                blob.write(part[start : start + _CHUNK])


def _in_place(s: Session, size: int) -> bool:
    return size >= _IN_PLACE and s.get_bind().dialect.name == "sqlite"


def put_acc(
    s: Session, study_id: str, round_index: int, attempt: int, total: np.ndarray, *, first: bool
) -> None:
    """Store the running masked sum of an attempt (``first``: its first vector)."""
    data = _as_bytes(total)
    key = {"k_study": study_id, "k_round": round_index}
    in_place = _in_place(s, len(data))
    if first:  # an older attempt's sum, if any, is dropped
        s.execute(_DEL_ACC, key)
        if in_place:
            s.execute(_INS_ACC_ZERO, {**key, "v_attempt": attempt, "v_size": len(data)})
        else:
            s.execute(_INS_ACC, {**key, "v_attempt": attempt, "v_acc": data})
    elif not in_place:
        s.execute(_UPD_ACC, {**key, "v_acc": data})
    if in_place:
        _write_in_place(s, _ACC, key, "acc", data)


def put_sums(s: Session, study_id: str, round_index: int, packed: bytes | Sequence[Buffer]) -> None:
    """Store a finished round's sums and drop its running masked sum.

    ``packed`` is a :mod:`consortia.wire` message, or its parts
    (:func:`consortia.wire.pack_parts`): on SQLite the parts are written one after
    the other into the stored blob, never joined into one payload-sized copy.
    """
    key = {"k_study": study_id, "k_round": round_index}
    s.execute(_DEL_ACC, key)
    parts = [_as_bytes(packed)] if isinstance(packed, bytes) else [_as_bytes(p) for p in packed]
    size = sum(len(p) for p in parts)
    if _in_place(s, size):
        s.execute(_INS_SUMS_ZERO, {**key, "v_size": size})
        _write_in_place(s, _SUMS, key, "sums", parts)
    else:
        data = parts[0] if len(parts) == 1 else memoryview(b"".join(parts))
        s.execute(_INS_SUMS, {**key, "v_sums": data})


def put_blob(s: Session, digest: str, data: bytes) -> None:
    """Store a new content-addressed blob (the caller checked that ``digest`` is new)."""
    key = {"k_digest": digest}
    view = _as_bytes(data)
    if _in_place(s, len(view)):
        s.execute(_INS_BLOB_ZERO, {**key, "v_size": len(view)})
        _write_in_place(s, _BLOBS, key, "data", view)
    else:
        s.execute(_INS_BLOB, {**key, "v_size": len(view), "v_data": view})


def put_result(
    s: Session, study_id: str, frame: Sequence[Buffer], digest: str, encoded_at: float
) -> None:
    """Store a finished study's result frame, given as its parts.

    On SQLite the parts are written in place, one after the other: no payload-sized
    copy is joined or bound.
    """
    key = {"k_study": study_id}
    parts = [_as_bytes(p) for p in frame]
    size = sum(len(p) for p in parts)
    values = {**key, "v_size": size, "v_digest": digest, "v_time": encoded_at}
    if _in_place(s, size):
        s.execute(_INS_RESULT_ZERO, values)
        _write_in_place(s, _RESULTS, key, "result", parts)
    else:
        s.execute(_INS_RESULT, {**values, "v_data": memoryview(b"".join(parts))})

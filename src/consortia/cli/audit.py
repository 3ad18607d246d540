"""``consortia audit``: verify and show a hub's or node's hash-chained audit log."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from consortia.errors import ConsortiaError

if TYPE_CHECKING:  # imported when a command runs: `consortia --help` stays fast
    import sqlalchemy as sa

    from consortia.audit import AuditEntry, AuditLog

_DB_HELP = "Database URL (sqlite:///..., postgresql+psycopg://...) or path of a SQLite file."


SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite connection waits for another process's write lock before retrying."""


def open_engine(db: str) -> sa.Engine:
    """Return an engine for a database URL, or a read-only one for a SQLite file path.

    SQLite connections wait up to :data:`SQLITE_BUSY_TIMEOUT` seconds for a lock that a
    hub or node appending to the log holds (the log's reads retry beyond that).
    """
    import sqlalchemy as sa

    if "://" in db:
        try:
            url = sa.engine.make_url(db)
            if url.get_backend_name() == "sqlite":
                return sa.create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT})
            return sa.create_engine(url)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise click.ClickException(f"cannot use database URL: {exc}") from exc
    path = Path(db).expanduser().resolve()
    if not path.is_file():
        raise click.ClickException(f"no SQLite database at {path}")
    return sa.create_engine(
        f"sqlite:///file:{path}?mode=ro&uri=true", connect_args={"timeout": SQLITE_BUSY_TIMEOUT}
    )


def _open_log(db: str, key_file: Path | None, table: str) -> AuditLog:
    import sqlalchemy as sa

    from consortia.audit import AuditLog, read_key_file

    try:
        key = read_key_file(key_file) if key_file is not None else None
        return AuditLog(open_engine(db), key=key, table=table, create=False)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise click.ClickException(f"cannot open the database: {exc}") from exc


_db_option = click.option("--db", required=True, help=_DB_HELP)
_table_option = click.option(
    "--table", default="audit_log", show_default=True, help="Name of the audit table."
)


@click.group(name="audit")
def command() -> None:
    """Verify or show an append-only, hash-chained audit log."""


@command.command("verify")
@_db_option
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The log's HMAC key file: also checks entry and head MACs.",
)
@click.option("--anchor", help="SEQ:HASH of an earlier head kept elsewhere (detects rollbacks).")
@click.option("--hub", help="Hub URL: also check a node's log against the heads the hub anchored.")
@click.option("--node", help="With --hub: the node whose log this is (default: from the log).")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --hub: file holding an admin token of the hub.",
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --hub: CA certificate that signed the hub's.",
)
@_table_option
def verify(
    db: str,
    key_file: Path | None,
    anchor: str | None,
    hub: str | None,
    node: str | None,
    token_file: Path | None,
    ca: Path | None,
    table: str,
) -> None:
    """Check the log; print one line; exit 0 if intact, 1 otherwise.

    With --hub, a node's log must also still hold, unchanged, every head of it that the
    hub anchored (sent with the node's contributions): a truncated log, or one rewritten
    and re-chained, fails.
    """
    anchor_pair: tuple[int, str] | None = None
    if anchor:
        seq, _, digest = anchor.partition(":")
        if not seq.isdigit() or len(digest) != 64:
            raise click.BadParameter("expected SEQ:HASH (64 hex characters)", param_hint="--anchor")
        anchor_pair = (int(seq), digest.lower())
    import sqlalchemy as sa

    log = _open_log(db, key_file, table)
    anchors: list[tuple[int, str]] = []
    try:
        if hub is not None:
            if token_file is None:
                raise click.BadParameter("--hub needs --token-file (an admin token)")
            anchors = _hub_anchors(hub, node or _node_name(log), token_file, ca)
        report = log.verify(anchor=anchor_pair, anchors=anchors)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    except sa.exc.SQLAlchemyError as exc:
        raise click.ClickException(f"cannot read the audit log: {exc}") from exc
    if report.ok:
        click.echo(f"OK: {report.reason}")
        return
    click.echo(f"TAMPERED: {report.reason} (first bad seq {report.first_bad_seq})")
    raise SystemExit(1)


def _node_name(log: AuditLog) -> str:
    """The node a log belongs to, from its entries' ``node:<name>`` actor."""
    for entry in log.entries(limit=50):
        if entry.actor.startswith("node:"):
            return entry.actor.removeprefix("node:")
    raise click.BadParameter("cannot tell which node wrote this log: give --node")


def _hub_anchors(hub: str, node: str, token_file: Path, ca: Path | None) -> list[tuple[int, str]]:
    """The heads of ``node``'s audit log anchored at ``hub`` (GET /v1/nodes/{node}/audit-heads)."""
    import ssl
    from urllib.parse import quote

    import httpx

    token = token_file.read_text().strip()
    verify: ssl.SSLContext | bool = True
    if ca is not None:
        verify = ssl.create_default_context(cafile=str(ca))
    try:
        r = httpx.get(
            f"{hub.rstrip('/')}/v1/nodes/{quote(node, safe='')}/audit-heads",
            headers={"Authorization": f"Bearer {token}"},
            verify=verify,
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the hub: {exc}") from exc
    if r.status_code != 200:
        raise click.ClickException(f"the hub refused to list the audit heads ({r.status_code})")
    try:
        return [(int(h["seq"]), str(h["hash"])) for h in r.json()]
    except (ValueError, KeyError, TypeError) as exc:
        raise click.ClickException("the hub's answer is not a list of audit heads") from exc


def _line(entry: AuditEntry) -> str:
    details = json.dumps(entry.details, sort_keys=True, separators=(",", ":"))
    return f"{entry.seq:>6}  {entry.timestamp}  {entry.actor}  {entry.action}  {details}"


@command.command("show")
@_db_option
@click.option("--last", type=click.IntRange(min=1), help="Show only the last N entries.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@_table_option
def show(db: str, last: int | None, as_json: bool, table: str) -> None:
    """Print the entries of the log (no verification: use `verify`)."""
    log = _open_log(db, None, table)
    try:
        entries = log.tail(last) if last is not None else log.entries()
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    for entry in entries:
        if as_json:
            click.echo(json.dumps(entry.__dict__, sort_keys=True))
        else:
            click.echo(_line(entry))

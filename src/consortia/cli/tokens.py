"""``consortia token``: create, list and revoke the hub's tokens (run on the hub's host).

The same group is ``consortia hub token``.  Tokens expire (``--expires-in``; by
default 90 days for researchers and admins, 7 days for enrolment tokens) and can
be revoked at once; ``list`` shows ids, roles, names, hints and dates, never a
secret.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from consortia.errors import ConsortiaError

if TYPE_CHECKING:
    from consortia.hub.auth import Expiry

__all__ = ["DB_HELP", "command", "create_token_command", "key_option", "parse_duration"]

DB_HELP = "Database URL (sqlite:///..., postgresql+psycopg://...) or path of a SQLite file."
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")

key_option = click.option(
    "--audit-key-file",
    type=click.Path(exists=True, dir_okay=False),
    help="HMAC key of the hub's audit log (needed when the hub was started with one).",
)
_expires_option = click.option(
    "--expires-in",
    default=None,
    metavar="DURATION",
    help="How long the token lives: 30d, 12h, 90m, 2w, or 'never' "
    "[default: 90d for researcher and admin tokens, 7d for enrolment tokens].",
)


def parse_duration(text: str | None) -> Expiry:
    """``--expires-in`` as seconds, None for ``never``, or the role default when absent.

    Raises
    ------
    click.BadParameter
        Not a positive number followed by one of s, m, h, d, w, nor ``never``.
    """
    from consortia.hub.auth import ROLE_DEFAULT

    if text is None:
        return ROLE_DEFAULT
    if text.strip().lower() == "never":
        return None
    m = _DURATION.match(text.lower())
    if m is None or float(m[1]) <= 0:
        raise click.BadParameter(
            f"{text!r}: give a positive number and a unit (s, m, h, d, w), e.g. 30d, or 'never'",
            param_hint="--expires-in",
        )
    return float(m[1]) * _UNITS[m[2]]


def create_token_command(
    db: str,
    role: str,
    name: str,
    out: Path | None,
    key_file: str | None,
    expires_in: str | None = None,
) -> None:
    """Create a token in the hub's database; print it, or write it to ``out`` (0600)."""
    from consortia.audit import read_key_file
    from consortia.hub import bootstrap_token

    expiry = parse_duration(expires_in)
    try:
        key = read_key_file(key_file) if key_file else None
        token = bootstrap_token(db, role, name, audit_key=key, expires_in=expiry)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    if out is not None:
        from consortia.node.identity import write_private

        write_private(out, (token + "\n").encode())
        click.echo(f"{role} token for {name!r} written to {out} (mode 0600)")
    else:
        click.echo(token)


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


@click.group(name="token")
def command() -> None:
    """Researcher, admin and enrolment tokens: create, list, revoke (stored hashed)."""


@command.command("create")
@click.option("--db", required=True, help=DB_HELP)
@click.option("--role", type=click.Choice(["researcher", "admin"]), required=True)
@click.option("--name", required=True, help="Who the token is for (a researcher's name).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write it to a file.")
@_expires_option
@key_option
def token_create(
    db: str,
    role: str,
    name: str,
    out: Path | None,
    expires_in: str | None,
    audit_key_file: str | None,
) -> None:
    """Create a token and print it (or write it to --out); it is shown only once."""
    create_token_command(db, role, name, out, audit_key_file, expires_in)


@command.command("list")
@click.option("--db", required=True, help=DB_HELP)
@click.option("--all", "show_all", is_flag=True, help="Also revoked, expired and used tokens.")
def token_list(db: str, show_all: bool) -> None:
    """List tokens: id, role, name, hint, created, expires, state (never a secret)."""
    from rich.console import Console
    from rich.table import Table

    from consortia.hub.tokens import list_tokens

    try:
        infos = list_tokens(db, include_inactive=show_all)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    now = time.time()
    table = Table(box=None, pad_edge=False)
    for col in ("id", "role", "name", "hint", "created", "expires", "state"):
        table.add_column(col)
    for i in infos:
        expires = "never" if i.expires_at is None else _when(i.expires_at)
        state = i.state(now)
        if state == "revoked":
            state = f"revoked {_when(i.revoked_at)}"
        table.add_row(str(i.id), i.role, i.name, i.hint or "-", _when(i.created_at), expires, state)
    Console(width=160).print(table)


@command.command("revoke")
@click.argument("token_ref", metavar="TOKEN")
@click.option("--db", required=True, help=DB_HELP)
@key_option
def token_revoke(token_ref: str, db: str, audit_key_file: str | None) -> None:
    """Revoke a token at once.  TOKEN: its id (`token list`), its hint, or the token itself."""
    from consortia.audit import read_key_file
    from consortia.hub.tokens import revoke_token

    try:
        key = read_key_file(audit_key_file) if audit_key_file else None
        info = revoke_token(db, token_ref, audit_key=key)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"token {info.id} ({info.role} {info.name!r}) revoked at {_when(info.revoked_at)}")

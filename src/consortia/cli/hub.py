"""``consortia hub``: serve a hub and manage its tokens."""

from __future__ import annotations

from pathlib import Path

import click

from consortia.cli.tokens import DB_HELP as _DB_HELP
from consortia.cli.tokens import command as token_group
from consortia.cli.tokens import create_token_command, key_option
from consortia.errors import ConsortiaError
from consortia.hub import settings as defaults


@click.group(name="hub")
def command() -> None:
    """Run a hub and manage its tokens (run on the hub's host)."""


@command.command("start")
@click.option("--db", required=True, help=_DB_HELP)
@click.option("--host", default=defaults.HOST, show_default=True, help="Interface to listen on.")
@click.option("--port", default=defaults.PORT, show_default=True, type=int)
@click.option(
    "--tls-cert", type=click.Path(exists=True, dir_okay=False), help="Server chain (PEM)."
)
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="Server key (PEM).")
@click.option(
    "--insecure-http", is_flag=True, help="Serve plain HTTP (allowed on a loopback address only)."
)
@click.option(
    "--node-timeout",
    default=defaults.NODE_TIMEOUT,
    show_default=True,
    help="Seconds before a silent node is excluded.",
)
@click.option(
    "--reveal-timeout",
    default=defaults.REVEAL_TIMEOUT,
    show_default=True,
    help="Seconds a node may take to reveal its seed.",
)
@click.option(
    "--max-payload",
    default=defaults.MAX_PAYLOAD,
    show_default=True,
    help="Largest contribution (bytes).",
)
@click.option(
    "--max-json-body",
    default=defaults.MAX_JSON_BODY,
    show_default=True,
    help="Largest body of any request but a contribution (bytes).",
)
@click.option(
    "--audit-key-file",
    type=click.Path(exists=True, dir_okay=False),
    help="HMAC key of the audit log.",
)
@click.option(
    "--approval-timeout",
    default=defaults.APPROVAL_TIMEOUT,
    show_default=True,
    help="Seconds a study waits for a node owner's approval before it fails.",
)
@click.option(
    "--log-level",
    default=defaults.LOG_LEVEL,
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
    help="How much to log.",
)
def start(
    db: str,
    host: str,
    port: int,
    tls_cert: str | None,
    tls_key: str | None,
    insecure_http: bool,
    node_timeout: float,
    reveal_timeout: float,
    max_payload: int,
    max_json_body: int,
    audit_key_file: str | None,
    approval_timeout: float,
    log_level: str,
) -> None:
    """Serve the hub until interrupted (HTTPS unless --insecure-http on loopback).

    `python -m consortia.hub` runs this command with the same options.
    """
    import logging

    from consortia.hub import HubSettings, serve

    logging.basicConfig(level=log_level.upper())
    try:
        serve(
            HubSettings(
                db=db,
                node_timeout=node_timeout,
                reveal_timeout=reveal_timeout,
                max_payload=max_payload,
                max_json_body=max_json_body,
                audit_key_file=audit_key_file,
                approval_timeout=approval_timeout,
            ),
            host=host,
            port=port,
            tls_cert=tls_cert,
            tls_key=tls_key,
            insecure_http=insecure_http,
            log_level=log_level,
        )
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc


@command.group("enrolment-token")
def enrolment_token() -> None:
    """One-time tokens with which a node enrols."""


@enrolment_token.command("create")
@click.option("--db", required=True, help=_DB_HELP)
@click.option("--node", default="*", show_default=True, help="The node name it may enrol.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write it to a file.")
@click.option(
    "--expires-in",
    default=None,
    metavar="DURATION",
    help="How long it stays valid if unused: 7d, 12h, or 'never' [default: 7d].",
)
@key_option
def enrolment_create(
    db: str, node: str, out: Path | None, expires_in: str | None, audit_key_file: str | None
) -> None:
    """Create a one-time enrolment token and print it (or write it to --out)."""
    create_token_command(db, "enrolment", node, out, audit_key_file, expires_in)


# ``consortia hub token`` is ``consortia token`` (create, list, revoke)
command.add_command(token_group, "token")

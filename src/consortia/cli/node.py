"""``consortia node``: enrol a node with a hub and run it."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

from consortia.errors import ConsortiaError

_CONFIG = click.option(
    "--config",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The node's TOML file.",
)


def _agent(config: Path):
    from consortia.node import NodeAgent, load_config

    try:
        return NodeAgent(load_config(config))
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(name="node")
def command() -> None:
    """Run a node (one per institution; it connects out to the hub only)."""


@command.command("enrol")
@_CONFIG
@click.option("--token", required=True, help="The one-time enrolment token from the hub admin.")
def enrol(config: Path, token: str) -> None:
    """Enrol this node once; prints its identity fingerprint for peers to pin."""
    agent = _agent(config)
    try:
        agent.enrol(token)
        agent.publish()
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        agent.close()
    click.echo(f"enrolled {agent.config.name!r} with {agent.config.hub}")
    click.echo(f"identity fingerprint: {agent.fingerprint}")


@command.command("fingerprint")
@_CONFIG
def fingerprint(config: Path) -> None:
    """Print this node's identity fingerprint (creates its keys if needed)."""
    agent = _agent(config)
    agent.close()
    click.echo(agent.fingerprint)


@command.command("start")
@_CONFIG
@click.option("--log-level", default="info", show_default=True)
def start(config: Path, log_level: str) -> None:
    """Publish the catalogue and answer the hub's tasks until interrupted."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    agent = _agent(config)

    def _stop(*_: object) -> None:
        agent.stop()
        # interrupt a long-poll or a waiting answer; database writes are transactions and
        # a contribution not acknowledged is sent again (the same vector) after a restart
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    click.echo(f"node {agent.config.name!r} polling {agent.config.hub} (Ctrl-C to stop)")
    try:
        agent.run()
    except SystemExit:
        pass
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        agent.close()

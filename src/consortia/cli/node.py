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


# ---------------------------------------------------------------------- trusted peers


def _store(config: Path):
    from consortia.node import load_config
    from consortia.node.store import NodeStore

    try:
        cfg = load_config(config)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    return cfg, NodeStore(cfg.data_dir, fsync=cfg.fsync)


@command.group("peers")
def peers() -> None:
    """The peers this node's owner trusts (only they count towards min_sites)."""


@peers.command("add")
@_CONFIG
@click.argument("site")
@click.argument("fingerprint")
def peers_add(config: Path, site: str, fingerprint: str) -> None:
    """Pin SITE to its identity FINGERPRINT (64 hex, from `consortia node fingerprint`)."""
    fp = fingerprint.strip().lower()
    if len(fp) != 64 or any(c not in "0123456789abcdef" for c in fp):
        raise click.BadParameter("must be 64 hexadecimal characters", param_hint="FINGERPRINT")
    cfg, store = _store(config)
    try:
        if site == cfg.name:
            raise click.BadParameter("a node does not pin itself", param_hint="SITE")
        if site in cfg.peers and cfg.peers[site] != fp:
            raise click.ClickException(
                f"{site!r} is pinned to another fingerprint in the [peers] table of {config}; "
                "edit that file instead"
            )
        store.pins.add(site, fp)
        store.audit.append(f"owner:{cfg.name}", "peers.add", {"site": site, "fingerprint": fp})
    finally:
        store.close()
    click.echo(f"trusting {site!r} with identity {fp}")


@peers.command("remove")
@_CONFIG
@click.argument("site")
def peers_remove(config: Path, site: str) -> None:
    """Stop trusting SITE (pins added with `peers add`; edit [peers] for the others)."""
    cfg, store = _store(config)
    try:
        removed = store.pins.remove(site)
        if removed:
            store.audit.append(f"owner:{cfg.name}", "peers.remove", {"site": site})
    finally:
        store.close()
    if not removed:
        raise click.ClickException(f"{site!r} was not pinned with `consortia node peers add`")
    click.echo(f"no longer trusting {site!r}")


@peers.command("list")
@_CONFIG
def peers_list(config: Path) -> None:
    """List the trusted peers and where each pin comes from."""
    cfg, store = _store(config)
    try:
        added = store.pins.all()
    finally:
        store.close()
    rows = [(s, fp, "config") for s, fp in cfg.peers.items()]
    rows += [(s, fp, "cli") for s, fp in added.items() if s not in cfg.peers]
    if not rows:
        click.echo("no trusted peers: this node refuses every study (min_sites)")
    for site, fp, source in sorted(rows):
        click.echo(f"{site}\t{fp}\t{source}")
    if cfg.trust_on_first_use:
        click.echo("trust_on_first_use = true: unpinned peers are trusted as first seen")


@command.command("budget")
@_CONFIG
def budget(config: Path) -> None:
    """Privacy spend and refusals per researcher and dataset (the owner's view)."""
    cfg, store = _store(config)
    try:
        rows = store.releases.budgets()
    finally:
        store.close()
    caps = {ds.name: ds.policy for ds in cfg.datasets}
    if not rows:
        click.echo("no differentially private study has spent budget yet")
    for r in rows:
        pol = caps.get(str(r["dataset"]))
        cap = f" of {pol.epsilon_budget:g}" if pol is not None else ""
        click.echo(
            f"{r['researcher']}\t{r['dataset']}\tepsilon {r['epsilon']:.4g}{cap}\t"
            f"delta {r['delta']:.3g}\tstudies {r['studies']}"
        )

"""``consortia node``: enrol a node with a hub, run it, and decide its owner approvals."""

from __future__ import annotations

import getpass
import json
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consortia.cli._node_setup import _CONFIG, check, init
from consortia.errors import ConsortiaError

if TYPE_CHECKING:
    from consortia.node.approvals import ApprovalRequest, Approvals


def _agent(config: Path):
    from consortia.node import NodeAgent, load_config

    try:
        return NodeAgent(load_config(config))
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group(name="node")
def command() -> None:
    """Run a node (one per institution; it connects out to the hub only)."""


def _enrol_token(token: str | None, token_file: Path | None, *, required: bool) -> str | None:
    """The enrolment token from --token / $CONSORTIA_ENROL_TOKEN or from --token-file."""
    if token and token_file:
        raise click.UsageError("give the enrolment token once: --token or --token-file, not both")
    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise click.BadParameter(f"{token_file} is empty", param_hint="--token-file")
    if required and not token:
        raise click.UsageError(
            "an enrolment token is needed: --token-file FILE, $CONSORTIA_ENROL_TOKEN or --token"
        )
    return token or None


def _check_datasets(agent: Any) -> None:
    """Refuse to enrol while a configured dataset does not load (the token is not spent)."""
    agent.worker()
    if agent.unavailable:
        names = ", ".join(f"{n!r} ({err})" for n, err in sorted(agent.unavailable.items()))
        raise click.ClickException(
            f"dataset {names} does not load; the node's log says why. Fix the data or the "
            "configuration and enrol again: the enrolment token was not used"
        )


_TOKEN_FILE = click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding the one-time enrolment token (not visible in the process list).",
)


@command.command("enrol")
@_CONFIG
@click.option(
    "--token",
    envvar="CONSORTIA_ENROL_TOKEN",
    help="The one-time enrolment token from the hub admin [$CONSORTIA_ENROL_TOKEN]; "
    "prefer --token-file or the variable: a command line is visible to every local user.",
)
@_TOKEN_FILE
def enrol(config: Path, token: str | None, token_file: Path | None) -> None:
    """Enrol this node once; prints its identity fingerprint for peers to pin.

    Every configured dataset is loaded and checked first, so that a data error does
    not spend the one-time token.
    """
    secret = _enrol_token(token, token_file, required=True)
    assert secret is not None
    agent = _agent(config)
    try:
        _check_datasets(agent)
        agent.enrol(secret)
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
@click.option(
    "--enrol-token",
    envvar="CONSORTIA_ENROL_TOKEN",
    help="A one-time enrolment token: enrol first unless this node already is "
    "[$CONSORTIA_ENROL_TOKEN].",
)
@click.option(
    "--enrol-token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file holding the one-time enrolment token (not visible in the process list).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
    help="How much to log.",
)
def start(
    config: Path, enrol_token: str | None, enrol_token_file: Path | None, log_level: str
) -> None:
    """Publish the catalogue and answer the hub's tasks until interrupted.

    `python -m consortia.node` runs this command with the same options.
    """
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    if log_level.lower() != "debug":  # one line per request is noise, not an owner's log
        for chatty in ("httpx", "httpcore"):
            logging.getLogger(chatty).setLevel(logging.WARNING)
    enrol_token = _enrol_token(enrol_token, enrol_token_file, required=False)
    agent = _agent(config)
    if enrol_token and not (agent.config.data_dir / "credential").exists():
        try:
            _check_datasets(agent)
            agent.enrol(enrol_token)
        except ConsortiaError as exc:
            agent.close()
            raise click.ClickException(str(exc)) from exc
        except click.ClickException:
            agent.close()
            raise

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


# ---------------------------------------------------------------------- approvals


@command.group("approvals")
def approvals() -> None:
    """Owner approvals: studies waiting for this node's data owner (approval = "manual")."""


@contextmanager
def _approvals(config: Path) -> Iterator[Approvals]:
    from consortia.node import load_config
    from consortia.node.approvals import Approvals
    from consortia.node.store import NodeStore

    try:
        cfg = load_config(config)
        store = NodeStore(cfg.data_dir, fsync=cfg.fsync)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield Approvals(store.engine, store.audit, mode=cfg.approval, auto_approve=cfg.auto_approve)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        store.close()


def _owner() -> str:
    try:
        return f"owner:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in this environment
        return "owner"


def _when(t: float | None) -> str:
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _describe(req: ApprovalRequest) -> str:
    d = req.details
    lines = [
        f"study:        {req.study_id}",
        f"digest:       {req.digest}",
        f"status:       {req.status}",
        f"requested:    {_when(req.created_at)}",
    ]
    if req.status != "pending":
        lines.append(f"decided:      {_when(req.decided_at)} by {req.decided_by}")
    if req.reason:
        lines.append(f"reason:       {req.reason}")
    lines += [
        f"researcher:   {req.researcher}",
        f"dataset:      {req.dataset}",
        f"algorithm:    {req.algorithm.get('name')}",
        "parameters:   " + json.dumps(req.algorithm.get("params", {}), sort_keys=True),
        f"participants: {', '.join(d.get('participants') or [])}",
    ]
    cost = d.get("privacy_cost")
    if cost is not None:
        lines.append(f"privacy cost: epsilon={cost['epsilon']:g}, delta={cost['delta']:g}")
    arrays = d.get("arrays")
    where = f"round {d.get('round')}, step {d.get('step')!r}"
    lines.append(f"would release ({where}), summed securely across the participants:")
    if arrays is None:
        lines.append(f"  ({d.get('arrays_note')})")
    else:
        lines += [f"  {name}: shape {tuple(shape)}" for name, shape in arrays.items()]
    lines.append("policy:")
    lines += [f"  {k} = {json.dumps(v)}" for k, v in (d.get("policy") or {}).items()]
    return "\n".join(lines)


@approvals.command("list")
@_CONFIG
@click.option(
    "--status",
    type=click.Choice(["pending", "approved", "denied", "all"]),
    default="all",
    show_default=True,
)
def approvals_list(config: Path, status: str) -> None:
    """List approval requests: study, status, algorithm, dataset, researcher, digest."""
    with _approvals(config) as ap:
        rows = ap.list(None if status == "all" else status)  # type: ignore[arg-type]
    if not rows:
        click.echo("no approval requests")
        return
    for r in rows:
        click.echo(
            f"{r.study_id}  {r.status:<8}  {r.algorithm.get('name')}  {r.dataset}  "
            f"{r.researcher}  {r.digest[:12]}  {_when(r.created_at)}"
        )


@approvals.command("show")
@_CONFIG
@click.argument("study")
@click.option("--digest", help="The request's digest (or its start), if the study has several.")
@click.option("--json", "as_json", is_flag=True, help="Print the request as JSON.")
def approvals_show(config: Path, study: str, digest: str | None, as_json: bool) -> None:
    """Show what a study would release: algorithm, parameters, arrays, policy, privacy cost.

    STUDY is a study id or a unique start of one.
    """
    with _approvals(config) as ap:
        req = ap.find(study, digest)
    click.echo(json.dumps(req.to_json(), indent=2) if as_json else _describe(req))


@approvals.command("approve")
@_CONFIG
@click.argument("study")
@click.option(
    "--digest", help="Approve only if the request's digest starts with this (what you reviewed)."
)
def approvals_approve(config: Path, study: str, digest: str | None) -> None:
    """Approve a pending study (bound to its specification's digest)."""
    with _approvals(config) as ap:
        req = ap.approve(study, actor=_owner(), digest=digest)
    click.echo(f"approved study {req.study_id} (digest {req.digest})")


@approvals.command("deny")
@_CONFIG
@click.argument("study")
@click.option("--digest", help="Deny only if the request's digest starts with this.")
@click.option("--reason", help="Why (kept in the node's audit log; not sent to the hub).")
def approvals_deny(config: Path, study: str, digest: str | None, reason: str | None) -> None:
    """Deny a pending study: the node refuses it with rule owner_denied."""
    with _approvals(config) as ap:
        req = ap.deny(study, actor=_owner(), digest=digest, reason=reason)
    click.echo(f"denied study {req.study_id} (digest {req.digest})")


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


command.add_command(init)
command.add_command(check)

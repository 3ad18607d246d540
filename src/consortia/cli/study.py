"""``consortia study``: submit studies to a hub, follow them, get their results."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consortia.errors import ConsortiaError, PolicyError

if TYPE_CHECKING:  # imported when a command runs: `consortia --help` stays fast
    from rich.console import Console

_hub = click.option(
    "--hub", envvar="CONSORTIA_HUB", required=True, help="Hub URL [$CONSORTIA_HUB]."
)
_token = click.option(
    "--token", envvar="CONSORTIA_TOKEN", required=True, help="Researcher token [$CONSORTIA_TOKEN]."
)
_ca = click.option(
    "--ca",
    envvar="CONSORTIA_CA",
    type=click.Path(exists=True, dir_okay=False),
    help="CA certificate of the hub [$CONSORTIA_CA].",
)


@contextmanager
def _connect(hub: str, token: str, ca: str | None) -> Iterator[Any]:
    """A connected federation; consortia errors become one-line CLI errors (with the rule)."""
    from consortia.sdk import connect

    try:
        with connect(hub, token, ca=ca) as fed:
            yield fed
    except PolicyError as exc:
        raise click.ClickException(f"{exc} (rule: {exc.rule})") from exc
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc


def _follow(fed, study_id: str, timeout: float | None) -> Any:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        task = bar.add_task(f"study {study_id[:8]}: waiting")

        def progress(round_index: int, step: str) -> None:
            bar.update(task, description=f"study {study_id[:8]}: round {round_index} ({step})")

        return fed.wait(study_id, timeout=timeout, progress=progress)


def _show(value: Any, console: Console) -> None:
    import numpy as np

    summary = getattr(value, "summary", None)
    if callable(summary):
        summary = summary()
    if summary is not None and hasattr(summary, "to_string"):
        console.print(summary.to_string())
        return
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if isinstance(v, np.ndarray):
                v = np.array2string(v, precision=6, threshold=20)
            console.print(f"[bold]{f.name}[/bold]: {v}")
        return
    console.print(repr(value))


def _read_params(value: str) -> dict[str, Any]:
    """``--params``: a JSON object given inline, as ``@FILE``, or as the path of a JSON file."""
    text, where = value, "--params"
    stripped = value.strip()
    path = None
    if stripped.startswith("@"):
        path = Path(stripped[1:]).expanduser()
    elif not stripped.startswith(("{", "[")) and Path(stripped).expanduser().is_file():
        path = Path(stripped).expanduser()
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {path}: {exc.strerror or exc}", param_hint="--params"
            ) from None
        where = f"--params file {path}"
    try:
        parsed = json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"{where} is not JSON ({exc}); give a JSON object inline, as @FILE or as FILE.json",
            param_hint="--params",
        ) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter(
            f"{where} must be a JSON object of parameter names, not {type(parsed).__name__}",
            param_hint="--params",
        )
    return parsed


@click.group(name="study")
def command() -> None:
    """Submit studies to a hub and follow them (as a researcher)."""


@command.command("submit")
@_hub
@_token
@_ca
@click.option("--algorithm", required=True, help="A registered algorithm, e.g. stats.mean.")
@click.option(
    "--params",
    default="{}",
    show_default=True,
    help="Its parameters: a JSON object, or @FILE / FILE.json naming a file that holds one.",
)
@click.option("--dataset", required=True, help="The dataset name the nodes publish.")
@click.option("--node", "nodes", multiple=True, help="Restrict to these nodes (repeatable).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow it to the end.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most.")
def submit(
    hub: str,
    token: str,
    ca: str | None,
    algorithm: str,
    params: str,
    dataset: str,
    nodes: tuple[str, ...],
    wait: bool,
    timeout: float | None,
) -> None:
    """Submit a study; print its id, then (by default) follow it and print its result."""
    from consortia.protocol import algorithm_from_spec

    parsed = _read_params(params)
    try:
        algo = algorithm_from_spec({"name": algorithm, "params": parsed})
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    from rich.console import Console

    console = Console()
    with _connect(hub, token, ca) as fed:
        sid = fed.submit(algo, dataset=dataset, nodes=list(nodes) or None)
        click.echo(sid)
        if not wait:
            return
        st = _follow(fed, sid, timeout)
        if st.status != "finished":
            fed.result(sid)  # raises with the reason
        _show(fed.result(sid, algo), console)


@command.command("status")
@_hub
@_token
@_ca
@click.argument("study_id")
@click.option("--follow", is_flag=True, help="Show progress until the study ends.")
def status(hub: str, token: str, ca: str | None, study_id: str, follow: bool) -> None:
    """Print a study's state (as JSON)."""
    with _connect(hub, token, ca) as fed:
        st = _follow(fed, study_id, None) if follow else fed.status(study_id)
        click.echo(json.dumps(st.raw, indent=2))


@command.command("result")
@_hub
@_token
@_ca
@click.argument("study_id")
def result(hub: str, token: str, ca: str | None, study_id: str) -> None:
    """Print a finished study's result (rebuilt from its aggregated sums)."""
    with _connect(hub, token, ca) as fed:
        from rich.console import Console

        _show(fed.result(study_id), Console())


@command.command("cancel")
@_hub
@_token
@_ca
@click.argument("study_id")
def cancel(hub: str, token: str, ca: str | None, study_id: str) -> None:
    """Cancel a running study."""
    with _connect(hub, token, ca) as fed:
        st = fed.cancel(study_id)
        click.echo(f"{study_id}: {st.status}")


@command.command("budget")
@_hub
@_token
@_ca
def budget(hub: str, token: str, ca: str | None) -> None:
    """Print your remaining differential-privacy budget per node and dataset (JSON)."""
    with _connect(hub, token, ca) as fed:
        click.echo(json.dumps(fed.budget(), indent=2))

"""``consortia study``: submit studies to a hub, follow them, get their results."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from consortia.cli._output import (
    STUDY_COLUMNS,
    csv_table,
    emit,
    fmt_option,
    out_option,
    render_result,
    status_text,
    status_view,
    text_table,
)
from consortia.errors import ConsortiaError, PolicyError

if TYPE_CHECKING:  # imported when a command runs: `consortia --help` stays fast
    from consortia.sdk import RemoteFederation

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


def _follow(fed: RemoteFederation, study_id: str, timeout: float | None) -> Any:
    """Wait for the study, with a progress line on standard error (stdout stays clean)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TimeElapsedColumn(),
        transient=True,
        console=Console(stderr=True),
    ) as bar:
        task = bar.add_task(f"study {study_id[:8]}: waiting")

        def progress(round_index: int, step: str) -> None:
            bar.update(task, description=f"study {study_id[:8]}: round {round_index} ({step})")

        return fed.wait(study_id, timeout=timeout, progress=progress)


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


def _names(items: Any) -> str:
    return ", ".join(str(x) for x in items or [])


def _time_grid(value: str | None) -> dict[str, float] | None:
    """``--time-grid START:STOP:STEP`` as the ``{start, stop, step}`` grid parameter."""
    if value is None:
        return None
    parts = value.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        start, stop, step = (float(x) for x in parts)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not START:STOP:STEP (three numbers, e.g. 0:3650:1)",
            param_hint="--time-grid",
        ) from None
    return {"start": start, "stop": stop, "step": step}


@click.group(name="study")
def command() -> None:
    """Submit studies to a hub, follow them, read and export their results."""


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
@click.option(
    "--time-grid",
    metavar="START:STOP:STEP",
    default=None,
    help="A regular time grid for a survival study (its time_grid parameter), "
    "e.g. 0:3650:1 for days over ten years.",
)
@click.option("--dataset", required=True, help="The dataset name the nodes publish.")
@click.option("--node", "nodes", multiple=True, help="Restrict to these nodes (repeatable).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow it to the end.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most.")
@fmt_option
@out_option
def submit(
    hub: str,
    token: str,
    ca: str | None,
    algorithm: str,
    params: str,
    time_grid: str | None,
    dataset: str,
    nodes: tuple[str, ...],
    wait: bool,
    timeout: float | None,
    fmt: str,
    out: str | None,
) -> None:
    """Submit a study; print its id, then (by default) follow it and print its result."""
    from consortia.protocol import algorithm_from_spec

    parsed = _read_params(params)
    grid = _time_grid(time_grid)
    if grid is not None:
        if "time_grid" in parsed:
            raise click.UsageError("give the time grid once: --time-grid or time_grid in --params")
        parsed["time_grid"] = grid
    try:
        algo = algorithm_from_spec({"name": algorithm, "params": parsed})
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    _run(algo, hub, token, ca, dataset, nodes, wait, timeout, fmt, out)


def _run(
    algo: Any,
    hub: str,
    token: str,
    ca: str | None,
    dataset: str,
    nodes: tuple[str, ...],
    wait: bool,
    timeout: float | None,
    fmt: str,
    out: str | None,
) -> None:
    """Submit ``algo``; print its id, then (with ``wait``) follow it and print its result."""
    with _connect(hub, token, ca) as fed:
        sid = fed.submit(algo, dataset=dataset, nodes=list(nodes) or None)
        # the id leads the output; to stderr when stdout is to hold JSON or CSV alone
        click.echo(sid, err=wait and out is None and fmt != "table")
        if not wait:
            return
        st = _follow(fed, sid, timeout)
        if st.status != "finished":
            fed.result(sid)  # raises with the reason
        emit(render_result(fed.result(sid, algo), fmt), out)


def _list(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


def _level(text: str) -> int | float | str:
    """A declared category as given: an integer, a number, else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _levels(crosstab: tuple[str, ...], given: tuple[str, ...]) -> tuple[tuple[Any, ...], ...]:
    """``--levels COLUMN=A,B,C`` (one per ``--crosstab`` column) in crosstab order."""
    by_col: dict[str, tuple[Any, ...]] = {}
    for item in given:
        col, sep, cats = item.partition("=")
        if not sep or not col.strip() or not _list(cats):
            raise click.BadParameter(
                f"{item!r} is not COLUMN=A,B,C (the column's categories)", param_hint="--levels"
            )
        by_col[col.strip()] = tuple(_level(c) for c in _list(cats))
    missing = [c for c in crosstab if c not in by_col]
    if missing:
        raise click.BadParameter(
            f"declare the categories of {', '.join(missing)} (e.g. --levels stage=I,II,III,IV)",
            param_hint="--levels",
        )
    extra = sorted(set(by_col) - set(crosstab))
    if extra:
        raise click.BadParameter(
            f"--levels names {', '.join(extra)}, not in --crosstab", param_hint="--levels"
        )
    return tuple(by_col[c] for c in crosstab)


@command.command("subgroups")
@_hub
@_token
@_ca
@click.option("--dataset", required=True, help="The dataset name the nodes publish.")
@click.option("--k", "k", type=int, default=3, show_default=True, help="Number of subgroups.")
@click.option(
    "--features",
    default="",
    help="Comma-separated clinical columns to cluster on (with --expression: genes; "
    "empty with --expression: every gene).",
)
@click.option("--expression", is_flag=True, help="Cluster on the expression modality.")
@click.option("--components", type=int, default=None, help="Cluster on this many PCs.")
@click.option("--time", "time_", required=True, help="Follow-up time column.")
@click.option("--event", required=True, help="Event (0/1) column.")
@click.option(
    "--time-grid",
    metavar="START:STOP:STEP",
    required=True,
    help="Public time grid of the survival parts, e.g. 0:3650:30.",
)
@click.option("--crosstab", default="", help="Clinical columns to cross-tabulate, e.g. stage,msi.")
@click.option(
    "--levels",
    "levels",
    multiple=True,
    metavar="COLUMN=A,B,C",
    help="The categories of a --crosstab column (repeatable, one per column).",
)
@click.option("--adjust", default="", help="Numeric columns the Cox model adjusts for.")
@click.option("--markers", default="", help="Marker genes (default: the clustered genes).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the starts.")
@click.option("--node", "nodes", multiple=True, help="Restrict to these nodes (repeatable).")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow it to the end.")
@click.option("--timeout", type=float, default=None, help="Seconds to wait at most.")
@fmt_option
@out_option
def subgroups(
    hub: str,
    token: str,
    ca: str | None,
    dataset: str,
    k: int,
    features: str,
    expression: bool,
    components: int | None,
    time_: str,
    event: str,
    time_grid: str,
    crosstab: str,
    levels: tuple[str, ...],
    adjust: str,
    markers: str,
    seed: int,
    nodes: tuple[str, ...],
    wait: bool,
    timeout: float | None,
    fmt: str,
    out: str | None,
) -> None:
    """Find k patient subgroups and characterise them (subgroups.characterise).

    K-means, then per subgroup Kaplan-Meier curves, a log-rank test, a Cox model,
    cross-tabs with clinical columns and, with expression, marker genes.
    """
    from consortia.subgroups import Subgroups

    cols = _list(crosstab)
    params: dict[str, Any] = {
        ("genes" if expression else "columns"): _list(features),
        "expression": expression,
        "n_clusters": k,
        "n_components": components,
        "seed": seed,
        "time": time_,
        "event": event,
        "time_grid": _time_grid(time_grid),
        "crosstab": cols,
        "crosstab_levels": _levels(cols, levels),
        "cox_covariates": _list(adjust),
        "marker_genes": _list(markers),
    }
    try:
        algo = Subgroups(**params)
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from exc
    _run(algo, hub, token, ca, dataset, nodes, wait, timeout, fmt, out)


@command.command("list")
@_hub
@_token
@_ca
@fmt_option
@out_option
def list_(hub: str, token: str, ca: str | None, fmt: str, out: str | None) -> None:
    """List your studies, newest first (an admin sees every study)."""
    from consortia.cli._output import status_view

    with _connect(hub, token, ca) as fed:
        studies = fed.studies()
    if fmt == "json":
        emit(json.dumps([status_view(s) for s in studies], indent=2), out)
        return
    headers = [h for h, _ in STUDY_COLUMNS]
    rows = [[get(s) for _, get in STUDY_COLUMNS] for s in studies]
    emit(csv_table(headers, rows) if fmt == "csv" else text_table(headers, rows), out)


@command.command("status")
@_hub
@_token
@_ca
@click.argument("study_id")
@click.option("--follow", is_flag=True, help="Show progress until the study ends.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "json")),
    default="table",
    show_default=True,
    help="table: aligned lines; json: the hub's answer.",
)
def status(hub: str, token: str, ca: str | None, study_id: str, follow: bool, fmt: str) -> None:
    """Print a study's state; long parameter arrays are summarised, never dumped."""
    with _connect(hub, token, ca) as fed:
        st = _follow(fed, study_id, None) if follow else fed.status(study_id)
    if fmt == "json":
        click.echo(json.dumps(status_view(st.raw), indent=2))
    else:
        click.echo(status_text(st.raw), nl=False)


@command.command("show")
@_hub
@_token
@_ca
@click.argument("study_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "json")),
    default="table",
    show_default=True,
    help="table: aligned text; json: status, rounds and result statistics.",
)
@out_option
def show(hub: str, token: str, ca: str | None, study_id: str, fmt: str, out: str | None) -> None:
    """Show a study: its state and parameters, its rounds and, once finished, its result."""
    with _connect(hub, token, ca) as fed:
        st = fed.status(study_id)
        rounds = fed.rounds(study_id, limit=1000) if st.rounds_done else []
        value = fed.result(study_id) if st.status == "finished" else None
    if fmt == "json":
        doc: dict[str, Any] = {"status": status_view(st.raw), "rounds": rounds}
        if value is not None:
            stats = getattr(value, "statistics", None)
            doc["result"] = json.loads(render_result(value, "json"))
            if callable(stats):
                doc["result"] = doc["result"].get("statistics", doc["result"])
        emit(json.dumps(doc, indent=2), out)
        return
    text = status_text(st.raw)
    if rounds:
        rows = [
            [r.get("round_index"), r.get("step"), r.get("attempt"), _names(r.get("participants"))]
            for r in rounds
        ]
        text += "\n" + text_table(["round", "step", "attempt", "participants"], rows)
    if value is not None:
        text += "\n" + render_result(value, "table")
    emit(text, out)


@command.command("result")
@_hub
@_token
@_ca
@click.argument("study_id")
@fmt_option
@out_option
@click.option(
    "--verify",
    is_flag=True,
    help="Rebuild the result from the round sums and check it against the hub's.",
)
def result(
    hub: str, token: str, ca: str | None, study_id: str, fmt: str, out: str | None, verify: bool
) -> None:
    """Print a finished study's result: its statistics and summary tables.

    --format json writes the whole result (every statistic, table and field);
    --format csv writes its summary table.
    """
    with _connect(hub, token, ca) as fed:
        value = fed.result(study_id, verify=verify)
    emit(render_result(value, fmt), out)


@command.command("export")
@_hub
@_token
@_ca
@click.argument("study_id")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("json", "csv", "table")),
    default="json",
    show_default=True,
    help="json: the whole result; csv: one table (--table); table: every table as text.",
)
@click.option("--table", "table", default=None, help="With --format csv: the table to write.")
@out_option
def export(
    hub: str,
    token: str,
    ca: str | None,
    study_id: str,
    fmt: str,
    table: str | None,
    out: str | None,
) -> None:
    """Export a finished study's result in full (long tables included) to keep or share.

    The tables of a result are named: ``summary`` and, by result type, ``survival``
    and ``timeline`` (Kaplan-Meier), ``baseline_hazard`` (Cox), ``counts``
    (contingency tables).  An unknown --table lists the result's tables.
    """
    with _connect(hub, token, ca) as fed:
        value = fed.result(study_id)
    emit(render_result(value, fmt, full=True, table=table), out)


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

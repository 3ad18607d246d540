"""The end-to-end demo behind ``consortia demo``: a real hub and real nodes on 127.0.0.1.

:func:`run_demo` starts a hub and one node per site as child processes (all in one
process group of their own), gives each node its share of a data set as a CSV file
in its own folder, enrols the nodes with one-time tokens, runs a descriptive
statistic, a logistic regression and a survival study (Kaplan-Meier by a group,
log-rank, Cox) through :func:`consortia.connect`, prints every federated figure
beside the pooled reference from a maintained library (numpy, statsmodels,
lifelines on the pooled data) with the relative difference, and stops every
process in a ``finally`` block (also on Ctrl-C and on errors).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from consortia.demo.data import (
    DemoData,
    demo_policy,
    load_data,
    policy_explanation,
    synthetic_data,
    tcga_data,
)
from consortia.demo.studies import (
    START_TIMEOUT,
    STUDY_TIMEOUT,
    TOLERANCE,
    Row,
    StudyOutcome,
    StudySpec,
    _check_references,
    studies_for,
)
from consortia.errors import ConsortiaError, ValidationError
from consortia.hub import HubProcess
from consortia.node import DatasetConfig, NodeConfig, NodeProcess
from consortia.node.identity import mutual_pins
from consortia.sdk import RemoteFederation, connect

__all__ = [
    "TOLERANCE",
    "DemoData",
    "DemoReport",
    "Row",
    "StudyOutcome",
    "StudySpec",
    "demo_policy",
    "load_data",
    "policy_explanation",
    "run_demo",
    "studies_for",
    "synthetic_data",
    "tcga_data",
]


@dataclass
class DemoReport:
    """What the demo ran and found.

    Attributes
    ----------
    data
        Description of the data set used.
    sites
        Node name -> number of patients it holds.
    outcomes
        One entry per study, with the federated and pooled figures.
    workdir
        The folder holding the hub's database, the nodes' files and the logs.
    seconds
        Wall-clock duration of the demo.
    """

    data: str
    sites: dict[str, int]
    outcomes: list[StudyOutcome] = field(default_factory=list)
    workdir: Path | None = None
    seconds: float = 0.0

    @property
    def max_rel_diff(self) -> float:
        """Largest relative difference over every printed figure."""
        return max((o.max_rel_diff for o in self.outcomes), default=0.0)

    @property
    def ok(self) -> bool:
        """Whether every study ran and every figure agrees within :data:`TOLERANCE`."""
        return bool(self.outcomes) and self.max_rel_diff <= TOLERANCE


# ---------------------------------------------------------------------- processes


class _Cluster:
    """A hub and its nodes as child processes sharing one process group."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hub: HubProcess | None = None
        self.nodes: dict[str, NodeProcess] = {}
        self.pgid: int | None = None

    def start_hub(self) -> HubProcess:
        folder = self.root / "hub"
        folder.mkdir(parents=True, exist_ok=True)
        # The hub leads a new process group and the nodes join it, so that one
        # killpg() reaches every process the demo started, and a Ctrl-C at the
        # terminal reaches only the demo, which then shuts them down in order.
        hub = HubProcess(folder / "hub.sqlite", log=folder / "hub.log", process_group=0)
        self.hub = hub
        try:
            hub.start(START_TIMEOUT)
        except ConsortiaError as exc:
            raise ConsortiaError(f"{exc}; see {folder / 'hub.log'}") from None
        finally:
            self.pgid = hub.pid
        return hub

    def start_node(self, name: str, config: Path, token: str, log: Path) -> NodeProcess:
        node = NodeProcess(config, enrol_token=token, log=log, process_group=self.pgid)
        self.nodes[name] = node
        node.start()
        return node

    def check_alive(self) -> None:
        """Raise if a child process exited early (naming its log)."""
        for name, node in self.nodes.items():
            if not node.running:
                code = node.proc.returncode if node.proc is not None else None
                log = self.root / "nodes" / name / "node.log"
                raise ConsortiaError(
                    f"node {name!r} exited with code {code}: {_tail(log)} (log: {log})"
                )
        if self.hub is not None and self.hub.proc is not None and self.hub.proc.poll() is not None:
            raise ConsortiaError(f"the hub exited with code {self.hub.proc.returncode}")

    def stop(self) -> None:
        """Stop the nodes, then the hub (SIGTERM, then SIGKILL); reap everything."""
        for node in self.nodes.values():
            if node.running:
                assert node.proc is not None
                node.proc.terminate()
        for node in self.nodes.values():
            node.stop(timeout=5)
        if self.hub is not None:
            self.hub.stop(timeout=5)
        if self.pgid is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pgid, signal.SIGKILL)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt while the demo runs (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------- nodes


def _write_nodes(data: DemoData, root: Path, hub_url: str) -> dict[str, Path]:
    """Write each node's data file and TOML configuration; return name -> TOML path."""
    out = {}
    # every owner pins the others' identity fingerprints (no trust on first use)
    pins = mutual_pins({name: root / "nodes" / name / "state" for name in data.sites})
    for name, frame in data.sites.items():
        folder = root / "nodes" / name
        folder.mkdir(parents=True, exist_ok=True)
        csv = folder / f"{data.dataset}.csv"
        frame.to_csv(csv, index=False)
        cfg = NodeConfig(
            name=name,
            hub=hub_url,
            data_dir=folder / "state",
            datasets=(
                DatasetConfig(
                    name=data.dataset, path=csv, schema=data.schema, policy=demo_policy()
                ),
            ),
            poll_wait=20.0,
            peers=pins[name],
        )
        out[name] = cfg.write(folder / "node.toml")
    return out


def _wait_for_catalogue(fed: RemoteFederation, cluster: _Cluster, n: int, dataset: str) -> None:
    end = time.monotonic() + START_TIMEOUT
    while time.monotonic() < end:
        cluster.check_alive()
        cat = fed.catalogue()
        if sum(1 for entries in cat.values() if dataset in entries) >= n:
            return
        time.sleep(0.1)
    raise ConsortiaError(
        f"the nodes did not publish their catalogues within {START_TIMEOUT:g}s "
        f"(logs under {cluster.root / 'nodes'})"
    )


# ---------------------------------------------------------------------- display


def _fmt(x: float) -> str:
    return f"{x:.10g}"


def _outcome_table(outcome: StudyOutcome) -> Table:
    table = Table(box=None, pad_edge=False)
    table.add_column("figure", no_wrap=True)
    table.add_column("federated", justify="right", no_wrap=True)
    table.add_column(f"pooled ({outcome.reference})", justify="right", no_wrap=True)
    table.add_column("rel. diff", justify="right", no_wrap=True)
    for row in outcome.rows:
        table.add_row(row.label, _fmt(row.federated), _fmt(row.pooled), f"{row.rel_diff:.1e}")
    return table


def _print_outcome(console: Console, outcome: StudyOutcome) -> None:
    rounds = f"{outcome.rounds} round" + ("s" if outcome.rounds != 1 else "")
    console.print(
        f"[bold]{outcome.title}[/bold]  ({outcome.algorithm}, {rounds}, {outcome.seconds:.2f} s)"
    )
    console.print(_outcome_table(outcome))
    if outcome.note:
        console.print(f"  [dim]{outcome.note}[/dim]")
    verdict = "OK" if outcome.max_rel_diff <= TOLERANCE else "MISMATCH"
    console.print(
        f"  check {outcome.algorithm}: max_rel_diff={outcome.max_rel_diff:.2e} "
        f"(tolerance {TOLERANCE:g}) {verdict}"
    )
    console.print()


def _run_study(
    fed: RemoteFederation,
    spec: StudySpec,
    data: DemoData,
    progress: Progress,
) -> StudyOutcome:
    task = progress.add_task(f"{spec.title}: submitting", total=None)

    def on_round(index: int, step: str) -> None:
        progress.update(task, description=f"{spec.title}: round {index + 1} ({step})")

    start = time.monotonic()
    state = "stopped"
    try:
        result = fed.run(
            spec.algorithm,
            dataset=data.dataset,
            timeout=STUDY_TIMEOUT,
            progress=on_round,
        )
        state = "done"
    finally:
        progress.update(task, description=f"{spec.title}: {state}", total=1, completed=1)
    seconds = time.monotonic() - start
    rounds = int(fed.last_study.get("rounds", 0))
    rows = spec.compare(result, data.pooled)
    return StudyOutcome(
        title=spec.title,
        algorithm=spec.algorithm.name,
        reference=spec.reference,
        rows=rows,
        rounds=rounds,
        seconds=seconds,
        note=spec.note,
    )


# ---------------------------------------------------------------------- entry point


def run_demo(
    *,
    data: str | Path | None = None,
    nodes: int = 3,
    workdir: str | Path | None = None,
    seed: int = 0,
    console: Console | None = None,
    on_started: Callable[[list[int]], None] | None = None,
) -> DemoReport:
    """Run the demo end to end and return what it found.

    Parameters
    ----------
    data
        A Fed-TCGA-BRCA folder (its 6 regions become 6 nodes); the synthetic cohort
        if omitted.
    nodes
        Number of nodes for the synthetic cohort (at least 3).
    workdir
        Folder to keep the hub's database, the nodes' files and the logs in (created;
        must be empty). A temporary folder, removed at the end, if omitted.
    seed
        Seed of the synthetic cohort.
    console
        Where to print (a new :class:`rich.console.Console` if omitted).
    on_started
        Called with the child processes' ids once they all run (for tests).

    Raises
    ------
    ValidationError
        Bad options (too few nodes, a non-empty workdir, a data folder that is not
        TCGA-BRCA).
    ConsortiaError
        A process that failed to start, a study that failed or timed out.
    """
    console = console or Console()
    started = time.monotonic()
    if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 3:
        raise ValidationError("--nodes must be an integer >= 3 (the node policy needs 3 sites)")
    if data is not None and nodes != 3:
        raise ValidationError("--nodes applies to the synthetic cohort only (TCGA-BRCA has 6)")
    _check_references()
    demo_data = load_data(data, nodes=nodes, seed=seed)

    temporary = workdir is None
    if temporary:
        root = Path(tempfile.mkdtemp(prefix="consortia-demo-"))
    else:
        assert workdir is not None
        root = Path(workdir).expanduser().resolve()
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ValidationError(f"--workdir {str(root)!r} must be an empty or new folder")
        root.mkdir(parents=True, exist_ok=True)

    report = DemoReport(
        data=demo_data.label,
        sites={k: len(v) for k, v in demo_data.sites.items()},
        workdir=None if temporary else root,
    )
    console.rule("[bold]consortia demo")
    console.print(f"data: {demo_data.label}")
    console.print("sites: " + ", ".join(f"{k} ({v} patients)" for k, v in report.sites.items()))
    console.print(f"node policy: {policy_explanation(demo_data)}")
    console.print(f"work folder: {root}" + ("  (temporary)" if temporary else ""))

    cluster = _Cluster(root)
    fed: RemoteFederation | None = None
    failed = True
    try:
        with _sigterm_as_interrupt():
            with console.status("starting the hub"):
                hub = cluster.start_hub()
            console.print(f"hub: {hub.url} (pid {hub.pid}, SQLite {hub.db})")
            configs = _write_nodes(demo_data, root, hub.url)
            with console.status(f"starting {len(configs)} nodes (enrol, publish catalogue)"):
                for name, cfg in configs.items():
                    token = hub.create_token("enrolment", name)
                    cluster.start_node(name, cfg, token, cfg.parent / "node.log")
                fed = connect(hub.url, hub.create_token("researcher", "demo"))
                _wait_for_catalogue(fed, cluster, len(configs), demo_data.dataset)
            pids = [p.proc.pid for p in cluster.nodes.values() if p.proc is not None]
            console.print(
                f"nodes: {len(configs)} enrolled and published their catalogues "
                f"(pids {', '.join(map(str, pids))})"
            )
            if on_started is not None:
                on_started([hub.pid or 0, *pids])
            console.print()
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(bar_width=20),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                for spec in studies_for(demo_data):
                    outcome = _run_study(fed, spec, demo_data, progress)
                    report.outcomes.append(outcome)
                    _print_outcome(progress.console, outcome)
        failed = False
    finally:
        if fed is not None:
            fed.close()
        with console.status("stopping the nodes and the hub"):
            cluster.stop()
        report.seconds = time.monotonic() - started
        if temporary and not failed:
            shutil.rmtree(root, ignore_errors=True)
        elif temporary:
            console.print(f"[yellow]logs kept in {root}[/yellow]")
    console.print(
        f"all processes stopped; {len(report.outcomes)} studies in {report.seconds:.1f} s; "
        f"max relative difference federated vs pooled: {report.max_rel_diff:.2e}"
    )
    return report

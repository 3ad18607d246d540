"""``consortia demo``: a hub and nodes as real processes on 127.0.0.1, studies end to end."""

from __future__ import annotations

from pathlib import Path

import click

from consortia.errors import ConsortiaError

__all__ = ["command"]


@click.command("demo")
@click.option(
    "--nodes",
    type=int,
    default=3,
    show_default=True,
    help="Number of nodes for the synthetic cohort (at least 3).",
)
@click.option(
    "--data",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="A Fed-TCGA-BRCA folder (brca.csv, train_test_split.csv): its 6 regions become 6 nodes.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the hub database, node files and logs in this (new or empty) folder.",
)
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the synthetic cohort."
)
def command(nodes: int, data: Path | None, workdir: Path | None, seed: int) -> None:
    """Start a hub and nodes on 127.0.0.1, run studies, print them beside the pooled fits.

    The hub and every node run as separate processes; each node holds only its own
    share of the data, in its own folder, and releases only securely aggregated
    sums.  The demo runs a descriptive statistic, a logistic regression, a
    Kaplan-Meier estimate by group, a log-rank test and a Cox model through
    consortia.connect(), prints each federated figure beside the pooled reference
    (numpy, statsmodels, lifelines) and stops every process it started.
    """
    from rich.console import Console

    from consortia.demo import TOLERANCE, run_demo

    console = Console() if Console().is_terminal else Console(width=120)
    try:
        report = run_demo(data=data, nodes=nodes, workdir=workdir, seed=seed, console=console)
    except KeyboardInterrupt:
        raise _Interrupted("interrupted; every process was stopped") from None
    except ConsortiaError as exc:
        raise click.ClickException(str(exc)) from None
    if not report.ok:
        raise click.ClickException(
            f"federated and pooled figures differ by up to {report.max_rel_diff:.2e} "
            f"(tolerance {TOLERANCE:g})"
        )


class _Interrupted(click.ClickException):
    """Ctrl-C during the demo: every process was stopped (exit code 130, as a shell)."""

    exit_code = 130

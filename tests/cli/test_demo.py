"""``consortia demo``: real hub and node processes, federated figures beside pooled ones."""

from __future__ import annotations

import math
import re
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from consortia.cli import main
from consortia.demo import TOLERANCE, run_demo

pytestmark = pytest.mark.timeout(
    900
)  # a ceiling: the demo starts 7 processes; a loaded machine is slow

CHECK = re.compile(r"check (\S+): max_rel_diff=(\S+) \(tolerance \S+\) (OK|MISMATCH)")
STUDIES = {
    "stats.variance",
    "stats.logistic_regression",
    "survival.kaplan_meier",
    "survival.logrank",
    "survival.cox",
}


def _figures(output: str) -> list[tuple[str, float, float, float]]:
    """Every printed table row: (figure, federated, pooled, printed relative difference)."""
    rows = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            fed, pooled, rel = (float(x) for x in parts[-3:])
        except ValueError:
            continue
        rows.append((" ".join(parts[:-3]), fed, pooled, rel))
    return rows


def _processes_mentioning(text: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(text in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except psutil.Error:
            pass
    return found


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _check_output(output: str, n_sites: int) -> None:
    checks = {m.group(1): (float(m.group(2)), m.group(3)) for m in CHECK.finditer(output)}
    assert set(checks) == STUDIES, output
    for algo, (rel, verdict) in checks.items():
        assert verdict == "OK" and rel <= TOLERANCE, (algo, rel)
    rows = _figures(output)
    # 4 descriptive + 12 logistic + 10 KM + 2 log-rank + Cox coefficients, SEs and loglik
    assert len(rows) >= 30, output
    for label, fed, pooled, rel in rows:
        # the printed figures (10 significant digits) agree, as does the printed difference
        assert math.isclose(fed, pooled, rel_tol=TOLERANCE, abs_tol=1e-12), (label, fed, pooled)
        assert rel <= TOLERANCE, label
    assert f"nodes: {n_sites} enrolled" in output
    assert "min_cell_count=1" in output  # the node policy is stated, with the reason


def test_demo_synthetic_end_to_end(tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    before = _children()
    result = CliRunner().invoke(main, ["demo", "--workdir", str(workdir), "--seed", "3"])
    assert result.exit_code == 0, result.output
    _check_output(result.output, 3)
    assert "all processes stopped" in result.output
    # nothing the demo started is left: no process mentions its folder, no new child
    assert _processes_mentioning(str(workdir)) == []
    assert _children() <= before
    # the kept folder holds the hub database and each node's own files
    assert (workdir / "hub" / "hub.sqlite").is_file()
    for site in ("site1", "site2", "site3"):
        assert (workdir / "nodes" / site / "cohort.csv").is_file()
        assert (workdir / "nodes" / site / "node.toml").is_file()


def test_demo_interrupted_stops_every_process(tmp_path: Path) -> None:
    started: list[int] = []

    def interrupt(pids: list[int]) -> None:
        started.extend(pids)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_demo(workdir=tmp_path / "wd", on_started=interrupt)
    assert len(started) == 4  # the hub and 3 nodes were running
    for pid in started:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert _processes_mentioning(str(tmp_path / "wd")) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--nodes", "2"], "--nodes must be an integer >= 3"),
        (["--data", "."], "lacks"),
    ],
)
def test_demo_bad_options_fail_clearly(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["demo", *args])
    assert result.exit_code != 0
    assert message in result.output


def test_demo_refuses_a_non_empty_workdir(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path)])
    assert result.exit_code != 0
    assert "must be an empty or new folder" in result.output


def test_demo_on_tcga_brca(shared_data: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "wd"
    result = CliRunner().invoke(
        main, ["demo", "--data", str(shared_data / "tcga_brca"), "--workdir", str(workdir)]
    )
    assert result.exit_code == 0, result.output
    _check_output(result.output, 6)
    assert _processes_mentioning(str(workdir)) == []


def test_demo_names_a_missing_reference_library(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "lifelines", None)  # as if not installed
    result = CliRunner().invoke(main, ["demo"])
    assert result.exit_code != 0
    assert "lifelines" in result.output and "pip install" in result.output

"""docs/gene-screen.md: its example runs as written and recovers the synthetic cohort's planted
prognostic genes at FDR 0.1 (the false discovery proportion bounded)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

DOC = Path(__file__).resolve().parents[2] / "docs" / "gene-screen.md"


def test_gene_screen_guide_recovers_the_planted_genes(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 1
    ns: dict = {}
    exec(compile(blocks[0], str(DOC), "exec"), ns)
    assert "5/5 planted genes" in capsys.readouterr().out
    result, cohort, hits = ns["result"], ns["cohort"], set(ns["hits"])
    planted = set(cohort.truth.prognostic_genes)
    assert planted <= hits
    fdp = len(hits - planted) / len(hits)
    assert fdp <= 0.2, f"false discovery proportion {fdp:.2f}"
    for g in planted:  # the planted directions are recovered
        assert np.sign(result.coef[result.genes.index(g)]) == np.sign(
            cohort.truth.prognostic_log_hr[g]
        )

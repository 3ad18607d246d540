"""docs/statistics.md: every Python block runs as written, in order."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "statistics.md"


def test_statistics_guide_code_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out
    assert "refused: min_cell_count" in out
    assert namespace["fit"].converged and namespace["fit"].rounds <= 10
    assert namespace["hist"].n == 500

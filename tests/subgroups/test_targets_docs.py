"""The example of docs/targets.md runs as written, and the page's figures match the table."""

from __future__ import annotations

import re
from pathlib import Path

from consortia.subgroups import load_targets

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_targets_page_example_runs(capsys) -> None:
    text = (DOCS / "targets.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    namespace: dict = {}
    exec(compile(code, "targets.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "ERBB2_positive" in out and "trastuzumab" in out
    result = namespace["result"]
    assert result.top("cluster 1", 1).iloc[0]["biomarker_id"] == "ERBB2_positive"
    assert result.top("cluster 2", 1).iloc[0]["biomarker_id"] == "HR_positive"


def test_targets_page_counts_match_the_shipped_table() -> None:
    text = (DOCS / "targets.md").read_text()
    table = load_targets()
    rows = table.rows
    assert f"{len(rows)} rows, {len(table.pairs)} distinct" in text
    assert f"{rows['biomarker_id'].nunique()} biomarkers" in text
    assert f"{(rows['source_type'] == 'fda_label').sum()} rows cite" in text
    assert f"{(rows['source_type'] == 'nccn').sum()} rows cite NCCN" in text

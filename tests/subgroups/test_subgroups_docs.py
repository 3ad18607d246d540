"""The example of docs/subgroups.md runs as written and finds the planted subtypes."""

from __future__ import annotations

import re
from pathlib import Path

from sklearn.metrics import adjusted_rand_score

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_subgroups_page_example_runs(capsys) -> None:
    text = (DOCS / "subgroups.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    namespace: dict = {}
    exec(compile(code, "subgroups.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "simplified_silhouette" in out
    choice, labels = namespace["choice"], namespace["labels"]
    assert choice.ks == (2, 3, 4) and choice.best_k == 3
    truth = namespace["cohort"].truth.subtype
    assert adjusted_rand_score(truth.loc[labels.index], labels) > 0.95
    subgroups = namespace["subgroups"]
    assert subgroups.n_subgroups == 3 and subgroups.sizes.sum() == 240
    assert len(subgroups.markers) == 3 and "markers_fdr_0.05" in subgroups.summary

"""The code of docs/learn.md runs as written and its result is consistent."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_learn_guide_runs(capsys) -> None:
    pytest.importorskip("torch")
    text = (DOCS / "learn.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    namespace: dict = {}
    exec(compile(code, "learn.md", "exec"), namespace)
    result = namespace["result"]
    assert result.n["train"] + result.n["val"] + result.n["test"] == 290
    assert 0.5 < result.metrics["test_auc"] <= 1.0
    assert np.all(np.isfinite(result.weights))
    assert "test AUC" in capsys.readouterr().out
    private, dp_result = namespace["private"], namespace["dp_result"]
    assert dp_result.privacy["epsilon_spent"] == pytest.approx(3.0, abs=1e-3)
    assert dp_result.privacy["epsilon_spent"] == private.privacy_cost()[0] <= 3.0
    assert 0.5 < dp_result.metrics["test_auc"] <= 1.0

"""The code in docs/ runs as written."""

import re
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def python_blocks(page: str) -> str:
    text = (DOCS / page).read_text()
    return "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))


def test_writing_algorithms_example_runs_and_matches_pooled(capsys):
    namespace: dict = {}
    code = compile(python_blocks("writing-algorithms.md"), "writing-algorithms.md", "exec")
    exec(code, namespace)
    out = capsys.readouterr().out
    fed, pooled = re.findall(r"r = (-?[0-9.]+)", out)
    assert float(fed) == pytest.approx(float(pooled), rel=1e-9)
    result = namespace["result"]
    assert result.n == 600


def test_readme_python_snippet_runs(capsys):
    text = (DOCS.parent / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "[" in out
    # the printed federated mean is a finite number equal to the pooled mean of the data
    printed = re.fullmatch(r"\[\s*([^\]\s]+)\s*\]", out.strip())
    assert printed is not None, out
    federated = float(printed.group(1))
    pooled = np.concatenate([frame["age"].to_numpy() for frame in namespace["sites"].values()])
    assert len(pooled) == 300 and np.isfinite(federated)
    assert federated == pytest.approx(float(pooled.mean()), rel=1e-6)


def test_first_analysis_example_matches_pooled(capsys):
    import runpy

    runpy.run_path(str(DOCS.parent / "examples" / "first_analysis.py"), run_name="__main__")
    out = capsys.readouterr().out
    err = float(re.search(r"relative difference of the coefficients: (\S+)", out).group(1))
    assert err < 1e-8


def test_survival_guide_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the plotting example writes to out/
    code = compile(python_blocks("survival.md"), "survival.md", "exec")
    namespace: dict = {}
    exec(code, namespace)
    assert (tmp_path / "out" / "km.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "forest.svg").exists()
    assert 0.5 < namespace["res"].c_index < 1.0
    assert namespace["cox"].converged
    assert namespace["km_dp"].cells_below_k == 0 and namespace["cox_dp"].converged
    assert namespace["km_dp"].plan.epsilon == 1.0

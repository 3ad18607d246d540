"""What the study commands print: parameter summaries, status lines, plain tables."""

from __future__ import annotations

from consortia.cli._output import params_lines, status_text, summarise, text_table


def test_long_arrays_are_summarised_short_ones_kept() -> None:
    params = {
        "time_grid": [float(t) for t in range(9001)],
        "edges": [0, 5, 10],
        "coefficients": [0.5, -1.25, 2.0, 3.0, 4.0, 5.5],
        "covariates": [f"gene{i}" for i in range(30)],
        "nested": {"w": list(range(10))},
        "grid": {"start": 0, "stop": 3650, "step": 30},
    }
    out = summarise(params)
    assert out["time_grid"] == "<array of 9001 floats, 0..9000>"
    assert out["edges"] == [0, 5, 10]
    assert out["coefficients"] == "<array of 6 floats, -1.25..5.5>"
    assert out["covariates"] == "<list of 30 items: gene0, gene1, gene2, gene3, gene4, ...>"
    assert out["nested"] == {"w": "<array of 10 ints, 0..9>"}
    assert out["grid"] == params["grid"]
    lines = params_lines(params)
    assert "grid = {start: 0, stop: 3650, step: 30}  (122 points)" in lines
    assert len(lines) == len(params)


def test_status_of_a_running_study_and_of_a_failed_one() -> None:
    raw = {
        "id": "s1",
        "status": "running",
        "algorithm": {"name": "survival.cox", "params": {"time_grid": list(range(100))}},
        "dataset": "data",
        "participants": ["a", "b", "c"],
        "rounds_done": 2,
        "current": {
            "round_index": 2,
            "step": "newton",
            "attempt": 1,
            "phase": "collect",
            "received": ["a"],
            "waiting_approval": ["c"],
        },
    }
    text = status_text(raw)
    assert "current       round 2 (newton), attempt 1, collect, 1/3 received" in text
    assert "waiting for   c" in text and "<array of 100 ints, 0..99>" in text
    failed = {**raw, "status": "failed", "current": None, "error": "refused",
              "error_rule": "min_cell_count", "error_site": "b"}  # fmt: skip
    assert "error         refused (rule: min_cell_count) at b" in status_text(failed)


def test_text_table_is_aligned_and_never_wrapped() -> None:
    rows = [["a" * 120, 1], ["b", 22]]
    lines = text_table(["name", "n"], rows).splitlines()
    assert len(lines) == 3 and lines[1] == "a" * 120 + "  1"
    assert lines[2].startswith("b ") and lines[2].endswith("22")

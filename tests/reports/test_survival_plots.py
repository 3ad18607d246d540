"""Kaplan-Meier and forest plots: files written in PNG and SVG, content that reads right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from matplotlib.image import imread

from consortia import Policy, Simulation
from consortia.errors import ValidationError
from consortia.reports import forest_plot, kaplan_meier_plot, save_figure
from consortia.survival._grid import day_grid
from consortia.survival.kaplan_meier import KaplanMeier, KaplanMeierResult


def _sites() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(21)
    sites = {}
    for i in range(3):
        n = 80
        arm = rng.integers(0, 2, n)
        age = rng.normal(60, 8, n)
        t = np.ceil(rng.exponential(300.0 * (1 + arm) * np.exp(-0.03 * (age - 60))))
        c = np.ceil(rng.uniform(1, 900, n))
        sites[f"s{i}"] = pd.DataFrame(
            {"T": np.minimum(t, c), "E": (t <= c).astype(int), "arm": arm, "age": age}
        )
    return sites


@pytest.fixture(scope="module")
def km() -> KaplanMeierResult:
    algo = KaplanMeier(time="T", event="E", time_grid=day_grid(900), group="arm", groups=(0, 1))
    return Simulation(_sites(), policy=Policy(min_cell_count=1)).run(algo)


def _check_png(path: Path, min_bytes: int = 15_000, min_height: int = 400) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > min_bytes
    img = imread(path)
    assert img.shape[0] > min_height and img.shape[1] > 600
    # not blank: many distinct colours (curves, bands, text)
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 50


def test_kaplan_meier_plot_writes_png_and_svg(km: KaplanMeierResult, tmp_path: Path) -> None:
    fig = kaplan_meier_plot(
        km, title="Overall survival", xlabel="Days", labels={"0": "control", "1": "treated"}
    )
    written = save_figure(fig, tmp_path / "km")
    assert [p.name for p in written] == ["km.png", "km.svg"]
    _check_png(written[0])
    svg = written[1].read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "Number at risk" in svg and "control" in svg and "treated" in svg


def test_number_at_risk_table_shows_pooled_counts(km: KaplanMeierResult) -> None:
    ticks = [0, 200, 400, 600]
    fig = kaplan_meier_plot(km, at_risk_times=ticks)
    table = fig.axes[1]
    shown = [t.get_text() for t in table.texts]
    for label in ("0", "1"):
        expected = [str(n) for n in km[label].at_risk_at(ticks)]
        assert all(e in shown for e in expected)
    assert km["0"].at_risk_at([0])[0] == km["0"].n  # everyone is at risk at time 0
    assert list(table.get_xticks()) == ticks
    # an oracle independent of the result: counted from the pooled raw data, and the
    # table's row of each group (top row: group "0") shows exactly those counts
    pooled = pd.concat(_sites().values(), ignore_index=True)
    for row, arm in enumerate((0, 1)):
        times = pooled.loc[pooled["arm"] == arm, "T"].to_numpy()
        counted = [int(np.sum(times >= tick)) for tick in ticks]
        assert counted[0] == len(times) == km[str(arm)].n and counted[-1] > 0
        assert km[str(arm)].at_risk_at(ticks).tolist() == counted
        y = 1 - row
        cells = sorted(
            (t.get_position()[0], t.get_text())
            for t in table.texts
            if t.get_position()[1] == y and t.get_position()[0] >= 0  # not the row name
        )
        assert cells == [(tick, str(c)) for tick, c in zip(ticks, counted, strict=True)]


def test_single_curve_and_suffix_selects_format(km: KaplanMeierResult, tmp_path: Path) -> None:
    fig = kaplan_meier_plot(km["1"], confidence_band=False, censor_marks=False)
    (out,) = save_figure(fig, tmp_path / "one.svg")
    assert out.name == "one.svg" and out.stat().st_size > 5_000
    with pytest.raises(ValidationError, match="formats must be among"):
        save_figure(fig, tmp_path / "x", formats=("gif",))
    with pytest.raises(ValidationError, match="KaplanMeierResult"):
        kaplan_meier_plot({})


def test_forest_plot_from_a_lifelines_summary(tmp_path: Path) -> None:
    data = pd.concat(_sites().values(), ignore_index=True)
    summary = CoxPHFitter().fit(data[["T", "E", "arm", "age"]], "T", "E").summary
    fig = forest_plot(summary, title="Cox model", labels={"arm": "treated vs control"})
    png, svg = save_figure(fig, tmp_path / "forest")
    _check_png(png, min_bytes=10_000, min_height=250)
    text = svg.read_text()
    assert "treated vs control" in text and "HR (95% CI)" in text
    hr = summary.loc["arm", "exp(coef)"]
    assert f"{hr:.2f}" in text


def test_forest_plot_refuses_bad_summaries() -> None:
    good = pd.DataFrame(
        {"exp(coef)": [1.5], "exp(coef) lower 95%": [1.1], "exp(coef) upper 95%": [2.0]},
        index=["x"],
    )
    forest_plot(good)  # no p column: fine
    with pytest.raises(ValidationError, match=r"lacks column\(s\) \['exp\(coef\) upper 95%'\]"):
        forest_plot(good.drop(columns="exp(coef) upper 95%"))
    with pytest.raises(ValidationError, match="positive finite"):
        forest_plot(good.assign(**{"exp(coef) lower 95%": [0.0]}))
    with pytest.raises(ValidationError, match="no rows"):
        forest_plot(good.iloc[:0])

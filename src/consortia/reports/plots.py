"""Publication plots: Kaplan-Meier curves with a number-at-risk table, forest plots.

The functions build :class:`matplotlib.figure.Figure` objects directly (no
``pyplot`` state, no global backend switch: rendering uses the Agg canvas),
so they are safe in servers and tests.  :func:`save_figure` writes PNG and SVG.

Examples
--------
>>> fig = kaplan_meier_plot(km_result, title="Overall survival")  # doctest: +SKIP
>>> save_figure(fig, "out/km")  # out/km.png and out/km.svg  # doctest: +SKIP
>>> save_figure(forest_plot(cox_result.summary), "out/forest")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

from consortia.errors import ValidationError
from consortia.survival.kaplan_meier import KaplanMeierCurve, KaplanMeierResult

__all__ = ["FOREST_COLUMNS", "forest_plot", "kaplan_meier_plot", "save_figure"]

FOREST_COLUMNS = ("exp(coef)", "exp(coef) lower 95%", "exp(coef) upper 95%")
"""Columns a forest plot needs (as in lifelines' ``CoxPHFitter.summary``)."""

_FORMATS = ("png", "svg")


def _curves(
    result: KaplanMeierResult | Mapping[str, KaplanMeierCurve] | KaplanMeierCurve,
) -> list[KaplanMeierCurve]:
    if isinstance(result, KaplanMeierCurve):
        return [result]
    curves = result.curves if isinstance(result, KaplanMeierResult) else result
    if not isinstance(curves, Mapping) or not curves:
        raise ValidationError("kaplan_meier_plot needs a KaplanMeierResult or curves by label")
    out = list(curves.values())
    if not all(isinstance(c, KaplanMeierCurve) for c in out):
        raise ValidationError("kaplan_meier_plot needs KaplanMeierCurve objects")
    return out


def _nice_ticks(stop: float, n: int = 6) -> np.ndarray:
    if stop <= 0:
        return np.array([0.0])
    raw = stop / n
    mag = 10 ** np.floor(np.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    return np.arange(0.0, stop + step * 1e-9, step)


def kaplan_meier_plot(
    result: KaplanMeierResult | Mapping[str, KaplanMeierCurve] | KaplanMeierCurve,
    *,
    title: str | None = None,
    xlabel: str = "Time",
    ylabel: str = "Survival probability",
    at_risk_times: Sequence[float] | None = None,
    confidence_band: bool = True,
    censor_marks: bool = True,
    show_median: bool = False,
    labels: Mapping[str, str] | None = None,
    figsize: tuple[float, float] = (7.5, 4.5),
) -> Figure:
    """Kaplan-Meier curves per group with confidence bands and a number-at-risk table.

    Parameters
    ----------
    result
        A :class:`~consortia.survival.kaplan_meier.KaplanMeierResult`, a mapping
        label -> curve, or one curve.
    title, xlabel, ylabel
        Labels.
    at_risk_times
        Times of the number-at-risk table (and the x ticks); by default about
        six round numbers over the follow-up.
    confidence_band
        Draw each curve's confidence band.
    censor_marks
        Mark grid points where patients were censored (``+``).
    show_median
        Draw a dotted line at S = 0.5.
    labels
        Optional display names of the groups (by curve label).
    figsize
        Width and height in inches of the curve panel (the table is added below).

    Returns
    -------
    matplotlib.figure.Figure
        Save it with :func:`save_figure`.
    """
    curves = _curves(result)
    stop = max(float(c.timeline[-1]) for c in curves)
    ticks = _nice_ticks(stop) if at_risk_times is None else np.asarray(at_risk_times, float)
    if ticks.ndim != 1 or ticks.size == 0 or not np.all(np.isfinite(ticks)):
        raise ValidationError("at_risk_times must be a non-empty sequence of finite times")
    n_rows = len(curves)
    names = [str(labels.get(c.label, c.label)) if labels else c.label for c in curves]
    main_h, table_h, margin_b, margin_t = figsize[1], 0.45 + 0.25 * n_rows, 0.55, 0.45
    total_h = margin_b + table_h + 0.35 + main_h + margin_t
    fig = Figure(figsize=(figsize[0], total_h))
    left, width = 0.2, 0.75
    ax = fig.add_axes((left, (margin_b + table_h + 0.35) / total_h, width, main_h / total_h))
    tab = fig.add_axes((left, margin_b / total_h, width, table_h / total_h), sharex=ax)
    colors = [f"C{i}" for i in range(n_rows)]
    for curve, name, color in zip(curves, names, colors, strict=True):
        t = curve.timeline
        # start every curve at (0, 1): S is 1 before the first grid point
        x = np.concatenate(([0.0], t)) if t[0] > 0 else t
        pad = (lambda a: np.concatenate(([1.0], a))) if t[0] > 0 else (lambda a: a)
        label = f"{name} (n={curve.n}, events={curve.events})"
        ax.step(x, pad(curve.survival), where="post", color=color, lw=1.8, label=label)
        if confidence_band:
            ax.fill_between(
                x,
                pad(curve.ci_lower),
                pad(curve.ci_upper),
                step="post",
                color=color,
                alpha=0.18,
                lw=0,
            )
        if censor_marks:
            leaving = curve.n_at_risk - np.append(curve.n_at_risk[1:], 0.0)
            cens = leaving - curve.n_events
            mark = cens > 0
            ax.plot(t[mark], curve.survival[mark], "+", color=color, ms=6, mew=1.0)
    if show_median:
        ax.axhline(0.5, color="0.5", ls=":", lw=1)
    ax.set_ylim(-0.02, 1.03)
    ax.set_xlim(0, max(stop, float(ticks[-1])) * 1.02)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", frameon=False, fontsize=9)
    ax.tick_params(labelbottom=False)
    if title:
        ax.set_title(title)
    # number-at-risk table
    tab.set_xticks(ticks)
    tab.set_xlabel(xlabel)
    tab.set_ylim(-0.5, n_rows - 0.5)
    tab.set_yticks([])
    for row, (curve, color) in enumerate(zip(curves, colors, strict=True)):
        y = n_rows - 1 - row
        tab.text(
            -0.03,
            y,
            names[row],
            transform=tab.get_yaxis_transform(),
            ha="right",
            va="center",
            fontsize=9,
            color=color,
        )
        for tm, n in zip(ticks, curve.at_risk_at(ticks), strict=True):
            tab.text(tm, y, str(int(n)), ha="center", va="center", fontsize=9, color=color)
    for side in ("top", "right", "left"):
        tab.spines[side].set_visible(False)
    tab.tick_params(axis="y", length=0)
    tab.set_title("Number at risk", fontsize=9, loc="left")
    return fig


def forest_plot(
    summary: pd.DataFrame,
    *,
    title: str | None = None,
    xlabel: str = "Hazard ratio (95% CI, log scale)",
    labels: Mapping[str, str] | None = None,
    annotate: bool = True,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """A forest plot of hazard ratios with confidence intervals.

    Parameters
    ----------
    summary
        One row per covariate (the index gives the names) with the columns
        ``'exp(coef)'``, ``'exp(coef) lower 95%'`` and ``'exp(coef) upper 95%'``,
        as in lifelines' ``CoxPHFitter.summary`` and the consortia Cox summary;
        a ``'p'`` column, if present, is printed beside the intervals.
    title, xlabel
        Labels.
    labels
        Optional display names for covariates.
    annotate
        Print "HR (lower-upper)" (and p) beside each row.
    figsize
        Figure size; by default grows with the number of rows.

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ValidationError
        If a required column is missing or a ratio is not a positive finite number.
    """
    if not isinstance(summary, pd.DataFrame):
        raise ValidationError("forest_plot needs a DataFrame shaped like CoxPHFitter.summary")
    missing = [c for c in FOREST_COLUMNS if c not in summary.columns]
    if missing:
        raise ValidationError(f"forest_plot: summary lacks column(s) {missing}")
    if summary.empty:
        raise ValidationError("forest_plot: summary has no rows")
    values = summary[list(FOREST_COLUMNS)].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValidationError(
            "forest_plot: hazard ratios and their limits must be positive finite numbers"
        )
    hr, lo, hi = values.T
    names = [str(labels.get(str(i), i)) if labels else str(i) for i in summary.index]
    n = len(names)
    height = 1.3 + 0.32 * n
    fig = Figure(figsize=figsize or (8.0, height))
    bottom, top = 0.75 / height, 1 - 0.45 / height
    ax = fig.add_axes((0.28, bottom, 0.42 if annotate else 0.66, top - bottom))
    y = np.arange(n)[::-1]
    ax.errorbar(
        hr, y, xerr=(hr - lo, hi - hr), fmt="s", color="C0", ecolor="C0", ms=5, capsize=3, lw=1.3
    )
    ax.axvline(1.0, color="0.4", ls="--", lw=1)
    ax.set_xscale("log")
    span_lo, span_hi = float(min(lo.min(), 1.0)), float(max(hi.max(), 1.0))
    ax.set_xlim(span_lo / 1.25, span_hi * 1.25)
    nice = [b * 10.0**e for e in range(-4, 5) for b in (1, 2, 5)]
    shown = [v for v in nice if span_lo / 1.25 <= v <= span_hi * 1.25]
    if len(shown) < 3:
        fine = [b * 10.0**e for e in range(-4, 5) for b in (1, 1.5, 2, 3, 4, 5, 7)]
        shown = [v for v in fine if span_lo / 1.25 <= v <= span_hi * 1.25]
    if len(shown) > 7:
        shown = [v for v in shown if np.isclose(np.log10(v) % 1, 0) or v == 1]
    ax.xaxis.set_major_locator(FixedLocator(shown))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yticks(y)
    ax.set_yticklabels(names, fontsize=9)
    ax.set_ylim(-0.7, n - 0.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3, which="both")
    if title:
        ax.set_title(title)
    if annotate:
        p = summary["p"].to_numpy(float) if "p" in summary.columns else None
        header = "HR (95% CI)" + ("    p" if p is not None else "")
        ax.text(1.04, 1.0, header, transform=ax.transAxes, fontsize=9, va="bottom", weight="bold")
        for i in range(n):
            text = f"{hr[i]:.2f} ({lo[i]:.2f}-{hi[i]:.2f})"
            if p is not None:
                text += f"   {_format_p(p[i])}"
            ax.text(1.04, y[i], text, transform=ax.get_yaxis_transform(), fontsize=9, va="center")
    return fig


def _format_p(p: float) -> str:
    if not np.isfinite(p):
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def save_figure(
    fig: Figure,
    path: str | Path,
    *,
    formats: Iterable[str] | None = None,
    dpi: int = 150,
    **savefig_kwargs: Any,
) -> list[Path]:
    """Write a figure as PNG and SVG (or the formats asked for).

    Parameters
    ----------
    fig
        The figure.
    path
        A file stem (``out/km`` writes ``out/km.png`` and ``out/km.svg``) or a
        file name with a ``.png``/``.svg`` suffix (writes that format only).
    formats
        Formats to write, among ``png`` and ``svg`` (overrides the suffix).
    dpi
        Resolution of raster output.

    Returns
    -------
    list of pathlib.Path
        The files written.
    """
    if not isinstance(fig, Figure):
        raise ValidationError("save_figure needs a matplotlib Figure")
    target = Path(path)
    suffix = target.suffix.lower().lstrip(".")
    if formats is None:
        formats = (suffix,) if suffix in _FORMATS else _FORMATS
    formats = tuple(f.lower().lstrip(".") for f in formats)
    unknown = [f for f in formats if f not in _FORMATS]
    if unknown or not formats:
        raise ValidationError(f"formats must be among {list(_FORMATS)}")
    stem = target.with_suffix("") if suffix in _FORMATS else target
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = stem.with_name(f"{stem.name}.{fmt}")
        fig.savefig(out, format=fmt, dpi=dpi, **savefig_kwargs)
        written.append(out)
    return written

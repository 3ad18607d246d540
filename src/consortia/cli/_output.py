"""What the ``study`` commands print: formats, files, parameter summaries, plain tables.

Nothing here is wrapped at the terminal's width: a table row is one line whether
the output is a terminal, a pipe or a file (``--out``).
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

FORMATS = ("table", "json", "csv")

ARRAY_ITEMS_SHOWN = 5
"""Lists of numbers longer than this are summarised as ``<array of N floats, min..max>``."""

fmt_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table: aligned text, one line per row; json; csv.",
)
out_option = click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write to this file instead of standard output.",
)


def emit(text: str, out: str | None) -> None:
    """Write ``text`` to ``out`` (a file, replaced) or to standard output."""
    if not text.endswith("\n"):
        text += "\n"
    if out is None:
        click.echo(text, nl=False)
        return
    try:
        Path(out).expanduser().write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {out}: {exc.strerror or exc}") from None
    click.echo(f"wrote {out}", err=True)


def dumps(value: Any) -> str:
    """Strict JSON (NaN as null, infinities as strings) of any result-like value."""
    from consortia.results import jsonable

    return json.dumps(jsonable(value), indent=2, allow_nan=False)


# --------------------------------------------------------------------------- parameters


def summarise(value: Any, limit: int = ARRAY_ITEMS_SHOWN) -> Any:
    """``value`` with every long list of numbers replaced by a one-line description.

    ``[0, 1, ..., 9000]`` becomes ``"<array of 9001 floats, 0..9000>"``; lists of
    other items longer than ``limit`` keep their first items and their count.
    Short lists, strings, numbers and ``{start, stop, step}`` grids are kept.
    """
    if isinstance(value, Mapping):
        return {k: summarise(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        if len(value) <= limit:
            return [summarise(v, limit) for v in value]
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(value):
            kind = "ints" if all(isinstance(v, int) for v in numbers) else "floats"
            finite = [float(v) for v in numbers if math.isfinite(v)]
            span = f", {_num(min(finite))}..{_num(max(finite))}" if finite else ""
            return f"<array of {len(value)} {kind}{span}>"
        head = ", ".join(str(v) for v in value[:limit])
        return f"<list of {len(value)} items: {head}, ...>"
    return value


def _num(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:.6g}"


def _flat(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k}: {_flat(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flat(v) for v in value) + "]"
    return _num(value) if isinstance(value, float) and math.isfinite(value) else str(value)


def grid_points(value: Any) -> int | None:
    """The number of points of a ``{start, stop, step}`` grid parameter, else None."""
    if not (isinstance(value, Mapping) and set(value) == {"start", "stop", "step"}):
        return None
    try:
        start, stop, step = (float(value[k]) for k in ("start", "stop", "step"))
        return int(math.floor((stop - start) / step + 1e-9)) + 1 if step > 0 else None
    except (TypeError, ValueError):
        return None


def params_lines(params: Mapping[str, Any]) -> list[str]:
    """One ``name = value`` line per parameter, long arrays summarised."""
    lines = []
    for k, v in summarise(params).items():
        text = _flat(v)
        n = grid_points(params[k])
        if n is not None:
            text += f"  ({n} points)"
        lines.append(f"{k} = {text}")
    return lines


def status_view(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A study's status (the hub's JSON) with its algorithm's parameters summarised."""
    out = dict(raw)
    algo = raw.get("algorithm")
    if isinstance(algo, Mapping):
        out["algorithm"] = {**algo, "params": summarise(algo.get("params", {}))}
    return out


def status_text(raw: Mapping[str, Any]) -> str:
    """A study's status as aligned ``key  value`` lines (parameters summarised)."""
    algo = raw.get("algorithm") or {}
    rows: list[tuple[str, str]] = [
        ("study", str(raw.get("id"))),
        ("status", str(raw.get("status"))),
        ("algorithm", str(algo.get("name", algo) if isinstance(algo, Mapping) else algo)),
    ]
    params = algo.get("params") if isinstance(algo, Mapping) else None
    if params:
        for i, line in enumerate(params_lines(params)):
            rows.append(("parameters" if i == 0 else "", line))
    rows.append(("dataset", str(raw.get("dataset"))))
    if raw.get("researcher"):
        rows.append(("researcher", str(raw["researcher"])))
    rows.append(("participants", ", ".join(raw.get("participants") or []) or "-"))
    rows.append(("rounds done", str(raw.get("rounds_done", 0))))
    cur = raw.get("current")
    if cur:
        n = len(raw.get("participants") or [])
        text = (
            f"round {cur.get('round_index')} ({cur.get('step')}), attempt {cur.get('attempt')}, "
            f"{cur.get('phase')}, {len(cur.get('received') or [])}/{n} received"
        )
        rows.append(("current", text))
        if cur.get("waiting_approval"):
            rows.append(("waiting for", ", ".join(cur["waiting_approval"])))
    if raw.get("error"):
        rule = f" (rule: {raw['error_rule']})" if raw.get("error_rule") else ""
        site = f" at {raw['error_site']}" if raw.get("error_site") else ""
        rows.append(("error", f"{raw['error']}{rule}{site}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}".rstrip() for k, v in rows) + "\n"


# --------------------------------------------------------------------------- tables


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain aligned columns, one line per row (never wrapped)."""
    cells = [[str(h) for h in headers]] + [["" if v is None else str(v) for v in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines) + "\n"


def csv_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The rows as CSV text."""
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    return buf.getvalue()


def when(epoch: Any) -> str:
    """Seconds since the epoch as ``YYYY-MM-DD HH:MM:SS`` UTC ('' if unknown)."""
    if not isinstance(epoch, (int, float)):
        return ""
    return _dt.datetime.fromtimestamp(epoch, _dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


STUDY_COLUMNS: tuple[tuple[str, Callable[[Mapping[str, Any]], Any]], ...] = (
    ("id", lambda s: s.get("id")),
    ("status", lambda s: s.get("status")),
    ("algorithm", lambda s: (s.get("algorithm") or {}).get("name", "")),
    ("dataset", lambda s: s.get("dataset")),
    ("rounds", lambda s: s.get("rounds_done", "")),
    ("sites", lambda s: len(s["participants"]) if "participants" in s else ""),
    ("submitted (UTC)", lambda s: when(s.get("created_at"))),
)


# --------------------------------------------------------------------------- results


def result_tables(value: Any, *, full: bool) -> dict[str, Any]:
    """A result's named tables (``{}`` for a value that is not a consortia result)."""
    tables = getattr(value, "tables", None)
    return dict(tables(full=full)) if callable(tables) else {}


def render_result(value: Any, fmt: str, *, full: bool = False, table: str | None = None) -> str:
    """A study result as text: its summary (table), its JSON, or one of its tables (csv).

    Parameters
    ----------
    full
        With ``table`` format: every table (long ones included); with ``json``
        format it makes no difference (the JSON holds everything).
    table
        With ``csv`` format: the table to write (default: the first one).
    """
    from consortia.results import render_table

    if fmt == "json":
        to_json = getattr(value, "to_json", None)
        return to_json() if callable(to_json) else dumps(value)
    if fmt == "csv":
        tables = result_tables(value, full=True)
        if not tables:
            raise click.UsageError("this result has no table: use --format json")
        name = table or next(iter(tables))
        if name not in tables:
            raise click.BadParameter(
                f"no table {name!r} in this result (tables: {', '.join(tables)})",
                param_hint="--table",
            )
        text: str = tables[name].to_csv()
        return text
    summary_text = getattr(value, "summary_text", None)
    if not callable(summary_text):
        return dumps(value)
    text = summary_text()
    if full:
        printed = result_tables(value, full=False)
        for name, t in result_tables(value, full=True).items():
            if name not in printed:
                text += f"---\n{name}\n{render_table(t)}\n"
    return text

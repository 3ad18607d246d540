"""The target and drug knowledge table: its format, the shipped table and a validating loader.

Every row is one approved (or guideline-recommended) use of a drug for a
biomarker in one cancer type, with its public source.  The columns, their types
and allowed values are documented in ``docs/targets.md``; :func:`load_targets`
reads the table shipped with consortia or a user's own (CSV, TSV or JSON
records) and raises :class:`~consortia.errors.TargetTableError` naming the row
and column of the first rule broken.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from consortia.errors import TargetTableError, ValidationError

__all__ = [
    "ALTERATIONS",
    "CANCER_TYPES",
    "COLUMNS",
    "DIRECTIONS",
    "EVIDENCE_LEVELS",
    "SOURCE_TYPES",
    "TargetTable",
    "load_targets",
    "normalize_cancer_type",
    "validate_targets",
]

#: Columns in order: ``name -> required`` (an optional column may be absent or empty).
COLUMNS: dict[str, bool] = {
    "biomarker_id": True,
    "biomarker": True,
    "genes": False,
    "aliases": False,
    "alteration": True,
    "direction": True,
    "target": True,
    "drug": True,
    "brand": False,
    "cancer_type": True,
    "setting": True,
    "evidence": True,
    "year": True,
    "source_type": True,
    "source": True,
    "notes": False,
}

#: The evidence scale, strongest first (see ``docs/targets.md``).
EVIDENCE_LEVELS = ("fda_approved", "guideline", "clinical")
ALTERATIONS = (
    "amplification",
    "overexpression",
    "expression",
    "mutation",
    "fusion",
    "loss",
    "signature",
)
DIRECTIONS = ("up", "down", "any")
SOURCE_TYPES = ("fda_label", "fda_approval_notice", "nccn", "esmo", "civic", "publication")
_FDA_SOURCES = ("fda_label", "fda_approval_notice")

#: Cancer types of the table; ``solid_tumors`` is a tissue-agnostic approval.
CANCER_TYPES = (
    "aml",
    "biliary",
    "breast",
    "cervical",
    "colorectal",
    "endometrial",
    "gastric",
    "gist",
    "glioma",
    "head_neck",
    "melanoma",
    "nsclc",
    "ovarian",
    "pancreatic",
    "prostate",
    "renal",
    "thyroid",
    "urothelial",
    "solid_tumors",
)
#: Cancer types that a tissue-agnostic (``solid_tumors``) approval does not cover.
HAEMATOLOGICAL = frozenset({"aml"})

# Study cancer types: TCGA project codes and common names -> the table's vocabulary.
_CANCER_SYNONYMS = {
    "brca": "breast",
    "breast cancer": "breast",
    "coad": "colorectal",
    "read": "colorectal",
    "coadread": "colorectal",
    "crc": "colorectal",
    "colon": "colorectal",
    "rectal": "colorectal",
    "luad": "nsclc",
    "lusc": "nsclc",
    "lung": "nsclc",
    "non-small cell lung cancer": "nsclc",
    "skcm": "melanoma",
    "thca": "thyroid",
    "ov": "ovarian",
    "prad": "prostate",
    "paad": "pancreatic",
    "chol": "biliary",
    "cholangiocarcinoma": "biliary",
    "blca": "urothelial",
    "bladder": "urothelial",
    "ucec": "endometrial",
    "cesc": "cervical",
    "hnsc": "head_neck",
    "stad": "gastric",
    "stomach": "gastric",
    "laml": "aml",
    "lgg": "glioma",
    "gbm": "glioma",
    "kirc": "renal",
    "kirp": "renal",
    "kich": "renal",
}

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.\-]*$")
SHIPPED = "targets.csv"


def normalize_cancer_type(name: str) -> str:
    """A study's cancer type in the table's vocabulary (``"BRCA"``, ``"Breast"`` -> ``"breast"``).

    Accepts the values of :data:`CANCER_TYPES`, TCGA project codes (``LUAD``,
    ``COAD``, ...) and a few common names, case-insensitively.

    Raises
    ------
    ValidationError
        An unknown cancer type (the message lists the allowed values).
    """
    key = str(name).strip().lower().removeprefix("tcga-")
    key = key.replace("-", "_") if key.replace("-", "_") in CANCER_TYPES else key
    if key in CANCER_TYPES and key != "solid_tumors":
        return key
    if key in _CANCER_SYNONYMS:
        return _CANCER_SYNONYMS[key]
    allowed = ", ".join(c for c in CANCER_TYPES if c != "solid_tumors")
    raise ValidationError(f"cancer_type {name!r} is unknown: use one of {allowed} or a TCGA code")


def covers(row_cancer_type: str, study_cancer_type: str) -> bool:
    """Whether a row's cancer type covers the study's (a tissue-agnostic row: solid tumours)."""
    if row_cancer_type == study_cancer_type:
        return True
    return row_cancer_type == "solid_tumors" and study_cancer_type not in HAEMATOLOGICAL


@dataclass(frozen=True)
class TargetTable:
    """A validated target and drug knowledge table.

    Attributes
    ----------
    rows
        One row per drug, biomarker and indication; the columns of :data:`COLUMNS`
        (strings, ``year`` as int), in that order, then any extra columns.
    source
        Where the table was read from (``"consortia:targets.csv"`` for the shipped one).
    """

    rows: pd.DataFrame
    source: str

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def pairs(self) -> pd.DataFrame:
        """The distinct drug-biomarker pairs (``biomarker_id``, ``drug``)."""
        return self.rows[["biomarker_id", "drug"]].drop_duplicates().reset_index(drop=True)

    def genes(self, biomarker_id: str) -> tuple[str, ...]:
        """The genes of a biomarker over all its rows, in table order."""
        out: dict[str, None] = {}
        for cell in self.rows.loc[self.rows["biomarker_id"] == biomarker_id, "genes"]:
            out.update(dict.fromkeys(_split(cell)))
        return tuple(out)

    def alias_map(self) -> dict[str, str]:
        """Upper-case gene symbols and aliases -> the table's gene symbol (``HER2 -> ERBB2``)."""
        out: dict[str, str] = {}
        for genes, aliases in zip(self.rows["genes"], self.rows["aliases"], strict=True):
            symbols = _split(genes)
            for g in symbols:
                out[g.upper()] = g
            if symbols:
                for a in _split(aliases):
                    out.setdefault(a.upper(), symbols[0])
        return out


def load_targets(path: str | Path | None = None) -> TargetTable:
    """Read and validate a target and drug knowledge table.

    Parameters
    ----------
    path
        A ``.csv``, ``.tsv`` or ``.json`` file (a list of records) in the format of
        ``docs/targets.md``; ``None`` reads the table shipped with consortia.

    Returns
    -------
    TargetTable

    Raises
    ------
    TargetTableError
        The file cannot be parsed, or a row breaks a rule (the error names the row and column).
    """
    if path is None:
        text = resources.files("consortia.subgroups").joinpath("data", SHIPPED).read_text("utf-8")
        return validate_targets(_read_delimited(text, ",", SHIPPED), source=f"consortia:{SHIPPED}")
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".csv", ".tsv", ".txt"):
        raise TargetTableError("the file must end in .csv, .tsv or .json", source=str(p))
    try:
        text = p.read_text("utf-8")
    except OSError as exc:
        raise TargetTableError(f"cannot be read ({type(exc).__name__})", source=str(p)) from exc
    if suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TargetTableError(f"is not valid JSON (line {exc.lineno})", source=str(p)) from exc
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise TargetTableError("a JSON table must be a list of records", source=str(p))
        frame = pd.DataFrame.from_records([{k: _cell(v) for k, v in r.items()} for r in records])
    else:
        frame = _read_delimited(text, "\t" if suffix != ".csv" else ",", str(p))
    return validate_targets(frame, source=str(p))


def validate_targets(frame: pd.DataFrame, *, source: str = "<frame>") -> TargetTable:
    """Check a table against the documented format and return it typed.

    Parameters
    ----------
    frame
        The table (every cell a string or a number; empty cells as ``""`` or missing).
    source
        Named in error messages.

    Raises
    ------
    TargetTableError
        The first rule broken, with its row (1-based, header not counted) and column.
    """
    missing = [c for c, required in COLUMNS.items() if required and c not in frame.columns]
    if missing:
        raise TargetTableError("required column is missing", column=missing[0], source=source)
    if frame.empty:
        raise TargetTableError("the table has no rows", source=source)
    rows = frame.reset_index(drop=True).copy()
    for c in COLUMNS:
        rows[c] = [_cell(v) for v in rows[c]] if c in rows.columns else [""] * len(rows)
    years: list[int] = []
    seen: dict[tuple[str, ...], int] = {}
    kind: dict[str, tuple[str, str, int]] = {}
    aliases: dict[str, tuple[str, int]] = {}
    for i, rec in enumerate(rows[list(COLUMNS)].to_dict("records"), start=1):

        def fail(column: str, rule: str, row: int = i) -> TargetTableError:
            return TargetTableError(rule, row=row, column=column, source=source)

        for c, required in COLUMNS.items():
            if required and not rec[c]:
                raise fail(c, "must not be empty")
        if not _ID.match(rec["biomarker_id"]):
            raise fail("biomarker_id", "must be letters, digits and _ . + - (no spaces)")
        for c, allowed in (
            ("alteration", ALTERATIONS),
            ("direction", DIRECTIONS),
            ("cancer_type", CANCER_TYPES),
            ("evidence", EVIDENCE_LEVELS),
            ("source_type", SOURCE_TYPES),
        ):
            if rec[c] not in allowed:
                raise fail(c, f"{rec[c]!r} is not one of {', '.join(allowed)}")
        genes = _split(rec["genes"])
        if not genes and rec["alteration"] != "signature":
            raise fail("genes", "must name at least one gene unless alteration is 'signature'")
        for c in ("genes", "aliases"):
            for sym in _split(rec[c]):
                if not _SYMBOL.match(sym):
                    raise fail(c, f"{sym!r} is not a gene symbol (letters, digits, '.', '-')")
        if _split(rec["aliases"]) and not genes:
            raise fail("aliases", "aliases name the row's first gene: the row has no genes")
        try:
            year = int(float(rec["year"]))
        except (ValueError, OverflowError):
            raise fail("year", "must be a whole number (the approval or guideline year)") from None
        if not 1900 <= year <= 2100 or float(rec["year"]) != year:
            raise fail("year", "must be a whole number between 1900 and 2100")
        years.append(year)
        if rec["source_type"] in _FDA_SOURCES and not rec["brand"]:
            raise fail("brand", "an FDA source must name the drug's label (brand) name")
        if rec["evidence"] == "fda_approved" and rec["source_type"] not in _FDA_SOURCES:
            raise fail(
                "source_type", "evidence 'fda_approved' needs an FDA label or approval notice"
            )
        key = (
            rec["biomarker_id"],
            rec["drug"],
            rec["cancer_type"],
            rec["biomarker"],
            rec["setting"],
        )
        if key in seen:
            raise fail("drug", f"duplicates row {seen[key]} (same biomarker, drug and indication)")
        seen[key] = i
        bid = rec["biomarker_id"]
        first = kind.setdefault(bid, (rec["alteration"], rec["direction"], i))
        for j, c in enumerate(("alteration", "direction")):
            if rec[c] != first[j]:
                raise fail(c, f"differs from row {first[2]} of the same biomarker_id")
        for a in _split(rec["aliases"]):
            gene, row = aliases.setdefault(a.upper(), (genes[0], i))
            if gene != genes[0]:
                raise fail("aliases", f"{a!r} already names {gene} in row {row}")
    symbols = {g.upper(): g for cell in rows["genes"] for g in _split(cell)}
    for a, (gene, row) in aliases.items():
        if a in symbols and symbols[a] != gene:
            raise TargetTableError(
                f"alias {a!r} is itself a gene symbol of the table",
                row=row,
                column="aliases",
                source=source,
            )
    rows["year"] = pd.Series(years, dtype="int64")
    order = list(COLUMNS) + [c for c in rows.columns if c not in COLUMNS]
    return TargetTable(rows=rows[order], source=source)


def _read_delimited(text: str, sep: str, source: str) -> pd.DataFrame:
    import io

    try:
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TargetTableError(f"cannot be parsed ({type(exc).__name__})", source=source) from exc


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _split(cell: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in str(cell).split(";") if s.strip())

"""Match patient subgroups to targets and approved drugs by marker evidence.

:func:`match_targets` is pure: it takes each subgroup's marker table (a gene,
its log2 fold change or coefficient against the rest, and its FDR, as the
omics screens produce them), optionally the prevalence of biomarkers in each
subgroup, and a knowledge table (:mod:`consortia.subgroups.target_table`), and
ranks the table's targets per subgroup.

Score of a target (a ``biomarker_id``) in a subgroup::

    marker     = max over the target's genes of  w_dir * support * min(-log10(padj), cap)
    prevalence = prevalence_weight * (fraction of the subgroup with the biomarker)
    score      = marker + prevalence

``support`` is the gene's fold change in the direction the biomarker implies
(``up``: ``max(log2fc, 0)``; ``down``: ``max(-log2fc, 0)``; ``any``: ``|log2fc|``)
and ``w_dir`` is 1 for ``up``/``down`` and 0.5 for ``any`` (a mutation or
fusion whose expression change is indirect evidence).  ``cap`` (10) keeps one
gene with a tiny FDR from dwarfing the rest.  Ties keep the table's order of
the biomarkers; targets with a score of zero are left out.  See ``docs/targets.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from consortia.errors import SchemaError, ValidationError
from consortia.results import Result
from consortia.subgroups.target_table import (
    EVIDENCE_LEVELS,
    TargetTable,
    covers,
    load_targets,
    normalize_cancer_type,
)

__all__ = ["TargetMatchResult", "match_targets"]

EFFECT_COLUMNS = ("log2fc", "log2FoldChange", "logFC", "coef")
PADJ_COLUMNS = ("padj", "adj.P.Val", "fdr", "FDR", "qvalue")
#: Drug status in the study's cancer type, in listing order.
STATUSES = ("approved", "guideline", "clinical", "repositioning")
_DIRECTION_WEIGHT = {"up": 1.0, "down": 1.0, "any": 0.5}

SUMMARY_COLUMNS = (
    "biomarker_id",
    "targets",
    "gene",
    "log2fc",
    "padj",
    "prevalence",
    "marker_score",
    "prevalence_score",
    "score",
    "significant",
    "drugs",
    "repositioning",
)
DRUG_COLUMNS = (
    "biomarker_id",
    "drug",
    "brands",
    "targets",
    "status",
    "repositioning",
    "approved_in",
    "first_year",
    "sources",
)


@dataclass(frozen=True)
class TargetMatchResult(Result):
    """Targets ranked per subgroup by marker evidence, with the drugs approved for them.

    Attributes
    ----------
    summary
        One row per subgroup and target, indexed by (``subgroup``, ``rank``; 1 is
        the strongest): ``biomarker_id``, ``targets`` (the drugs' molecular
        targets), the best-supporting ``gene`` with its ``log2fc`` and ``padj``,
        ``prevalence``, ``marker_score``, ``prevalence_score``, ``score``,
        ``significant`` (the gene's ``padj <= fdr`` with support in the
        biomarker's direction), ``drugs`` (all, comma-separated, in the order of
        :attr:`drugs`) and ``repositioning`` (those approved in another cancer
        type only).
    drugs
        One row per subgroup, target and drug, indexed by (``subgroup``,
        ``rank``): ``drug``, ``brands``, ``targets``, ``status`` (``approved``,
        ``guideline`` or ``clinical`` in the study's cancer type, or
        ``repositioning``), ``repositioning`` (bool), ``approved_in`` (every
        cancer type of the table for the pair, with year and evidence),
        ``first_year`` and ``sources``.
    subgroups
        The subgroups, in input order.
    cancer_type
        The study's cancer type in the table's vocabulary (``None``: not given,
        no drug is marked for repositioning).
    fdr, prevalence_weight, neglog10_cap
        The parameters of the score.
    table_source, table_rows
        The knowledge table used.
    """

    summary: pd.DataFrame
    drugs: pd.DataFrame
    subgroups: tuple[str, ...]
    cancer_type: str | None
    fdr: float
    prevalence_weight: float
    neglog10_cap: float
    table_source: str
    table_rows: int

    def statistics(self) -> dict[str, Any]:
        """Subgroups, matched targets and drugs, repositioning candidates, parameters."""
        rep = self.drugs.loc[self.drugs["repositioning"], "drug"] if len(self.drugs) else []
        return {
            "subgroups": len(self.subgroups),
            "targets": len(self.summary),
            "drugs": int(self.drugs["drug"].nunique()) if len(self.drugs) else 0,
            "repositioning": len(set(rep)),
            "cancer_type": self.cancer_type if self.cancer_type is not None else "not given",
            "fdr": self.fdr,
            "prevalence_weight": self.prevalence_weight,
            "table": self.table_source,
        }

    def tables(self, *, full: bool = False) -> dict[str, pd.DataFrame]:
        """``summary`` (targets per subgroup) and ``drugs`` (drugs per target)."""
        return {"summary": self.summary, "drugs": self.drugs}

    def top(self, subgroup: str, n: int = 5) -> pd.DataFrame:
        """The ``n`` best targets of one subgroup (rows of :attr:`summary`)."""
        if subgroup not in self.subgroups:
            raise ValidationError(f"subgroup {subgroup!r} is not one of the result's subgroups")
        if subgroup not in self.summary.index.get_level_values("subgroup"):
            return self.summary.iloc[:0]
        return self.summary.xs(subgroup, level="subgroup").head(n)


def match_targets(
    markers: Any,
    table: TargetTable | None = None,
    prevalence: Mapping[str, Mapping[str, float]] | pd.DataFrame | None = None,
    *,
    cancer_type: str | None = None,
    fdr: float = 0.1,
    prevalence_weight: float = 10.0,
    neglog10_cap: float = 10.0,
) -> TargetMatchResult:
    """Rank each subgroup's targets by marker evidence and list their drugs.

    Parameters
    ----------
    markers
        Per subgroup, a marker table: a mapping ``subgroup -> table``, or one
        long table with a ``subgroup`` column, or one table (subgroup ``"all"``).
        A table is a :class:`pandas.DataFrame` with the gene in a ``gene`` column
        or the index, an effect column (``log2fc``, ``log2FoldChange``,
        ``logFC`` or ``coef``) and an FDR column (``padj``, ``adj.P.Val``,
        ``fdr``, ``FDR`` or ``qvalue``), or a result with such a ``summary``
        (:class:`~consortia.omics.limma.ModeratedTResult`,
        :class:`~consortia.omics.screen.CoxScreenResult`).  Gene symbols are
        matched case-insensitively and through the table's aliases (``HER2`` ->
        ``ERBB2``).  Rows without an effect or FDR (genes not tested) are skipped.
    table
        The knowledge table (default: the one shipped, :func:`load_targets`).
    prevalence
        Optional fraction (0 to 1) of each subgroup's patients with a biomarker:
        ``{subgroup: {biomarker_id: fraction}}`` or a table with subgroups as
        index and ``biomarker_id`` columns (a cross-tabulation, row-normalised).
    cancer_type
        The study's cancer type (the table's vocabulary or a TCGA code): drugs
        approved for a target only in other cancer types are marked as
        repositioning candidates.  ``None`` marks none.
    fdr
        A gene is ``significant`` at ``padj <= fdr``.
    prevalence_weight
        Score of a biomarker present in every patient of a subgroup.
    neglog10_cap
        Cap on ``-log10(padj)`` in the marker score.

    Returns
    -------
    TargetMatchResult

    Raises
    ------
    SchemaError
        A marker table lacks the gene, effect or FDR column.
    ValidationError
        A bad parameter, an FDR outside [0, 1], a prevalence outside [0, 1] or
        for an unknown biomarker, an unknown cancer type.
    """
    if not 0 < fdr <= 1:
        raise ValidationError("fdr must lie in (0, 1]")
    for name, value in (("prevalence_weight", prevalence_weight), ("neglog10_cap", neglog10_cap)):
        if not (np.isfinite(value) and value > 0):
            raise ValidationError(f"{name} must be a positive finite number")
    tab = load_targets() if table is None else table
    if not isinstance(tab, TargetTable):
        raise ValidationError("table must be a TargetTable (see load_targets / validate_targets)")
    study = None if cancer_type is None else normalize_cancer_type(cancer_type)
    aliases = tab.alias_map()
    per_subgroup = {s: _marker_frame(m, s, aliases) for s, m in _subgroup_tables(markers).items()}
    prev = _prevalence(prevalence, tab)
    subgroups = tuple(dict.fromkeys([*per_subgroup, *prev]))
    biomarkers = tuple(dict.fromkeys(tab.rows["biomarker_id"]))
    drug_lists = {b: _drugs(tab.rows[tab.rows["biomarker_id"] == b], study) for b in biomarkers}
    direction = dict(zip(tab.rows["biomarker_id"], tab.rows["direction"], strict=True))
    genes = {b: tab.genes(b) for b in biomarkers}

    summary_rows: list[dict[str, Any]] = []
    drug_rows: list[dict[str, Any]] = []
    for s in subgroups:
        frame = per_subgroup.get(s)
        found = []
        for b in biomarkers:
            gene, lfc, padj, marker = _marker_score(frame, genes[b], direction[b], neglog10_cap)
            p = prev.get(s, {}).get(b, np.nan)
            p_score = prevalence_weight * p if np.isfinite(p) else 0.0
            score = marker + p_score
            if score <= 0:
                continue
            sig = bool(gene and padj <= fdr and marker > 0)
            found.append((score, b, gene, lfc, padj, p, marker, p_score, sig))
        found.sort(key=lambda r: (-r[0], biomarkers.index(r[1])))
        for rank, (score, b, gene, lfc, padj, p, marker, p_score, sig) in enumerate(found, 1):
            drugs = drug_lists[b]
            summary_rows.append(
                {
                    "subgroup": s,
                    "rank": rank,
                    "biomarker_id": b,
                    "targets": ", ".join(dict.fromkeys(t for d in drugs for t in d["targets"])),
                    "gene": gene,
                    "log2fc": lfc,
                    "padj": padj,
                    "prevalence": p,
                    "marker_score": marker,
                    "prevalence_score": p_score,
                    "score": score,
                    "significant": sig,
                    "drugs": ", ".join(d["drug"] for d in drugs),
                    "repositioning": ", ".join(d["drug"] for d in drugs if d["repositioning"]),
                }
            )
            for d in drugs:
                row = {"subgroup": s, "rank": rank, "biomarker_id": b, **d}
                row["targets"] = ", ".join(d["targets"])
                drug_rows.append(row)
    summary = _frame(summary_rows, SUMMARY_COLUMNS)
    drugs_frame = _frame(drug_rows, DRUG_COLUMNS)
    return TargetMatchResult(
        summary=summary,
        drugs=drugs_frame,
        subgroups=subgroups,
        cancer_type=study,
        fdr=float(fdr),
        prevalence_weight=float(prevalence_weight),
        neglog10_cap=float(neglog10_cap),
        table_source=tab.source,
        table_rows=len(tab),
    )


# --------------------------------------------------------------------------- markers


def _subgroup_tables(markers: Any) -> dict[str, Any]:
    if isinstance(markers, Mapping):
        if not markers:
            raise ValidationError("markers must hold at least one subgroup")
        return {str(k): v for k, v in markers.items()}
    if isinstance(markers, pd.DataFrame) and "subgroup" in markers.columns:
        return {
            str(k): g.drop(columns="subgroup") for k, g in markers.groupby("subgroup", sort=False)
        }
    return {"all": markers}


def _marker_frame(obj: Any, subgroup: str, aliases: Mapping[str, str]) -> pd.DataFrame:
    """A subgroup's markers as ``gene -> (log2fc, padj)``, one row per table gene."""
    frame = obj if isinstance(obj, pd.DataFrame) else getattr(obj, "summary", None)
    if not isinstance(frame, pd.DataFrame):
        raise ValidationError(
            f"markers of subgroup {subgroup!r} must be a DataFrame or a result with a summary table"
        )
    if "gene" in frame.columns:
        gene = frame["gene"]
    elif frame.index.name == "gene" or pd.api.types.is_string_dtype(frame.index):
        gene = pd.Series(frame.index, index=frame.index)
    else:
        raise SchemaError(f"markers of subgroup {subgroup!r}: no 'gene' column or gene index")
    effect = next((c for c in EFFECT_COLUMNS if c in frame.columns), None)
    padj = next((c for c in PADJ_COLUMNS if c in frame.columns), None)
    for found, names, what in ((effect, EFFECT_COLUMNS, "effect"), (padj, PADJ_COLUMNS, "FDR")):
        if found is None:
            raise SchemaError(
                f"markers of subgroup {subgroup!r}: no {what} column (one of {', '.join(names)})"
            )
    out = pd.DataFrame(
        {
            "gene": [str(g).strip().upper() for g in gene],
            "log2fc": pd.to_numeric(frame[effect], errors="coerce").to_numpy(dtype=float),
            "padj": pd.to_numeric(frame[padj], errors="coerce").to_numpy(dtype=float),
        }
    )
    out = out[np.isfinite(out["log2fc"]) & np.isfinite(out["padj"])]
    if ((out["padj"] < 0) | (out["padj"] > 1)).any():
        raise ValidationError(
            f"markers of subgroup {subgroup!r}: column {padj!r} must lie in [0, 1]"
        )
    out["gene"] = out["gene"].map(aliases)
    out = out.dropna(subset=["gene"]).sort_values("padj", kind="stable")
    return out.drop_duplicates("gene").set_index("gene")


def _marker_score(
    frame: pd.DataFrame | None, genes: tuple[str, ...], direction: str, cap: float
) -> tuple[str, float, float, float]:
    """The best gene of a target: (gene, log2fc, padj, marker score); ``""`` when none."""
    best: tuple[str, float, float, float] = ("", np.nan, np.nan, 0.0)
    if frame is None:
        return best
    for g in genes:
        if g not in frame.index:
            continue
        lfc, padj = float(frame.at[g, "log2fc"]), float(frame.at[g, "padj"])
        support = {"up": max(lfc, 0.0), "down": max(-lfc, 0.0)}.get(direction, abs(lfc))
        evidence = min(-np.log10(max(padj, 1e-300)), cap)
        score = _DIRECTION_WEIGHT[direction] * support * evidence
        if not best[0] or score > best[3]:
            best = (g, lfc, padj, score)
    return best


def _prevalence(prevalence: Any, tab: TargetTable) -> dict[str, dict[str, float]]:
    if prevalence is None:
        return {}
    if isinstance(prevalence, pd.DataFrame):
        prevalence = {idx: row.to_dict() for idx, row in prevalence.iterrows()}
    if not isinstance(prevalence, Mapping):
        raise ValidationError("prevalence must be a mapping subgroup -> {biomarker_id: fraction}")
    known = {b.lower(): b for b in tab.rows["biomarker_id"]}
    out: dict[str, dict[str, float]] = {}
    for s, values in prevalence.items():
        row: dict[str, float] = {}
        for b, v in dict(values).items():
            if str(b).lower() not in known:
                raise ValidationError(f"prevalence: biomarker_id {b!r} is not in the targets table")
            x = float(v)
            if not 0 <= x <= 1:
                raise ValidationError(f"prevalence of {b!r} in subgroup {s!r} must lie in [0, 1]")
            row[known[str(b).lower()]] = x
        out[str(s)] = row
    return out


# --------------------------------------------------------------------------- drugs


def _drugs(rows: pd.DataFrame, study: str | None) -> list[dict[str, Any]]:
    """The drugs of one target, with their status in the study's cancer type, best first."""
    out = []
    for drug, g in rows.groupby("drug", sort=False):
        here = g[[covers(c, study) for c in g["cancer_type"]]] if study is not None else g
        levels = [e for e in EVIDENCE_LEVELS if e in set(here["evidence"])]
        status = levels[0].replace("fda_approved", "approved") if levels else "repositioning"
        approved_in = []
        for ct, year, ev, st in g[["cancer_type", "year", "evidence", "source_type"]].itertuples(
            index=False
        ):
            tag = str(year) if ev == "fda_approved" else f"{st.upper()} {year}"
            approved_in.append(f"{ct} ({tag})")
        fda_years = g.loc[g["evidence"] == "fda_approved", "year"]
        out.append(
            {
                "drug": str(drug),
                "brands": ", ".join(dict.fromkeys(b for b in g["brand"] if b)),
                "targets": tuple(dict.fromkeys(g["target"])),
                "status": status,
                "repositioning": status == "repositioning",
                "approved_in": "; ".join(dict.fromkeys(approved_in)),
                "first_year": int(fda_years.min()) if len(fda_years) else int(g["year"].min()),
                "sources": "; ".join(dict.fromkeys(g["source"])),
            }
        )
    out.sort(key=lambda d: (STATUSES.index(d["status"]), d["first_year"], d["drug"]))
    return out


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["subgroup", "rank", *columns])
    frame["rank"] = frame["rank"].astype("int64")
    return frame.set_index(["subgroup", "rank"])

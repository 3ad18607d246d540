"""Patient subgroups characterised in one study: k-means, survival, cross-tabs, markers.

:class:`Subgroups` composes existing algorithms; it re-implements none of their maths.
Its hub side delegates, one after the other, to the hub sides of

1. :class:`~consortia.subgroups.KMeans` (steps ``kmeans:*``): the public centres;
2. :class:`~consortia.survival.KaplanMeier` (``km:*``), one curve per subgroup;
3. :class:`~consortia.survival.LogRank` (``logrank:*``) across the subgroups;
4. :class:`~consortia.survival.CoxPH` (``cox:*``) with the indicators of subgroups
   ``1 .. k-1`` (subgroup 0 the reference) and optional adjusting covariates;
5. one :class:`~consortia.stats.descriptive.CrossTab` (``crosstab<i>:*``) of the
   subgroup with every named clinical column (its pooled small-cell suppression and
   the node's per-site minimum cell count apply unchanged);
6. with marker genes, one :class:`~consortia.omics.limma.ModeratedT` (``markers<j>:*``)
   per subgroup: each gene's log-expression on the indicator of subgroup ``j`` against
   the rest (limma's moderated t).

Each round's step is the part's prefix and the part's own step; a site's
:meth:`Subgroups.local` dispatches on the prefix to the part's ``local``.  Which
patient is in which subgroup never leaves a site: every characterisation round carries
the public k-means centres and the clustering space (``subgroup_*`` arrays), and the
site recomputes its own patients' labels from them (exactly as
:func:`~consortia.subgroups.assign`), then hands the part a view of its data holding
the clustered patients with a ``subgroup`` column (0 .. k-1) and 0/1 indicator columns
``subgroup_0 .. subgroup_{k-1}``.  The contribution's rows are mapped back to the
site's own rows, so the node's cohort rules judge the real patients.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, SchemaError, ValidationError
from consortia.omics.limma import ModeratedT, ModeratedTResult
from consortia.protocol import (
    Algorithm,
    Contribution,
    Coordination,
    Requirements,
    Round,
    Sums,
    register,
)
from consortia.results import Result
from consortia.stats._validate import check_categories
from consortia.stats.descriptive import CrossTab, CrossTabResult
from consortia.subgroups._lloyd import _labels
from consortia.subgroups._pipeline import ClusterParams, to_space
from consortia.subgroups.kmeans import KMeans, KMeansResult, space_public
from consortia.survival._grid import grid_param
from consortia.survival.cox import CoxPH, CoxPHResult
from consortia.survival.kaplan_meier import KaplanMeier, KaplanMeierResult
from consortia.survival.logrank import LogRank, LogRankResult

__all__ = ["LABEL", "Subgroups", "SubgroupsResult"]

LABEL = "subgroup"
"""The column a site adds to its view of the data: the patient's subgroup (0 .. k-1)."""

_PUBLIC = "subgroup_"  # prefix of the public arrays that define the labels


def indicator(j: int) -> str:
    """The name of the 0/1 indicator column of subgroup ``j``."""
    return f"{LABEL}_{j}"


@dataclass(frozen=True)
class SubgroupsResult(Result):
    """Patient subgroups found by federated k-means and characterised across sites.

    Attributes
    ----------
    kmeans
        The clustering (public centres, sizes, quality, the PCA used).
    sizes
        Patients per subgroup among those with survival data (every clustered patient).
    kaplan_meier
        One Kaplan-Meier curve per subgroup (labels ``"0" .. "k-1"``).
    logrank
        The log-rank test across the subgroups.
    cox
        Cox model with the indicators of subgroups ``1 .. k-1`` (subgroup 0 the
        reference) and the adjusting covariates.
    crosstabs
        Clinical column -> its cross-tabulation with the subgroup (rows: subgroups),
        small cells suppressed.
    markers
        Subgroup (``"0" .. "k-1"``) -> moderated t of every marker gene, that subgroup
        against the rest; empty without marker genes.
    rounds
        Federated rounds of the whole study.
    """

    kmeans: KMeansResult
    sizes: np.ndarray
    kaplan_meier: KaplanMeierResult
    logrank: LogRankResult
    cox: CoxPHResult
    crosstabs: Mapping[str, CrossTabResult]
    markers: Mapping[str, ModeratedTResult]
    rounds: int

    @property
    def n_subgroups(self) -> int:
        """Number of subgroups."""
        return int(self.sizes.size)

    def top_markers(self, subgroup: int, n: int = 10, *, fdr: float = 0.05) -> pd.DataFrame:
        """The ``n`` most significant markers of ``subgroup`` with an FDR below ``fdr``.

        Ranked by p-value; columns as limma's ``topTable``.
        """
        key = str(subgroup)
        if key not in self.markers:
            raise ValidationError(f"subgroup {subgroup!r} has no markers (no marker genes?)")
        table = self.markers[key].summary
        table = table[table["adj.P.Val"] < fdr]
        return table.sort_values("P.Value", kind="stable").head(n)

    def targets(
        self, *, cancer_type: str | None = None, table: Any = None, fdr: float = 0.1
    ) -> Any:
        """Targets and approved drugs ranked for each subgroup from its markers.

        :func:`consortia.subgroups.targets.match_targets` on :attr:`markers` (the
        shipped knowledge table unless ``table`` is given); computed locally from the
        released markers, nothing more is released.
        """
        from consortia.subgroups.targets import match_targets

        if not self.markers:
            raise ValidationError("no markers to match: run the study with marker genes")
        return match_targets(dict(self.markers), table, cancer_type=cancer_type, fdr=fdr)

    @property
    def summary(self) -> pd.DataFrame:
        """One row per subgroup: size, events, median survival, hazard ratio, markers."""
        k = self.n_subgroups
        labels = [str(j) for j in range(k)]
        hr = np.full(k, np.nan)
        p = np.full(k, np.nan)
        cox = self.cox.summary
        for j in range(1, k):
            if indicator(j) in cox.index:
                hr[j] = float(cox.loc[indicator(j), "exp(coef)"])
                p[j] = float(cox.loc[indicator(j), "p"])
        hr[0] = 1.0
        out = pd.DataFrame(
            {
                "n": self.sizes.astype(np.int64),
                "events": [self.kaplan_meier[s].events for s in labels],
                "median_survival": [self.kaplan_meier[s].median for s in labels],
                "hazard_ratio": hr,
                "p": p,
            },
            index=pd.Index(range(k), name=LABEL),
        )
        if self.markers:
            up = []
            for s in labels:
                m = self.markers[s]
                up.append(int(np.count_nonzero(np.nan_to_num(m.fdr, nan=2.0) < 0.05)))
            out["markers_fdr_0.05"] = up
        return out

    def statistics(self) -> dict[str, Any]:
        """Patients, subgroups, the log-rank test and the Cox model's fit."""
        return {
            "n": int(round(float(self.sizes.sum()))),
            "events": int(round(float(self.logrank.observed.sum()))),
            "subgroups": self.n_subgroups,
            "chi2": self.logrank.chi2,
            "df": self.logrank.df,
            "p": self.logrank.p_value,
            "cox_log_likelihood": self.cox.log_likelihood,
            "inertia": self.kmeans.inertia,
            "rounds": self.rounds,
        }

    def tables(self, *, full: bool = False) -> dict[str, pd.DataFrame]:
        """``summary``, ``kaplan_meier`` (medians; ``full``: every curve), ``cox``,
        ``crosstab <column>`` and, with markers, ``markers <j>`` (top 10)."""
        out: dict[str, pd.DataFrame] = {"summary": self.summary}
        out["kaplan_meier"] = self.kaplan_meier.summary
        if full:
            out["kaplan_meier_curves"] = self.kaplan_meier.survival_table()
        out["logrank"] = self.logrank.summary
        out["cox"] = self.cox.summary
        for col, ct in self.crosstabs.items():
            out[f"crosstab {col}"] = ct.table
        for s, m in self.markers.items():
            out[f"markers {s}"] = m.summary if full else self.top_markers(int(s))
        return out


def _prefixed(
    gen: Generator[Round, Sums, Any], prefix: str, extra: Mapping[str, np.ndarray]
) -> Generator[Round, Sums, tuple[Any, int]]:
    """Re-yield ``gen``'s rounds as ``prefix:step`` with ``extra`` public arrays added.

    Returns the part's result and the number of its rounds.
    """
    rounds = 0
    try:
        rnd = next(gen)
        while True:
            sums = yield Round(f"{prefix}:{rnd.step}", {**extra, **rnd.public}, timeout=rnd.timeout)
            rounds += 1
            rnd = gen.send(sums)
    except StopIteration as stop:
        return stop.value, rounds


def _names(value: Any, param: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(c, str) and c for c in names):
        raise ValidationError(f"{param} must be a tuple of column names (non-empty strings)")
    if len(set(names)) != len(names):
        raise ValidationError(f"{param} names a column more than once")
    return names


@register
@dataclass(frozen=True, kw_only=True)
class Subgroups(Algorithm, ClusterParams):
    """Find patient subgroups (federated k-means) and characterise them, in one study.

    Parameters
    ----------
    columns, expression, genes, transform, standardize, dropna
        The clustering features (see :class:`~consortia.subgroups.PCA`).
    n_clusters, init, n_components, n_init, max_iter, tol, min_cluster_size, max_depth,
    seed, pca_method, pca_tol, pca_max_iter, pca_oversample
        The clustering (see :class:`~consortia.subgroups.KMeans`).
    time, event
        Survival columns (follow-up time, 0/1 event).
    time_grid
        The public time grid of the Kaplan-Meier curves, the log-rank test and the
        Cox model (``{start, stop, step}`` or the points; see
        :class:`~consortia.survival.KaplanMeier`): times are rounded up to it.
    ties
        Cox ties method (``"efron"`` or ``"breslow"``).
    cox_covariates
        Numeric columns the Cox model adjusts for besides the subgroup indicators.
    crosstab
        Clinical columns to cross-tabulate with the subgroup (stage, MSI status...).
    crosstab_levels
        One tuple of declared (public) categories per ``crosstab`` column.
    suppress_below
        Pooled small-cell suppression of the cross-tabs (as
        :class:`~consortia.stats.descriptive.CrossTab`).
    marker_genes
        Genes of the expression modality to test as markers of each subgroup against
        the rest (moderated t); empty (default): the clustering ``genes`` when the
        clustering reads expression with a gene list, otherwise no markers.
    markers
        Set False to skip markers.
    alpha
        1 - confidence level of curves and hazard ratios.
    """

    name = "subgroups.characterise"
    n_clusters: int = 3
    init: tuple[tuple[float, ...], ...] = ()
    time: str
    event: str
    time_grid: tuple[float, ...] | None = None
    ties: str = "efron"
    cox_covariates: tuple[str, ...] = ()
    crosstab: tuple[str, ...] = ()
    crosstab_levels: tuple[tuple[Any, ...], ...] = ()
    suppress_below: int = 5
    marker_genes: tuple[str, ...] = ()
    markers: bool = True
    alpha: float = 0.05

    def __post_init__(self) -> None:
        self._check_cluster()
        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, int) or k < 2:
            raise ValidationError("n_clusters must be an integer >= 2")
        object.__setattr__(self, "cox_covariates", _names(self.cox_covariates, "cox_covariates"))
        object.__setattr__(self, "crosstab", _names(self.crosstab, "crosstab"))
        if self.time_grid is None:
            raise ValidationError("time_grid is required (the public grid of the survival parts)")
        object.__setattr__(self, "time_grid", grid_param(self.time_grid))
        levels = tuple(self.crosstab_levels)
        if len(levels) != len(self.crosstab):
            raise ValidationError("crosstab_levels must give one tuple of categories per crosstab")
        object.__setattr__(
            self,
            "crosstab_levels",
            tuple(check_categories(v, f"crosstab_levels[{i}]") for i, v in enumerate(levels)),
        )
        taken = self._derived()
        clash = sorted(taken & {*self.cox_covariates, *self.crosstab, self.time, self.event})
        if clash:
            raise ValidationError(f"column(s) {clash} are reserved for the subgroup labels")
        genes = tuple(self.marker_genes)
        if genes and not self.markers:
            raise ValidationError("marker_genes are given but markers=False")
        object.__setattr__(self, "marker_genes", genes)
        # build every part now: their own checks (grid, ties, gene list...) run at once
        self._parts  # noqa: B018

    # ------------------------------------------------------------------ the parts

    @property
    def _genes(self) -> tuple[str, ...]:
        if not self.markers:
            return ()
        if self.marker_genes:
            return self.marker_genes
        return self.genes if self.expression else ()

    @cached_property
    def _kmeans(self) -> KMeans:
        params = {f.name: getattr(self, f.name) for f in dataclasses.fields(ClusterParams)}
        return KMeans(**params, n_clusters=self.n_clusters, init=self.init)

    @cached_property
    def _parts(self) -> dict[str, Algorithm]:
        """The characterising parts by step prefix, in the order they run."""
        k = self.n_clusters
        levels = tuple(range(k))
        surv: dict[str, Any] = {"time": self.time, "event": self.event, "time_grid": self.time_grid}
        parts: dict[str, Algorithm] = {
            "km": KaplanMeier(**surv, group=LABEL, groups=levels, alpha=self.alpha),
            "logrank": LogRank(**surv, group=LABEL, groups=levels),
            "cox": CoxPH(
                **surv,
                covariates=(*(indicator(j) for j in range(1, k)), *self.cox_covariates),
                ties=self.ties,
                alpha=self.alpha,
            ),
        }
        for i, (col, cats) in enumerate(zip(self.crosstab, self.crosstab_levels, strict=True)):
            parts[f"crosstab{i}"] = CrossTab(
                row=LABEL,
                column=col,
                row_categories=levels,
                column_categories=cats,
                suppress_below=self.suppress_below,
            )
        genes = self._genes
        if genes:
            transform = self.transform if self.expression else None
            for j in range(k):
                parts[f"markers{j}"] = ModeratedT(
                    genes=genes, covariates=(indicator(j),), transform=transform
                )
        return parts

    def _derived(self) -> set[str]:
        return {LABEL, *(indicator(j) for j in range(self.n_clusters))}

    # ------------------------------------------------------------------ hub side

    def coordinate(self) -> Coordination:
        km, rounds = yield from _prefixed(self._kmeans.coordinate(), "kmeans", {})
        public = {_PUBLIC + key: v for key, v in space_public(km.pca, km.space).items()}
        public[_PUBLIC + "centres"] = km.centres
        results: dict[str, Any] = {}
        for prefix, part in self._parts.items():
            results[prefix], r = yield from _prefixed(part.coordinate(), prefix, public)
            rounds += r
        logrank: LogRankResult = results["logrank"]
        return SubgroupsResult(
            kmeans=km,
            sizes=np.asarray(logrank.n, dtype=np.float64),
            kaplan_meier=results["km"],
            logrank=logrank,
            cox=results["cox"],
            crosstabs={c: results[f"crosstab{i}"] for i, c in enumerate(self.crosstab)},
            markers={
                str(j): results[f"markers{j}"]
                for j in range(self.n_clusters)
                if f"markers{j}" in results
            },
            rounds=rounds,
        )

    # ------------------------------------------------------------------ site side

    def _split(self, step: str) -> tuple[str, str, Algorithm]:
        prefix, sep, sub = step.partition(":")
        part = self._kmeans if prefix == "kmeans" else self._parts.get(prefix)
        if not sep or part is None:
            raise AlgorithmError(f"unknown step {step!r} for {self.name}")
        return prefix, sub, part

    def requirements(self, step: str) -> Requirements | None:
        """The part's declaration, with the site-derived subgroup columns left out."""
        prefix, sub, part = self._split(step)
        req = part.requirements(sub)
        if prefix == "kmeans" or req is None:
            return req
        derived = self._derived()
        cols = tuple(c for c in req.columns if c not in derived) + self.columns
        return Requirements(n_parameters=req.n_parameters, columns=tuple(dict.fromkeys(cols)))

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        prefix, sub, part = self._split(step)
        if prefix == "kmeans":
            return part.local(sub, public, data)
        view, rows = self._labelled(public, data)
        own = {key: v for key, v in public.items() if not key.startswith(_PUBLIC)}
        c = part.local(sub, own, view)
        if rows is None:
            return c
        used = rows if c.rows is None else rows[_positions(c.rows, view.n_rows)]
        return dataclasses.replace(c, rows=used)

    def _labelled(
        self, public: Mapping[str, np.ndarray], data: Dataset
    ) -> tuple[Dataset, np.ndarray | None]:
        """The site's clustered patients with their subgroup columns (cached per round set)."""
        keys = ("shift", "scale", "rotation", "centres")
        h = hashlib.sha256()
        for key in keys:
            if _PUBLIC + key in public:
                h.update(key.encode() + np.ascontiguousarray(public[_PUBLIC + key]).tobytes())
        digest = h.hexdigest()
        cached = self.__dict__.get("_view_cache")
        if cached is not None and cached[0] is data.frame and cached[1] == digest:
            return cached[2], cached[3]
        if _PUBLIC + "centres" not in public:
            raise AlgorithmError("a characterising round must carry the subgroup centres")
        space = {key: public[_PUBLIC + key] for key in keys[:3] if _PUBLIC + key in public}
        centres = np.asarray(public[_PUBLIC + "centres"])
        m = self._kmeans.read_features(data)
        k = centres.shape[0]
        labels = _labels(to_space(m.x, space), centres[None], np.ones((1, k)))[0]
        frame = data.frame if m.rows is None else data.frame.iloc[m.rows]
        clash = sorted(self._derived() & set(frame.columns))
        if clash:
            raise SchemaError(f"column(s) {clash} are reserved for the subgroup labels")
        frame = frame.reset_index(drop=True)
        frame[LABEL] = labels
        for j in range(k):
            frame[indicator(j)] = (labels == j).astype(np.float64)
        expr = data.expression
        if expr is not None and self._genes and data.id_column in frame.columns:
            expr = expr.loc[expr.index.isin(frame[data.id_column].to_numpy())]
        else:
            expr = None
        view = Dataset(
            frame=frame, name=data.name, schema=data.schema, site=data.site, expression=expr
        )
        rows = None if m.rows is None else np.asarray(m.rows)
        object.__setattr__(self, "_view_cache", (data.frame, digest, view, rows))
        return view, rows


def _positions(rows: Any, n: int) -> np.ndarray:
    rows = np.asarray(rows)
    if rows.dtype == bool:
        if rows.size != n:
            raise AlgorithmError("a part's row mask does not match the subgroup view")
        return np.flatnonzero(rows)
    return rows.astype(np.int64)

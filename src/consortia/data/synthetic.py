"""A synthetic multimodal oncology cohort with planted, known effects.

:func:`synthetic_cohort` draws a colorectal-cancer-like cohort spread over several
sites.  Every site holds, per patient:

* a **clinical table**: ``pid``, ``site``, ``age``, ``sex``, ``stage`` (I-IV), ``grade``
  (G1-G3), ``msi`` (MSS / MSI-H), treatment ``arm`` (control / treatment), the 0/1
  indicator columns of :data:`COVARIATES` ready for models, and the survival outcome
  ``time`` (integer days) and ``event`` (1 = death, 0 = censored);
* a **gene-expression** matrix of raw counts (negative binomial) with planted
  differentially expressed genes (MSI-H vs MSS) and planted prognostic genes;
* a **bag of histology tile embeddings** (8-32 tiles x 64 dims by default) whose mean
  is shifted in MSI-H patients.

The generating model (all effects are returned in :class:`SyntheticTruth`):

* Stage: site ``k`` of ``K`` draws stages from ``base * exp(s_k * (-1.5, -0.5, 0.5, 1.5))``
  (normalised) with ``base = (0.2, 0.35, 0.3, 0.15)`` and ``s_k`` evenly spaced in
  ``[-case_mix, case_mix]``: the first site sees earlier stages, the last later ones.
* MSI-H: probability ``msi_prevalence * (1.0, 1.4, 0.8, 0.3)[stage]``; grade G3 with
  probability ``0.15 + 0.35 * msi``, else G1 (30 %) / G2 (70 %); female 50 %; age
  ``N(65, 11)`` clipped to [25, 95]; arm randomised 1:1.
* Expression, on the log2 scale: ``log2 mu[i, g] = m[g] + batch[site, g] + lfc[g] * msi[i]
  + z[i, g]`` where ``m[g] ~ N(7, 2)`` clipped to [1, 14], ``batch ~ N(0, batch_sd)``
  per site and gene, ``lfc`` is the planted log2 fold change of the DE genes (0
  elsewhere) and ``z[i, g] ~ N(0, 1)`` is the latent expression of the prognostic genes
  (0 elsewhere).  Counts are ``NB(mean = s[i] * mu, dispersion = alpha[g])`` with
  ``alpha[g] = (0.1 + 1 / mu_g) * LogNormal(0, 0.3)`` and per-patient size factors
  ``s[i] = depth[site] * LogNormal(0, 0.25)``, ``depth ~ LogNormal(0, 0.2)``.
* Survival: proportional hazards with Weibull baseline (shape 1.3, scale 3000 days),
  linear predictor ``sum(log_hr[c] * x[c])`` over :data:`COVARIATES` (age centred at
  65) plus ``sum(prognostic_log_hr[g] * z[i, g])`` (per log2 unit of latent
  expression).  Censoring: administrative at a follow-up uniform in [730, 2920] days
  (staggered entry) and random loss to follow-up (exponential, mean 5475 days).
  Times are ``ceil`` of the continuous time, in integer days (at least 1).
* Tiles: ``tile = centre + stain[site] + patient + msi[i] * msi_tile_shift + noise``
  with ``centre ~ N(0, 1)``, ``stain ~ N(0, 0.1)``, ``patient ~ N(0, 0.3)`` per
  dimension, ``noise ~ N(0, 1)``; ``msi_tile_shift`` is a random direction of length
  ``msi_tile_effect``.
* Subtypes (only when ``n_subtypes > 0``; otherwise nothing below is drawn and the
  cohort is the one earlier releases generated for the same arguments): every patient
  belongs to one of ``n_subtypes`` planted molecular subtypes, drawn uniformly at every
  site.  Subtype ``j`` raises the log2 mean of its own ``subtype_genes`` signature genes
  (disjoint from the DE and prognostic genes and from the other subtypes') by
  ``subtype_log2fc``, and multiplies the hazard by ``exp(subtype_log_hr[j])`` with
  ``subtype_log_hr`` evenly spaced in ``[-0.4, 0.4]``.  The labels are returned in
  :attr:`SyntheticTruth.subtype` only (the clinical table does not carry them).  The
  subtype draws use their own random streams, so the other draws are unchanged.

20,000 genes x 1,000 patients generate in about 2 s on one core.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from consortia.data._synthetic_draws import (
    _AGE_CENTRE,
    _STAGE_BASE,
    _STAGE_TILT,
    _WEIBULL_SCALE,
    _WEIBULL_SHAPE,
    GRADES,
    STAGES,
    _clinical,
    _expression,
    _survival,
    _tiles,
)
from consortia.data.dataset import Dataset
from consortia.data.schema import Schema
from consortia.errors import ValidationError

__all__ = [
    "COVARIATES",
    "DEFAULT_LOG_HR",
    "SyntheticCohort",
    "SyntheticTruth",
    "synthetic_cohort",
    "synthetic_schema",
]

COVARIATES = (
    "age",
    "female",
    "stage_II",
    "stage_III",
    "stage_IV",
    "grade_3",
    "msi_high",
    "treated",
)
"""Numeric model columns of the clinical table (age in years, the others 0/1)."""

DEFAULT_LOG_HR = MappingProxyType(
    {
        "age": 0.02,  # per year
        "female": -0.1,
        "stage_II": 0.5,
        "stage_III": 1.0,
        "stage_IV": 1.9,
        "grade_3": 0.2,
        "msi_high": -0.4,
        "treated": -0.35,
    }
)
"""True log hazard ratios of the clinical covariates (age per year, centred at 65)."""


def synthetic_schema() -> Schema:
    """The schema of the synthetic clinical table."""
    return Schema.from_mapping(
        {
            "id": "pid",
            "time": {"name": "time", "type": "int"},
            "event": "event",
            "group": {"name": "arm", "type": "category", "levels": ["control", "treatment"]},
            "covariates": {
                "age": "float",
                "sex": {"type": "category", "levels": ["F", "M"]},
                "stage": {"type": "category", "levels": list(STAGES)},
                "grade": {"type": "category", "levels": list(GRADES)},
                "msi": {"type": "category", "levels": ["MSS", "MSI-H"]},
                **{c: "int" for c in COVARIATES if c != "age"},
            },
            "other": {"site": "str"},
        }
    )


@dataclass(frozen=True)
class SyntheticTruth:
    """The planted effects of a synthetic cohort.

    Attributes
    ----------
    log_hr
        Covariate column -> true log hazard ratio (``age`` per year, indicators vs 0).
    prognostic_genes
        Names of the genes whose latent expression drives survival.
    prognostic_log_hr
        Prognostic gene -> true log hazard ratio per log2 unit of latent expression
        (the latent value has standard deviation 1 in log2 units).
    de_genes
        Names of the genes differentially expressed between MSI-H and MSS.
    de_log2fc
        DE gene -> true log2 fold change of MSI-H over MSS.
    msi_tile_shift
        Shift of the mean tile embedding in MSI-H patients, shape ``(tile_dim,)``.
    stage_probs
        Site -> its stage distribution (I, II, III, IV): the case mix.
    batch_log2_shift
        Site -> per-gene log2 batch shift of its expression, shape ``(n_genes,)``.
    msi_prevalence
        Baseline MSI-H probability (scaled by stage, see the module docs).
    prognostic_latent
        The latent log2 expression ``z`` of the prognostic genes (patients x genes,
        indexed by pid): the survival model uses ``z``; the counts measure it with noise,
        so a fit on observed expression is attenuated.
    weibull_shape, weibull_scale
        The baseline hazard: ``H0(t) = (t / scale) ** shape``, t in days.
    subtype
        The planted subtype (0 .. ``n_subtypes - 1``) of every patient, indexed by pid;
        ``None`` when the cohort has no planted subtypes.
    subtype_genes
        Subtype -> the names of its signature genes (raised by ``subtype_log2fc``).
    subtype_log_hr
        The true log hazard ratio of each subtype (empty without subtypes).
    """

    log_hr: dict[str, float]
    prognostic_genes: tuple[str, ...]
    prognostic_log_hr: dict[str, float]
    de_genes: tuple[str, ...]
    de_log2fc: dict[str, float]
    msi_tile_shift: np.ndarray
    stage_probs: dict[str, tuple[float, ...]]
    batch_log2_shift: dict[str, np.ndarray] = field(repr=False)
    msi_prevalence: float
    prognostic_latent: pd.DataFrame = field(repr=False)
    weibull_shape: float = _WEIBULL_SHAPE
    weibull_scale: float = _WEIBULL_SCALE
    subtype: pd.Series | None = field(default=None, repr=False)
    subtype_genes: dict[int, tuple[str, ...]] = field(default_factory=dict)
    subtype_log_hr: tuple[float, ...] = ()


@dataclass(frozen=True)
class SyntheticCohort:
    """A generated cohort: per-site datasets and the planted truth.

    Attributes
    ----------
    datasets
        Site name -> its :class:`Dataset` (clinical frame, ``expression``, ``tiles``).
    truth
        The planted effects (:class:`SyntheticTruth`).
    schema
        The clinical table's :class:`Schema`.
    genes
        All gene names, in column order.
    covariates
        The numeric model columns (:data:`COVARIATES`).
    """

    datasets: dict[str, Dataset]
    truth: SyntheticTruth
    schema: Schema
    genes: tuple[str, ...]
    covariates: tuple[str, ...] = COVARIATES

    def sites(self) -> dict[str, Dataset]:
        """Site name -> that site's :class:`Dataset` (a new dict; the datasets are shared)."""
        return dict(self.datasets)

    def pooled(self) -> Dataset:
        """All sites' patients in one :class:`Dataset` (site order), modalities included."""
        parts = list(self.datasets.values())
        frame = pd.concat([d.frame for d in parts], ignore_index=True)
        expr = None
        if all(d.expression is not None for d in parts):
            expr = pd.concat([d.expression for d in parts])
        tiles = None
        site_tiles = [d.tiles for d in parts]
        if all(t is not None for t in site_tiles):
            tiles = {k: v for t in site_tiles if t is not None for k, v in t.items()}
        return Dataset(
            frame=frame, name="synthetic", schema=self.schema, expression=expr, tiles=tiles
        )


def _check_params(
    n_sites: int,
    patients_per_site: int | Sequence[int],
    n_genes: int,
    n_de_genes: int,
    n_prognostic_genes: int,
    tile_dim: int,
    tiles_per_patient: tuple[int, int],
    site_names: Sequence[str] | None,
) -> tuple[list[int], list[str]]:
    def pos_int(name: str, v: Any, low: int = 1) -> None:
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
            raise ValidationError(f"{name} must be an integer >= {low}")

    pos_int("n_sites", n_sites)
    if isinstance(patients_per_site, int | np.integer) and not isinstance(patients_per_site, bool):
        sizes = [int(patients_per_site)] * n_sites
    elif isinstance(patients_per_site, Sequence):
        sizes = list(patients_per_site)
        if len(sizes) != n_sites:
            raise ValidationError("patients_per_site must be an int or one size per site")
    for s in sizes:
        pos_int("patients_per_site", s, 2)
    pos_int("n_de_genes", n_de_genes, 0)
    pos_int("n_prognostic_genes", n_prognostic_genes, 0)
    pos_int("n_genes", n_genes, 1)
    if n_de_genes + n_prognostic_genes > n_genes // 2:
        raise ValidationError("n_de_genes + n_prognostic_genes must be at most n_genes / 2")
    pos_int("tile_dim", tile_dim)
    lo, hi = tiles_per_patient
    pos_int("tiles_per_patient", lo)
    pos_int("tiles_per_patient", hi, lo)
    names = [f"site{k + 1}" for k in range(n_sites)] if site_names is None else list(site_names)
    if len(names) != n_sites or len(set(names)) != n_sites:
        raise ValidationError("site_names must hold n_sites distinct names")
    return sizes, [str(n) for n in names]


_SUB_KEY = 1_000_000  # spawn keys of the subtype streams: apart from the cohort's own


def _check_subtypes(
    n_subtypes: Any, per: Any, log2fc: Any, n_genes: int, n_de: int, n_prog: int
) -> None:
    for name, v, low in (("n_subtypes", n_subtypes, 0), ("subtype_genes", per, 1)):
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < low:
            raise ValidationError(f"{name} must be an integer >= {low}")
    if n_subtypes == 1:
        raise ValidationError("n_subtypes must be 0 (none) or at least 2")
    if n_subtypes and n_de + n_prog + n_subtypes * per > n_genes:
        raise ValidationError(
            "n_de_genes + n_prognostic_genes + n_subtypes * subtype_genes must be at most n_genes"
        )
    if not np.isfinite(log2fc):
        raise ValidationError("subtype_log2fc must be a finite number")


def _subtype_genes(
    seed: int, n_subtypes: int, per: int, n_genes: int, taken: np.ndarray
) -> tuple[list[np.ndarray], np.ndarray]:
    """Each subtype's signature genes (disjoint, outside ``taken``) and its log HR."""
    if not n_subtypes:
        return [], np.zeros(0)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_SUB_KEY,)))
    free = rng.permutation(np.setdiff1d(np.arange(n_genes), taken))
    genes = [np.sort(free[j * per : (j + 1) * per]) for j in range(n_subtypes)]
    return genes, np.linspace(-0.4, 0.4, n_subtypes)


def synthetic_cohort(
    *,
    n_sites: int = 3,
    patients_per_site: int | Sequence[int] = 200,
    n_genes: int = 500,
    n_de_genes: int = 20,
    n_prognostic_genes: int = 5,
    tile_dim: int = 64,
    tiles_per_patient: tuple[int, int] = (8, 32),
    msi_prevalence: float = 0.15,
    msi_tile_effect: float = 1.5,
    case_mix: float = 0.6,
    batch_sd: float = 0.3,
    log_hr: dict[str, float] | None = None,
    expression: bool = True,
    tiles: bool = True,
    site_names: Sequence[str] | None = None,
    seed: int = 0,
    n_subtypes: int = 0,
    subtype_genes: int = 20,
    subtype_log2fc: float = 1.5,
) -> SyntheticCohort:
    """Generate a seeded multimodal oncology cohort with planted effects.

    Parameters
    ----------
    n_sites
        Number of sites.
    patients_per_site
        Patients at every site (int) or one count per site.
    n_genes
        Genes in the expression matrix (a few hundred to 20,000 or more).
    n_de_genes
        Genes differentially expressed between MSI-H and MSS (half up, half down;
        ``|log2 FC|`` uniform in [1, 2]).
    n_prognostic_genes
        Genes whose latent expression drives survival (``|log HR|`` uniform in
        [0.3, 0.6] per log2 unit, random sign).
    tile_dim
        Dimension of a tile embedding.
    tiles_per_patient
        Inclusive range of the number of tiles per patient.
    msi_prevalence
        Baseline probability of MSI-H (scaled by stage).
    msi_tile_effect
        Length of the MSI-H shift of the mean tile embedding.
    case_mix
        Strength of the between-site difference in stage distribution (0: none).
    batch_sd
        Standard deviation of the per-site, per-gene log2 batch shift.
    log_hr
        Overrides of :data:`DEFAULT_LOG_HR` (keys from :data:`COVARIATES`).
    expression, tiles
        Whether to generate these modalities (the clinical table is always made).
    site_names
        Names of the sites (default ``site1``, ``site2``, ...).
    seed
        Seed of the generator: the same arguments give the same cohort.
    n_subtypes
        Number of planted molecular subtypes (0: none, the default; see the module
        docs).  The truth is :attr:`SyntheticTruth.subtype`.
    subtype_genes
        Signature genes per subtype.
    subtype_log2fc
        Log2 fold change of a subtype's signature genes in its patients.

    Returns
    -------
    SyntheticCohort

    Examples
    --------
    >>> cohort = synthetic_cohort(n_sites=3, patients_per_site=100, n_genes=300, seed=1)
    >>> sorted(cohort.sites())
    ['site1', 'site2', 'site3']
    >>> cohort.pooled().n_rows
    300
    """
    sizes, names = _check_params(
        n_sites,
        patients_per_site,
        n_genes,
        n_de_genes,
        n_prognostic_genes,
        tile_dim,
        tiles_per_patient,
        site_names,
    )
    if not 0.0 <= msi_prevalence <= 0.7:
        raise ValidationError("msi_prevalence must be in [0, 0.7]")
    for pname, v in (("msi_tile_effect", msi_tile_effect), ("case_mix", case_mix)):
        if not np.isfinite(v) or v < 0:
            raise ValidationError(f"{pname} must be a finite number >= 0")
    if not np.isfinite(batch_sd) or batch_sd < 0:
        raise ValidationError("batch_sd must be a finite number >= 0")
    _check_subtypes(
        n_subtypes, subtype_genes, subtype_log2fc, n_genes, n_de_genes, n_prognostic_genes
    )
    hr = dict(DEFAULT_LOG_HR)
    if log_hr is not None:
        unknown = sorted(set(log_hr) - set(COVARIATES))
        if unknown:
            raise ValidationError(f"log_hr has unknown covariate(s) {unknown}; use {COVARIATES}")
        hr.update({k: float(v) for k, v in log_hr.items()})

    # Independent streams: the clinical table does not depend on n_genes or the modalities.
    streams = np.random.SeedSequence(seed).spawn(3 + 3 * n_sites)
    rng_hr, rng_genes, rng_tiles = (np.random.default_rng(s) for s in streams[:3])
    width = max(5, len(str(n_genes)))
    genes = tuple(f"G{j + 1:0{width}d}" for j in range(n_genes))
    # --- global truth ---------------------------------------------------------------------
    prog_hr = rng_hr.choice([-1.0, 1.0], n_prognostic_genes) * rng_hr.uniform(
        0.3, 0.6, n_prognostic_genes
    )
    base_log2 = np.clip(rng_genes.normal(7.0, 2.0, n_genes), 1.0, 14.0)
    alpha = (0.1 + 1.0 / np.exp2(base_log2)) * rng_genes.lognormal(0.0, 0.3, n_genes)
    eligible = np.flatnonzero(base_log2 >= 6.0)
    if len(eligible) < n_de_genes + n_prognostic_genes:
        eligible = np.argsort(-base_log2)[: n_de_genes + n_prognostic_genes]
    chosen = rng_genes.permutation(eligible)[: n_de_genes + n_prognostic_genes]
    de_idx = np.sort(chosen[:n_de_genes])
    prog_idx = np.sort(chosen[n_de_genes:])
    de_sign = np.where(np.arange(n_de_genes) % 2 == 0, 1.0, -1.0)
    de_lfc = rng_genes.permutation(de_sign) * rng_genes.uniform(1.0, 2.0, n_de_genes)
    lfc = np.zeros(n_genes)
    lfc[de_idx] = de_lfc
    direction = rng_tiles.normal(size=tile_dim)
    msi_shift = msi_tile_effect * direction / np.linalg.norm(direction)
    centre = rng_tiles.normal(0.0, 1.0, tile_dim)
    tilts = np.linspace(-case_mix, case_mix, n_sites) if n_sites > 1 else np.zeros(1)
    sub_genes, sub_hr = _subtype_genes(seed, n_subtypes, subtype_genes, n_genes, chosen)

    schema = synthetic_schema()
    datasets: dict[str, Dataset] = {}
    stage_probs: dict[str, tuple[float, ...]] = {}
    batches: dict[str, np.ndarray] = {}
    latent: list[pd.DataFrame] = []
    subtypes: list[pd.Series] = []
    for k, (site, n) in enumerate(zip(names, sizes)):
        rng_c, rng_e, rng_t = (np.random.default_rng(s) for s in streams[3 + 3 * k : 6 + 3 * k])
        p_stage = _STAGE_BASE * np.exp(tilts[k] * _STAGE_TILT)
        p_stage /= p_stage.sum()
        stage_probs[site] = tuple(float(p) for p in p_stage)
        clin, msi, z = _clinical(rng_c, site, n, p_stage, msi_prevalence, n_prognostic_genes)
        eta = sum(hr[c] * clin[c].to_numpy(float) for c in COVARIATES if c != "age")
        eta = eta + hr["age"] * (clin["age"].to_numpy() - _AGE_CENTRE) + z @ prog_hr
        sub_log2 = None
        if n_subtypes:
            rng_s = np.random.default_rng(
                np.random.SeedSequence(seed, spawn_key=(_SUB_KEY + 1 + k,))
            )
            labels = rng_s.integers(0, n_subtypes, n)
            eta = eta + sub_hr[labels]
            subtypes.append(pd.Series(labels, index=pd.Index(clin["pid"].to_numpy(), name="pid")))
            sub_log2 = np.zeros((n, n_genes))
            for j, idx in enumerate(sub_genes):
                sub_log2[np.ix_(labels == j, idx)] = subtype_log2fc
        clin["time"], clin["event"] = _survival(rng_c, eta)
        frame = schema.validate(clin)
        latent.append(pd.DataFrame(z, index=pd.Index(frame["pid"].to_numpy(), name="pid")))
        batch = rng_e.normal(0.0, batch_sd, n_genes)
        batches[site] = batch
        expr = None
        if expression:
            expr = _expression(
                rng_e, frame["pid"], base_log2, batch, lfc, msi, z, prog_idx, alpha, sub_log2
            )
            expr.columns = pd.Index(genes)
        tile_map = None
        if tiles:
            tile_map = _tiles(
                rng_t, frame["pid"], msi, centre, msi_shift, tiles_per_patient, tile_dim
            )
        datasets[site] = Dataset(
            frame=frame,
            name="synthetic",
            schema=schema,
            site=site,
            expression=expr,
            tiles=tile_map,
        )
    truth = SyntheticTruth(
        log_hr=hr,
        prognostic_genes=tuple(genes[j] for j in prog_idx),
        prognostic_log_hr={genes[j]: float(b) for j, b in zip(prog_idx, prog_hr)},
        de_genes=tuple(genes[j] for j in de_idx),
        de_log2fc={genes[j]: float(lfc[j]) for j in de_idx},
        msi_tile_shift=msi_shift,
        stage_probs=stage_probs,
        batch_log2_shift=batches,
        msi_prevalence=float(msi_prevalence),
        prognostic_latent=pd.concat(latent).set_axis([genes[j] for j in prog_idx], axis=1),
        subtype=pd.concat(subtypes).rename("subtype") if n_subtypes else None,
        subtype_genes={j: tuple(genes[g] for g in idx) for j, idx in enumerate(sub_genes)},
        subtype_log_hr=tuple(float(b) for b in sub_hr),
    )
    return SyntheticCohort(datasets=datasets, truth=truth, schema=schema, genes=genes)

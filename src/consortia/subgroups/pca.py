"""Federated principal component analysis from secure sums.

Two paths, the same first round:

``pca_mean``
    Every site releases its row count and its column sums (two-word, see
    :mod:`consortia.precision`): the pooled mean.

Exact path (``method="exact"``, or ``"auto"`` with at most ``max_exact_features``
features and at most 0.3 features per patient at the average site): one more round.

``pca_gram``
    Every site releases ``sum_i (x_i - m)(x_i - m)^T / n`` over its rows, with ``m``
    and ``n`` the pooled mean and row count (public after the first round): the
    summed, centred Gram (covariance) matrix, ``p x p``.  The hub scales it to a
    correlation matrix when ``standardize`` (pooled standard deviations from its
    diagonal) and takes its eigendecomposition: the components equal those of
    :class:`sklearn.decomposition.PCA` on the pooled (standardised) data to about
    1e-12 relative error.  Released: the ``p (p + 1) / 2`` distinct entries of the
    pooled covariance, nothing per site.  The step declares ``p`` model parameters
    (the dimension of the covariance it estimates), so a site whose policy allows
    fewer than ``p`` parameters for its cohort (``max_params_per_sample``) refuses
    it before computing anything: use the iterative path then.

Iterative path (``method="iterative"``, or ``"auto"`` otherwise):
randomised block Krylov subspace iteration (block Lanczos with full
re-orthogonalisation and thick restarts); no party ever forms a ``p x p`` matrix.

``pca_scale``
    Every site releases ``sum_i (x_i - m)^2 / n`` (two-word): pooled variances (only
    when ``standardize``).
``pca_iterate`` (repeated)
    The hub broadcasts an orthonormal ``p x l`` block ``V`` (``l = n_components +
    oversample``; the first a seeded Gaussian start); every site releases
    ``Z_k^T (Z_k V) / n`` for its standardised rows ``Z_k``; the sum is ``C V`` with
    ``C`` the pooled covariance.  The hub appends ``V`` to its Krylov basis ``K``,
    takes the Rayleigh-Ritz pairs of ``K^T C K`` (known from the released ``C V``
    blocks) and makes the next block from ``C V`` orthogonalised against ``K``.  It
    stops when the largest principal angle between the spans of the leading
    ``n_components`` Ritz vectors of two successive rounds is at most ``tol`` (or when
    ``K`` is invariant under ``C``: the Ritz pairs are then exact).  Krylov
    acceleration converges in far fewer rounds than plain subspace (power)
    iteration when the eigenvalues beyond the kept ones are close to them.
    Released per round: ``p x l`` sums over all patients.  The step
    declares ``l`` parameters (the rank of the subspace it estimates).

Sites release only sums, never a row, and the hub never receives a patient's
coordinates: :func:`project` runs at a site, on its own patients.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg as sla

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ConvergenceError, ValidationError
from consortia.precision import join, split
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
from consortia.subgroups._features import FeatureParams, SiteMatrix
from consortia.subgroups._linalg import flip_signs, orthonormal, principal_angles

__all__ = ["PCA", "PCAResult", "project"]

METHODS = ("auto", "exact", "iterative")


@dataclass(frozen=True)
class PCAResult(Result):
    """Principal components of the pooled data, computed from secure sums.

    Attributes
    ----------
    features
        Feature names (columns or genes), in the order of ``mean`` and of each component;
        empty when the study used every gene of the sites' expression (sorted by name).
    mean, scale
        Pooled mean and the scale each centred feature was divided by (the pooled
        standard deviation, ddof=0, when standardised, else 1; 1 for a constant feature).
    components
        ``n_components x p``: unit principal axes, scikit-learn's sign convention.
    explained_variance
        Variance along each component (ddof=1), as ``PCA.explained_variance_``.
    explained_variance_ratio
        Its share of the total variance, as ``PCA.explained_variance_ratio_``.
    total_variance
        Sum of the (standardised) features' variances (ddof=1).
    n
        Patients pooled over the sites.
    method
        ``"exact"`` or ``"iterative"``.
    rounds
        Federated rounds used.
    iterations
        Subspace iterations (0 on the exact path).
    max_angle_change
        Iterative path: the largest principal angle (radians) between the leading
        subspaces of the last two iterations (the convergence criterion); NaN on the
        exact path.
    expression, transform, standardize, dropna
        How the sites read the features (what :func:`project` repeats).
    """

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    total_variance: float
    n: int
    method: str
    rounds: int
    iterations: int
    max_angle_change: float
    expression: bool
    transform: str
    standardize: bool
    dropna: bool

    @property
    def n_components(self) -> int:
        """Number of components kept."""
        return int(self.components.shape[0])

    @property
    def summary(self) -> pd.DataFrame:
        """One row per component: explained variance, its ratio and the cumulative ratio."""
        return pd.DataFrame(
            {
                "explained_variance": self.explained_variance,
                "explained_variance_ratio": self.explained_variance_ratio,
                "cumulative_ratio": np.cumsum(self.explained_variance_ratio),
            },
            index=pd.Index([f"PC{j + 1}" for j in range(self.n_components)], name="component"),
        )

    def loadings(self) -> pd.DataFrame:
        """Components as a features x components table."""
        names = self.features or tuple(f"feature{j + 1}" for j in range(self.mean.size))
        return pd.DataFrame(
            self.components.T,
            index=pd.Index(names, name="feature"),
            columns=[f"PC{j + 1}" for j in range(self.n_components)],
        )


def _feature_reader(result: PCAResult) -> FeatureParams:
    if result.expression:
        return FeatureParams(expression=True, genes=result.features, transform=result.transform)
    return FeatureParams(columns=result.features, dropna=result.dropna)


def project(result: PCAResult, data: Dataset) -> pd.DataFrame:
    """Coordinates of a site's own patients on the public components (a local helper).

    Runs at the site on its private data; nothing is released.  The site reads its
    features as the study did, centres and scales them with the pooled ``mean`` and
    ``scale`` and multiplies by the components.

    Parameters
    ----------
    result
        A :class:`PCAResult` (public).
    data
        The site's dataset (a :class:`~consortia.data.Dataset` or a data frame).

    Returns
    -------
    pandas.DataFrame
        Patients (patient id, or row position without an id column) x ``PC1..PCq``.
    """
    if not isinstance(data, Dataset):
        data = Dataset(frame=data)
    m = _feature_reader(result).read_features(data)
    scores = ((m.x - result.mean) / result.scale) @ result.components.T
    cols = [f"PC{j + 1}" for j in range(result.n_components)]
    return pd.DataFrame(scores, index=pd.Index(m.index, name="patient"), columns=cols)


# --------------------------------------------------------------------------- hub side


def pca_rounds(
    *,
    n_components: int | None,
    method: str,
    standardize: bool,
    oversample: int,
    tol: float,
    max_iter: int,
    seed: int,
    max_exact_features: int,
) -> Generator[Round, Sums, tuple[dict[str, Any], int]]:
    """Yield the PCA rounds; return the result's fields and the number of rounds.

    ``n_components=None`` keeps every component (exact path only).
    """
    sums = yield Round("pca_mean")
    n = int(round(sums["n"][0]))
    sums_sites = float(sums["sites"][0])
    if n < 2:
        raise AlgorithmError("PCA needs at least 2 patients over the sites")
    mean = join(sums, "total") / n
    p = mean.size
    q = min(p, n - 1) if n_components is None else n_components
    if q > min(p, n - 1):
        raise AlgorithmError(
            f"n_components ({q}) must be at most min(features, patients - 1) = {min(p, n - 1)}"
        )
    # "auto": exact while p <= 0.3 x the average site's patients (below the default
    # policy's max_params_per_sample of 0.33 for the p parameters the step declares)
    per_site = n / max(sums_sites, 1.0)
    exact = method == "exact" or (
        method == "auto" and p <= max_exact_features and p <= 0.3 * per_site
    )
    if n_components is None and not exact:
        raise AlgorithmError("every component needs the exact path: set n_components")
    rounds = 1
    if exact:
        sums = yield Round("pca_gram", {"mean": mean, "inv_n": [1.0 / n]})
        rounds += 1
        cov = join(sums, "gram")  # sum (x - m)(x - m)^T / n
        cov = (cov + cov.T) / 2
        scale = _scale(np.diag(cov).copy(), mean, standardize)
        c = cov / np.outer(scale, scale) * (n / (n - 1))  # ddof=1
        evals, evecs = np.linalg.eigh(c)
        order = np.argsort(evals)[::-1][:q]
        lam, vecs = np.maximum(evals[order], 0.0), evecs[:, order]
        total = float(np.trace(c))
        iterations, change = 0, float("nan")
    else:
        if standardize:
            sums = yield Round("pca_scale", {"mean": mean, "inv_n": [1.0 / n]})
            rounds += 1
            scale = _scale(join(sums, "sq"), mean, True)
        else:
            scale = np.ones(p)
        lam, vecs, total, iterations, change = yield from _iterate(
            mean, scale, n, q, oversample, tol, max_iter, seed
        )
        rounds += iterations
    components = flip_signs(vecs.T)
    fields = {
        "mean": mean,
        "scale": scale,
        "components": components,
        "explained_variance": lam,
        "explained_variance_ratio": lam / total if total > 0 else np.zeros_like(lam),
        "total_variance": total,
        "n": n,
        "method": "exact" if exact else "iterative",
        "rounds": rounds,
        "iterations": iterations,
        "max_angle_change": change,
        "n_sites": int(round(sums_sites)),
    }
    return fields, rounds


def _scale(var_n: np.ndarray, mean: np.ndarray, standardize: bool) -> np.ndarray:
    """Pooled standard deviations (ddof=0) from ``sum (x - m)^2 / n``; 1 where constant."""
    if not standardize:
        return np.ones_like(mean)
    sd = np.sqrt(np.maximum(var_n, 0.0))
    tiny = sd <= 1e-12 * np.maximum(np.abs(mean), 1.0)
    return np.where(tiny, 1.0, sd)


def _iterate(
    mean: np.ndarray,
    scale: np.ndarray,
    n: int,
    q: int,
    oversample: int,
    tol: float,
    max_iter: int,
    seed: int,
) -> Generator[Round, Sums, tuple[np.ndarray, np.ndarray, float, int, float]]:
    """Randomised block Krylov iteration: one ``C V`` secure sum per round.

    The hub keeps the orthonormal Krylov basis ``K`` and ``C K`` (``p x m``, ``m`` at
    most ``10 l``: a thick restart on the leading Ritz vectors keeps it
    there) and the projected matrix ``K^T C K``; each round's block is the newest
    ``C V`` block orthogonalised against ``K``.
    """
    p = mean.size
    width = min(q + oversample, p, n - 1)
    ceiling = min(p, n - 1)
    max_basis = min(ceiling, 10 * width)
    rng = np.random.default_rng(seed)
    block = orthonormal(rng.standard_normal((p, width)))
    public_fixed = {"mean": mean, "scale": scale, "inv_n": [1.0 / n]}
    basis = np.zeros((p, 0))
    images = np.zeros((p, 0))  # C @ basis
    h = np.zeros((0, 0))  # basis.T @ C @ basis
    previous: np.ndarray | None = None
    change = float("inf")
    for it in range(1, max_iter + 1):
        sums = yield Round("pca_iterate", {**public_fixed, "basis": block})
        wb = join(sums, "cv") * (n / (n - 1))  # C V with C the covariance (ddof=1)
        total = float(join(sums, "trace")[0]) * (n / (n - 1))
        cross = basis.T @ wb
        hb = block.T @ wb
        h = np.block([[h, cross], [cross.T, (hb + hb.T) / 2]])
        basis = np.hstack([basis, block])
        images = np.hstack([images, wb])
        m = h.shape[0]
        top = min(m, 2 * width)  # the Ritz pairs a restart keeps (q of them are reported)
        evals, y = sla.eigh((h + h.T) / 2, subset_by_index=[m - top, m - 1])
        evals, y = evals[::-1], y[:, ::-1]
        lead = basis @ y[:, :q]
        if previous is not None:
            change = float(principal_angles(previous, lead)[-1])
        previous = lead
        if change <= tol:
            return np.maximum(evals[:q], 0.0), lead, total, it, change
        # the next block: the newest image outside the basis (twice, for orthogonality)
        z = wb - basis @ (basis.T @ wb)
        z -= basis @ (basis.T @ z)
        u, sv, _ = np.linalg.svd(z, full_matrices=False)
        keep = sv > 1e-12 * max(float(np.linalg.norm(wb, 2)), 1e-300)
        if basis.shape[1] >= ceiling or not keep.any():
            # the basis is invariant under C: its Ritz pairs are exact eigenpairs
            return np.maximum(evals[:q], 0.0), lead, total, it, 0.0
        block = u[:, keep][:, : min(width, ceiling - basis.shape[1])]
        if basis.shape[1] + block.shape[1] > max_basis:  # thick restart
            r = min(2 * width, basis.shape[1])
            basis, images, h = basis @ y[:, :r], images @ y[:, :r], np.diag(evals[:r])
    raise ConvergenceError(
        f"PCA subspace iteration did not converge in max_iter={max_iter} rounds "
        f"(last principal angle change {change:.3g} > tol={tol:g})"
    )


# --------------------------------------------------------------------------- site side

PCA_STEPS = ("pca_mean", "pca_gram", "pca_scale", "pca_iterate")


def pca_local(step: str, public: Mapping[str, np.ndarray], m: SiteMatrix) -> dict[str, np.ndarray]:
    """A site's arrays for one PCA step (sums over its rows only)."""
    x = m.x
    if step == "pca_mean":
        # "sites": 1 per site, so the hub learns how many sites contributed (not who)
        return {
            "n": np.array([float(len(x))]),
            "sites": np.ones(1),
            **split("total", x.sum(axis=0)),
        }
    inv_n = float(public["inv_n"][0])
    xc = x - public["mean"]
    if step == "pca_gram":
        return split("gram", (xc.T @ xc) * inv_n)
    if step == "pca_scale":
        return split("sq", np.einsum("ij,ij->j", xc, xc) * inv_n)
    if step == "pca_iterate":
        z = xc / public["scale"]
        cv = z.T @ (z @ public["basis"])
        trace = np.array([np.einsum("ij,ij->", z, z)])
        return {**split("cv", cv * inv_n), **split("trace", trace * inv_n)}
    raise AlgorithmError(f"unknown PCA step {step!r}")


def pca_parameters(step: str, n_features: int | None, width: int) -> int:
    """Model parameters a PCA step declares (see the module docs); 0 if not yet known."""
    if step == "pca_gram":
        return n_features or 0
    if step == "pca_iterate":
        return width
    return 0


def check_pca_params(algo: Any) -> None:
    """Validate the PCA parameters shared by the subgroup algorithms."""
    if algo.method not in METHODS:
        raise ValidationError(f"method must be one of {METHODS}")
    for name, low in (("oversample", 0), ("max_iter", 1), ("max_exact_features", 1)):
        v = getattr(algo, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValidationError(f"{name} must be an integer >= {low}")
    t = algo.tol
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
        raise ValidationError("tol must be a number in (0, 1)")
    if isinstance(algo.seed, bool) or not isinstance(algo.seed, int) or algo.seed < 0:
        raise ValidationError("seed must be a non-negative integer")


@register
@dataclass(frozen=True, kw_only=True)
class PCA(Algorithm, FeatureParams):
    """Federated PCA of clinical columns or gene expression (see the module docs).

    Parameters
    ----------
    columns, expression, genes, transform, standardize, dropna
        The features (:class:`~consortia.subgroups._features.FeatureParams`).
        ``standardize=True`` (default) is a correlation PCA: scikit-learn's ``PCA``
        on ``StandardScaler().fit_transform`` of the pooled data.
    n_components
        Components to keep (at most ``min(features, patients - 1)``).
    method
        ``"auto"`` (exact up to ``max_exact_features`` features while they are at
        most 0.3 times the average site's patients, else iterative),
        ``"exact"`` or ``"iterative"``.
    oversample
        Extra basis vectors of the iterative path (faster, safer convergence).
    tol
        Iterative path: stop when the largest principal angle between the leading
        subspaces of two successive rounds is at most ``tol`` radians.
    max_iter
        Iterative path: the most subspace iterations.
    seed
        Seed of the iterative path's random start (public).
    max_exact_features
        The largest number of features ``"auto"`` takes the exact path for.

    Raises
    ------
    ValidationError
        Bad parameters.
    AlgorithmError
        Too few patients for ``n_components``.
    ConvergenceError
        The iterative path did not converge within ``max_iter`` rounds.
    """

    name = "subgroups.pca"
    n_components: int = 2
    method: str = "auto"
    oversample: int = 10
    tol: float = 1e-9
    max_iter: int = 200
    seed: int = 0
    max_exact_features: int = 500

    def __post_init__(self) -> None:
        self._check_features()
        q = self.n_components
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise ValidationError("n_components must be an integer >= 1")
        check_pca_params(self)

    @property
    def _width(self) -> int:
        return self.n_components + self.oversample

    def requirements(self, step: str) -> Requirements:
        """Parameters per step (module docs) and the columns read."""
        return Requirements(
            n_parameters=pca_parameters(step, self.n_features_declared, self._width),
            columns=self.columns,
        )

    def coordinate(self) -> Coordination:
        fields, _ = yield from pca_rounds(
            n_components=self.n_components,
            method=self.method,
            standardize=self.standardize,
            oversample=self.oversample,
            tol=self.tol,
            max_iter=self.max_iter,
            seed=self.seed,
            max_exact_features=self.max_exact_features,
        )
        fields.pop("n_sites")
        return PCAResult(
            features=self.columns or self.genes,
            expression=self.expression,
            transform=self.transform,
            standardize=self.standardize,
            dropna=self.dropna,
            **fields,
        )

    def local(self, step: str, public: Mapping[str, np.ndarray], data: Dataset) -> Contribution:
        m = self.read_features(data)
        arrays = pca_local(step, public, m)
        width = public["basis"].shape[1] if "basis" in public else 0
        n_par = pca_parameters(step, m.x.shape[1], width)
        return Contribution(arrays, cohort=len(m.x), n_parameters=n_par, rows=m.rows)

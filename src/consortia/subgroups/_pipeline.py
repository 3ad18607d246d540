"""The clustering pipeline shared by KMeans and ChooseK: PCA space, summary, Lloyd.

Rounds, in order: the PCA rounds (:mod:`~consortia.subgroups.pca`; every component
on the exact path when ``n_components`` is ``None``), the principal-direction tree
(:mod:`~consortia.subgroups._init`, skipped when initial centres are given), then the
Lloyd and final rounds (:mod:`~consortia.subgroups._lloyd`).  Every clustering round
carries the public definition of the clustering space (``shift``, ``scale`` and, in
PCA space, ``rotation``), so a site needs no state between rounds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from consortia.data.dataset import Dataset
from consortia.errors import AlgorithmError, ValidationError
from consortia.protocol import Contribution, Requirements, Round, Sums
from consortia.subgroups._features import FeatureParams
from consortia.subgroups._init import TREE_STEP, candidates, tree_local, tree_rounds
from consortia.subgroups._lloyd import FINAL_STEP, LLOYD_STEP, FinalStats, lloyd_local
from consortia.subgroups._lloyd import lloyd_rounds as _lloyd_rounds
from consortia.subgroups.pca import (
    METHODS,
    PCA_STEPS,
    PCAResult,
    pca_local,
    pca_parameters,
    pca_rounds,
)

__all__ = ["ClusterParams", "Space"]


def _int(v: Any, name: str, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValidationError(f"{name} must be an integer >= {low}")


@dataclass(frozen=True)
class Space:
    """The public clustering space: ``y = ((x - shift) / scale) @ rotation.T``."""

    pca: PCAResult
    public: dict[str, np.ndarray]
    centre: np.ndarray
    mean_variance: float
    n: int
    n_sites: int

    @property
    def dim(self) -> int:
        """Dimension of the clustering space."""
        return int(self.centre.size)


def to_space(x: np.ndarray, public: Mapping[str, np.ndarray]) -> np.ndarray:
    """Coordinates of rows ``x`` in the clustering space (at a site)."""
    y = (x - public["shift"]) / public["scale"]
    if "rotation" in public:
        y = y @ public["rotation"].T
    return y


@dataclass(frozen=True, kw_only=True)
class ClusterParams(FeatureParams):
    """Parameters of the clustering pipeline (see :class:`~consortia.subgroups.KMeans`)."""

    n_components: int | None = None
    n_init: int = 10
    max_iter: int = 300
    tol: float = 1e-4
    min_cluster_size: int = 5
    max_depth: int = 7
    seed: int = 0
    pca_method: str = "auto"
    pca_tol: float = 1e-9
    pca_max_iter: int = 200
    pca_oversample: int = 10

    def _check_cluster(self) -> None:
        self._check_features()
        if self.n_components is not None:
            _int(self.n_components, "n_components", 1)
        _int(self.n_init, "n_init", 1)
        _int(self.max_iter, "max_iter", 1)
        _int(self.min_cluster_size, "min_cluster_size", 1)
        _int(self.max_depth, "max_depth", 1)
        _int(self.seed, "seed", 0)
        _int(self.pca_max_iter, "pca_max_iter", 1)
        _int(self.pca_oversample, "pca_oversample", 0)
        t = self.tol
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < float("inf"):
            raise ValidationError("tol must be a number >= 0")
        if self.pca_method not in METHODS:
            raise ValidationError(f"pca_method must be one of {METHODS}")
        t = self.pca_tol
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1:
            raise ValidationError("pca_tol must be a number in (0, 1)")

    # ------------------------------------------------------------------ hub side

    def _space_rounds(self) -> Generator[Round, Sums, tuple[Space, int]]:
        fields, rounds = yield from pca_rounds(
            n_components=self.n_components,
            method=self.pca_method,
            standardize=self.standardize,
            oversample=self.pca_oversample,
            tol=self.pca_tol,
            max_iter=self.pca_max_iter,
            seed=self.seed,
            max_exact_features=500,
        )
        n_sites = int(fields.pop("n_sites"))
        pca = PCAResult(
            features=self.columns or self.genes,
            expression=self.expression,
            transform=self.transform,
            standardize=self.standardize,
            dropna=self.dropna,
            **fields,
        )
        n = pca.n
        shrink = (n - 1) / n  # ddof=1 -> ddof=0, as scikit-learn's tolerance
        if self.n_components is not None:
            public = {"shift": pca.mean, "scale": pca.scale, "rotation": pca.components}
            centre = np.zeros(pca.n_components)
            mean_var = float(np.mean(pca.explained_variance)) * shrink
        elif self.standardize:
            public = {"shift": pca.mean, "scale": pca.scale}
            centre = np.zeros(pca.mean.size)
            mean_var = pca.total_variance / pca.mean.size * shrink
        else:
            public = {"shift": np.zeros_like(pca.mean), "scale": np.ones_like(pca.mean)}
            centre = pca.mean
            mean_var = pca.total_variance / pca.mean.size * shrink
        return Space(pca, public, centre, mean_var, n, n_sites), rounds

    def _inits(
        self, space: Space, ks: tuple[int, ...], given: np.ndarray | None
    ) -> Generator[Round, Sums, tuple[list[np.ndarray], int]]:
        if given is not None:
            if given.shape[1] != space.dim:
                raise AlgorithmError(
                    f"init has {given.shape[1]} coordinates; the clustering space has {space.dim}"
                )
            return [given], 0
        points, weights, rounds = yield from _with_public(
            tree_rounds(space.dim, space.n_sites, self.min_cluster_size, self.max_depth),
            space.public,
        )
        inits = [c for k in ks for c in candidates(points, weights, k, self.n_init, self.seed)]
        return inits, rounds

    def _lloyd(
        self, space: Space, inits: list[np.ndarray]
    ) -> Generator[Round, Sums, tuple[FinalStats, int]]:
        tol = self.tol * space.mean_variance
        result = yield from _with_public(
            _lloyd_rounds(inits, max_iter=self.max_iter, tol=tol), space.public
        )
        return result

    # ------------------------------------------------------------------ site side

    def _cluster_requirements(self, step: str, k: int) -> Requirements:
        p = self.n_features_declared
        if step in PCA_STEPS:
            width = (self.n_components or 0) + self.pca_oversample
            n_par = pca_parameters(step, p, width)
        else:
            d = self.n_components or p or 0
            n_par = k * d
        return Requirements(n_parameters=n_par, columns=self.columns)

    def _cluster_local(
        self, step: str, public: Mapping[str, np.ndarray], data: Dataset, k: int
    ) -> Contribution:
        m = self.read_features(data)
        if step in PCA_STEPS:
            arrays = pca_local(step, public, m)
            width = public["basis"].shape[1] if "basis" in public else 0
            n_par = pca_parameters(step, m.x.shape[1], width)
            return Contribution(arrays, cohort=len(m.x), n_parameters=n_par, rows=m.rows)
        y = self._site_space(m.x, public)
        if step == TREE_STEP:
            arrays = tree_local(public, y, self.min_cluster_size)
            counts = frozenset({"tree_count"})
        elif step in (LLOYD_STEP, FINAL_STEP):
            arrays = lloyd_local(step, public, y, self.min_cluster_size)
            counts = frozenset({"count"})
        else:
            raise AlgorithmError(f"unknown step {step!r} for {type(self).__name__}")
        return Contribution(
            arrays, cohort=len(m.x), count_arrays=counts, n_parameters=k * y.shape[1], rows=m.rows
        )

    def _site_space(self, x: np.ndarray, public: Mapping[str, np.ndarray]) -> np.ndarray:
        h = hashlib.sha256()
        for key in ("shift", "scale", "rotation"):
            if key in public:
                h.update(key.encode() + np.ascontiguousarray(public[key]).tobytes())
        digest = h.hexdigest()
        cached = self.__dict__.get("_space_cache")
        if cached is not None and cached[0] is x and cached[1] == digest:
            return cached[2]
        y = to_space(x, public)
        object.__setattr__(self, "_space_cache", (x, digest, y))
        return y


def _with_public(gen: Generator[Round, Sums, Any], extra: Mapping[str, np.ndarray]) -> Any:
    """Re-yield ``gen``'s rounds with ``extra`` public arrays added; return its value."""
    try:
        rnd = next(gen)
        while True:
            sums = yield Round(rnd.step, {**extra, **rnd.public}, timeout=rnd.timeout)
            rnd = gen.send(sums)
    except StopIteration as stop:
        return stop.value

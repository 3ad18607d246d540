"""Patient subgroups across sites: federated PCA, k-means and the choice of k.

Algorithms in this package register themselves on import (entry point group
``consortia.algorithms``).  See ``docs/subgroups.md``.
"""

from consortia.subgroups._linalg import principal_angles
from consortia.subgroups.characterise import Subgroups, SubgroupsResult
from consortia.subgroups.choose_k import ChooseK, ChooseKResult
from consortia.subgroups.kmeans import ClusterQuality, KMeans, KMeansResult, assign
from consortia.subgroups.pca import PCA, PCAResult, project

__all__ = [
    "PCA",
    "ChooseK",
    "ChooseKResult",
    "ClusterQuality",
    "KMeans",
    "KMeansResult",
    "PCAResult",
    "Subgroups",
    "SubgroupsResult",
    "assign",
    "principal_angles",
    "project",
]

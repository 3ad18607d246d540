"""Patient subgroups across sites: federated PCA, k-means and the choice of k.

Algorithms in this package register themselves on import (entry point group
``consortia.algorithms``).  See ``docs/subgroups.md``; matching subgroups to
targets and approved drugs (:func:`match_targets`, a pure function): ``docs/targets.md``.
"""

from consortia.subgroups._linalg import principal_angles
from consortia.subgroups.characterise import Subgroups, SubgroupsResult
from consortia.subgroups.choose_k import ChooseK, ChooseKResult
from consortia.subgroups.kmeans import ClusterQuality, KMeans, KMeansResult, assign
from consortia.subgroups.pca import PCA, PCAResult, project
from consortia.subgroups.target_table import TargetTable, load_targets, validate_targets
from consortia.subgroups.targets import TargetMatchResult, match_targets

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
    "TargetMatchResult",
    "TargetTable",
    "assign",
    "load_targets",
    "match_targets",
    "principal_angles",
    "project",
    "validate_targets",
]

"""Omics algorithms: federated biomarker discovery on expression data.

Differential expression on counts (federated DESeq2, :mod:`consortia.omics.deseq2`),
genome-wide per-gene Cox screens (:mod:`consortia.omics.screen`) and moderated t
statistics (:mod:`consortia.omics.limma`).
"""

from consortia.omics.deseq2 import DESeq2, DESeq2Result

__all__ = ["DESeq2", "DESeq2Result"]

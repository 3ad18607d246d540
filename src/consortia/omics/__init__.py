"""Omics algorithms: differential expression on counts (federated DESeq2)."""

from consortia.omics.deseq2 import DESeq2, DESeq2Result

__all__ = ["DESeq2", "DESeq2Result"]

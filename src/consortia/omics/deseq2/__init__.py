"""Federated DESeq2 (differential expression on raw counts), as PyDESeq2 0.5.4.

See :class:`~consortia.omics.deseq2.algorithm.DESeq2`.  Modules: ``_design``
(formula, design matrix, contrast), ``_size_factors`` is folded into ``_site``
(median of ratios from public log geometric means), ``_nb`` (negative-binomial
sums), ``_irls`` (GLM fit), ``_lbfgsb`` (vectorised reverse-communication
L-BFGS-B), ``_dispersion`` (dispersions, trend, prior), ``_wald`` (tests and
multiple testing), ``_result`` (the result table).
"""

from consortia.omics.deseq2._result import DESeq2Result
from consortia.omics.deseq2.algorithm import DESeq2

__all__ = ["DESeq2", "DESeq2Result"]

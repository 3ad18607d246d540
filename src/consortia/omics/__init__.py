"""Omics algorithms: federated biomarker discovery on expression data."""

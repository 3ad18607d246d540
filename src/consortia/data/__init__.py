"""Data layer: datasets, schemas, validation, loaders and the synthetic cohort."""

from consortia.data.dataset import Dataset

__all__ = ["Dataset"]

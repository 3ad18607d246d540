"""Data layer: datasets, schemas, validation, loaders, the catalogue and the synthetic cohort."""

from consortia.data.catalogue import catalogue, rounded_count
from consortia.data.dataset import MODALITIES, Dataset, as_dataset
from consortia.data.loaders import load_dataset, load_expression, load_tiles, read_table
from consortia.data.schema import Column, ColumnType, Role, Schema, infer_type
from consortia.data.synthetic import (
    COVARIATES,
    DEFAULT_LOG_HR,
    SyntheticCohort,
    SyntheticTruth,
    synthetic_cohort,
    synthetic_schema,
)

__all__ = [
    "COVARIATES",
    "DEFAULT_LOG_HR",
    "MODALITIES",
    "Column",
    "ColumnType",
    "Dataset",
    "Role",
    "Schema",
    "SyntheticCohort",
    "SyntheticTruth",
    "as_dataset",
    "catalogue",
    "infer_type",
    "load_dataset",
    "load_expression",
    "load_tiles",
    "read_table",
    "rounded_count",
    "synthetic_cohort",
    "synthetic_schema",
]

"""The object an algorithm's site side receives: a site's private data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from consortia.errors import ValidationError

__all__ = ["Dataset", "as_dataset"]


@dataclass
class Dataset:
    """A site's private dataset.

    Attributes
    ----------
    frame
        One row per patient (clinical table; other modalities joined by patient id).
    name
        The dataset's name in the node's catalogue.
    schema
        The declared column roles and types, when the dataset was registered with one.
    site
        The name of the site holding it (set by the runtime).
    """

    frame: pd.DataFrame
    name: str = "data"
    schema: Any = None
    site: str | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows (patients)."""
        return len(self.frame)


def as_dataset(obj: Dataset | pd.DataFrame, *, name: str = "data") -> Dataset:
    """Wrap a DataFrame as a :class:`Dataset`; pass a Dataset through."""
    if isinstance(obj, Dataset):
        return obj
    if isinstance(obj, pd.DataFrame):
        return Dataset(frame=obj, name=name)
    raise ValidationError(
        f"site data must be a pandas DataFrame or a consortia Dataset, not {type(obj).__name__}"
    )

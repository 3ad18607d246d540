"""Loader for Fed-TCGA-BRCA (FLamby): 1,088 breast-cancer patients in 6 regions.

The files are not shipped with consortia.  Get them from the FLamby benchmark
(``flamby/datasets/fed_tcga_brca/``: ``brca.csv``, ``centers.csv``,
``train_test_split.csv``) and point :func:`load_tcga_brca` at their folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from consortia.errors import ValidationError

__all__ = ["REGIONS", "TcgaBrca", "load_tcga_brca"]

REGIONS = ("Northeast", "South", "West", "Midwest", "Europe", "Canada")
"""Region of FLamby centre k = 0..5."""

_FILES = ("brca.csv", "train_test_split.csv")


@dataclass(frozen=True)
class TcgaBrca:
    """Fed-TCGA-BRCA in memory.

    Attributes
    ----------
    frame
        One row per patient of the FLamby split: ``pid``, the 39 covariates,
        ``E`` (1 = death), ``T`` (days), ``fold`` (train/test), ``center`` (0..5)
        and ``region``.
    covariates
        The 39 covariate column names (age and 38 one-hot clinical columns).
    """

    frame: pd.DataFrame
    covariates: tuple[str, ...]

    def sites(self, fold: str | None = None) -> dict[str, pd.DataFrame]:
        """Region name -> that region's patients (optionally one fold: train or test)."""
        if fold not in (None, "train", "test"):
            raise ValidationError("fold must be 'train', 'test' or None")
        df = self.frame if fold is None else self.frame[self.frame["fold"] == fold]
        return {
            REGIONS[k]: df[df["center"] == k].reset_index(drop=True) for k in range(len(REGIONS))
        }

    def pooled(self, fold: str | None = None) -> pd.DataFrame:
        """All patients (optionally one fold), in region order."""
        return pd.concat(self.sites(fold).values(), ignore_index=True)


def load_tcga_brca(path: str | Path) -> TcgaBrca:
    """Read Fed-TCGA-BRCA from a folder holding ``brca.csv`` and ``train_test_split.csv``.

    Patients absent from the split file (8 barcodes) are excluded, as in FLamby.
    """
    folder = Path(path)
    missing = [f for f in _FILES if not (folder / f).is_file()]
    if missing:
        raise ValidationError(
            f"TCGA-BRCA folder {str(folder)!r} lacks {missing}; get the files from the "
            "FLamby benchmark (flamby/datasets/fed_tcga_brca/)"
        )
    brca = pd.read_csv(folder / "brca.csv")
    split = pd.read_csv(folder / "train_test_split.csv")
    need = {"pid", "E", "T"}
    if not need <= set(brca.columns) or not {"pid", "fold", "fold2"} <= set(split.columns):
        raise ValidationError("TCGA-BRCA files do not have the expected columns")
    df = brca.merge(split, on="pid", how="inner")
    df["center"] = df["fold2"].str.rsplit("_", n=1).str[1].astype(int)
    df["region"] = df["center"].map(dict(enumerate(REGIONS)))
    df = df.drop(columns=["fold2"])
    covariates = tuple(c for c in brca.columns if c not in ("pid", "E", "T"))
    df["E"] = df["E"].astype(int)
    df["T"] = df["T"].astype(float)
    return TcgaBrca(frame=df, covariates=covariates)

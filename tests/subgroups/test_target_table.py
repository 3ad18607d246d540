"""The shipped target and drug table validates, and malformed tables give typed errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from consortia.errors import SchemaError, TargetTableError, ValidationError
from consortia.subgroups.target_table import (
    CANCER_TYPES,
    COLUMNS,
    EVIDENCE_LEVELS,
    load_targets,
    normalize_cancer_type,
    validate_targets,
)


@pytest.fixture(scope="module")
def shipped():
    return load_targets()


@pytest.fixture
def frame(shipped) -> pd.DataFrame:
    rows = shipped.rows.head(6).copy()
    rows["year"] = rows["year"].astype(str)
    return rows


def test_shipped_table_validates_with_at_least_50_pairs(shipped) -> None:
    assert shipped.source == "consortia:targets.csv"
    assert len(shipped.pairs) >= 50
    rows = shipped.rows
    assert list(rows.columns[: len(COLUMNS)]) == list(COLUMNS)
    assert (rows["source"].str.strip() != "").all()
    assert rows["source_type"].isin(["fda_label", "fda_approval_notice", "nccn", "esmo"]).all()
    fda = rows[rows["source_type"] == "fda_label"]
    assert (fda["brand"] != "").all() and fda["year"].between(1995, 2024).all()
    assert set(rows["evidence"]) <= set(EVIDENCE_LEVELS)
    assert set(rows["cancer_type"]) <= set(CANCER_TYPES)


def test_shipped_table_holds_the_named_biomarkers(shipped) -> None:
    genes = {g for b in shipped.rows["biomarker_id"].unique() for g in shipped.genes(b)}
    assert {"ERBB2", "ESR1", "PIK3CA", "BRCA1", "BRCA2", "BRAF", "KRAS", "NTRK1", "TACSTD2",
            "EGFR", "ALK", "ROS1", "MET", "RET", "FGFR2", "FGFR3", "IDH1", "IDH2", "KIT",
            "PDGFRA", "CD274", "MLH1"} <= genes  # fmt: skip
    assert {"MSI_H_dMMR", "TMB_H", "ERBB2_low", "HR_positive", "KRAS_G12C"} <= set(
        shipped.rows["biomarker_id"]
    )
    tras = shipped.rows[(shipped.rows["drug"] == "trastuzumab")]
    assert {"breast", "gastric"} <= set(tras.loc[tras["evidence"] == "fda_approved", "cancer_type"])


def test_aliases_map_to_gene_symbols(shipped) -> None:
    aliases = shipped.alias_map()
    assert aliases["HER2"] == "ERBB2"
    assert aliases["TROP2"] == "TACSTD2"
    assert aliases["PD-L1"] == "CD274"
    assert aliases["ERBB2"] == "ERBB2"


def test_missing_column_is_named(frame) -> None:
    with pytest.raises(TargetTableError, match=r"column 'evidence': required column is missing"):
        validate_targets(frame.drop(columns="evidence"))
    assert issubclass(TargetTableError, SchemaError)


def test_bad_evidence_level_names_row_and_column(frame) -> None:
    frame.loc[frame.index[2], "evidence"] = "approved-ish"
    with pytest.raises(
        TargetTableError, match=r"row 3, column 'evidence': 'approved-ish' is not one of"
    ) as err:
        validate_targets(frame, source="mine.csv")
    assert (err.value.row, err.value.column, err.value.source) == (3, "evidence", "mine.csv")


def test_empty_source_is_refused(frame) -> None:
    frame.loc[frame.index[0], "source"] = "  "
    with pytest.raises(TargetTableError, match=r"row 1, column 'source': must not be empty"):
        validate_targets(frame)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("year", "recent", r"column 'year': must be a whole number"),
        ("year", "1850", r"column 'year': must be a whole number between 1900 and 2100"),
        ("cancer_type", "lung", r"column 'cancer_type': 'lung' is not one of"),
        ("genes", "", r"column 'genes': must name at least one gene"),
        ("genes", "ERBB2 AMP", r"column 'genes': 'ERBB2 AMP' is not a gene symbol"),
        ("brand", "", r"column 'brand': an FDA source must name the drug's label"),
        ("source_type", "nccn", r"column 'source_type': evidence 'fda_approved' needs an FDA"),
        ("biomarker_id", "HER2 positive", r"column 'biomarker_id': must be letters"),
        ("direction", "down", r"row 2, column 'direction': differs from row 1"),
    ],
)
def test_row_rules(frame, column: str, value: str, message: str) -> None:
    frame.loc[frame.index[1], column] = value
    with pytest.raises(TargetTableError, match=message):
        validate_targets(frame)


def test_duplicate_row_and_conflicting_alias(frame) -> None:
    dup = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    with pytest.raises(TargetTableError, match=r"row 7, column 'drug': duplicates row 1"):
        validate_targets(dup)
    frame.loc[frame.index[3], ["biomarker_id", "genes", "aliases"]] = ["X_expr", "EGFR", "HER2"]
    with pytest.raises(
        TargetTableError, match=r"row 4, column 'aliases': 'HER2' already names ERBB2"
    ):
        validate_targets(frame)


def test_load_user_tables_csv_tsv_json(tmp_path, shipped) -> None:
    rows = shipped.rows.head(10)
    rows.to_csv(tmp_path / "t.csv", index=False)
    rows.to_csv(tmp_path / "t.tsv", index=False, sep="\t")
    (tmp_path / "t.json").write_text(json.dumps(rows.to_dict("records")))
    for name in ("t.csv", "t.tsv", "t.json"):
        table = load_targets(tmp_path / name)
        assert table.source.endswith(name)
        pd.testing.assert_frame_equal(table.rows, rows.reset_index(drop=True))
    (tmp_path / "bad.json").write_text('{"drug": 1}')
    with pytest.raises(TargetTableError, match="a JSON table must be a list of records"):
        load_targets(tmp_path / "bad.json")
    with pytest.raises(TargetTableError, match=r"must end in \.csv, \.tsv or \.json"):
        load_targets(tmp_path / "t.xlsx")
    with pytest.raises(TargetTableError, match="cannot be read"):
        load_targets(tmp_path / "missing.csv")


def test_cancer_type_vocabulary() -> None:
    assert normalize_cancer_type("BRCA") == "breast"
    assert normalize_cancer_type("TCGA-LUAD") == "nsclc"
    assert normalize_cancer_type("Head-Neck") == "head_neck"
    with pytest.raises(ValidationError, match="cancer_type 'solid_tumors' is unknown"):
        normalize_cancer_type("solid_tumors")
    with pytest.raises(ValidationError, match="cancer_type 'liver' is unknown"):
        normalize_cancer_type("liver")

"""match_targets: ranking by marker evidence, drug status and repositioning, input shapes."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from consortia.errors import SchemaError, ValidationError
from consortia.omics.limma import ModeratedTResult
from consortia.omics.screen import CoxScreenResult
from consortia.results import Result
from consortia.subgroups.target_table import load_targets, validate_targets
from consortia.subgroups.targets import TargetMatchResult, match_targets


@pytest.fixture(scope="module")
def shipped():
    return load_targets()


def _markers(genes, lfc, padj) -> pd.DataFrame:
    return pd.DataFrame({"gene": genes, "log2fc": lfc, "padj": padj})


def _row(**kw) -> dict:
    base = {
        "biomarker_id": "B", "biomarker": "b", "genes": "G1", "aliases": "",
        "alteration": "expression", "direction": "up", "target": "T", "drug": "d", "brand": "D",
        "cancer_type": "breast", "setting": "metastatic", "evidence": "fda_approved",
        "year": "2020", "source_type": "fda_label", "source": "FDA label: D (d)", "notes": "",
    }  # fmt: skip
    return base | kw


def test_erbb2_up_ranks_first_with_trastuzumab(shipped) -> None:
    markers = {
        "A": _markers(
            ["HER2", "ESR1", "GAPDH", "BRCA1"], [3.0, -1.0, 0.2, 2.0], [1e-8, 1e-3, 0.5, 1e-6]
        ),
        "B": _markers(["ERBB2", "ESR1", "PGR"], [-0.5, 2.0, 1.5], [0.01, 1e-12, 1e-4]),
    }
    res = match_targets(markers, shipped, cancer_type="breast")
    assert isinstance(res, TargetMatchResult) and isinstance(res, Result)
    top = res.top("A", 3)
    assert top.index[0] == 1 and top.iloc[0]["biomarker_id"] == "ERBB2_positive"
    first = top.iloc[0]
    assert (first["gene"], first["log2fc"], first["padj"]) == ("ERBB2", 3.0, 1e-8)
    assert first["score"] == pytest.approx(3.0 * 8) and bool(first["significant"])
    assert first["drugs"].split(", ")[0] == "trastuzumab"
    assert {"pertuzumab", "ado-trastuzumab emtansine", "lapatinib"} <= set(
        first["drugs"].split(", ")
    )
    # BRCA1 is up: no support for a loss-of-function biomarker (direction 'down')
    assert "BRCA_mutation" not in set(res.summary.loc["A", "biomarker_id"])
    # ESR1 mutation (direction 'any'): half weight, |log2fc| 1 at padj 1e-3
    esr1 = res.summary.loc["A"].set_index("biomarker_id").loc["ESR1_mutation"]
    assert esr1["score"] == pytest.approx(0.5 * 1.0 * 3.0)
    # subgroup B: hormone receptor-positive first (ESR1 up, capped -log10 at 10) with CDK4/6 drugs
    b = res.top("B", 2)
    assert b.iloc[0]["biomarker_id"] == "HR_positive"
    assert b.iloc[0]["score"] == pytest.approx(2.0 * 10)
    assert "palbociclib" in b.iloc[0]["drugs"]
    assert "ERBB2_positive" not in set(res.summary.loc["B", "biomarker_id"])  # ERBB2 down
    drugs = res.drugs.loc[("A", 1)].set_index("drug")
    assert drugs.loc["trastuzumab", "status"] == "approved"
    assert not drugs.loc["trastuzumab", "repositioning"]


def test_drug_approved_only_elsewhere_is_a_repositioning_candidate(shipped) -> None:
    markers = {"A": _markers(["ERBB2"], [2.0], [1e-5])}
    crc = match_targets(markers, shipped, cancer_type="COAD").drugs.loc[("A", 1)].set_index("drug")
    assert crc.loc["tucatinib", "status"] == "approved"  # HER2+ colorectal, 2023
    assert crc.loc["fam-trastuzumab deruxtecan", "status"] == "approved"  # tissue-agnostic 2024
    assert crc.loc["trastuzumab", "status"] == "guideline"  # NCCN only in colorectal
    kad = crc.loc["ado-trastuzumab emtansine"]
    assert kad["status"] == "repositioning" and kad["repositioning"]
    assert kad["approved_in"] == "breast (2013)"
    assert list(crc["status"]) == sorted(
        crc["status"], key=["approved", "guideline", "repositioning"].index
    )
    breast = match_targets(markers, shipped, cancer_type="breast")
    assert "zanidatamab" in breast.summary.iloc[0]["repositioning"].split(", ")
    assert "trastuzumab" not in breast.summary.iloc[0]["repositioning"].split(", ")
    none = match_targets(markers, shipped)
    assert none.cancer_type is None and not none.drugs["repositioning"].any()


def test_hand_made_table_repositioning_and_tissue_agnostic() -> None:
    table = validate_targets(
        pd.DataFrame(
            [
                _row(drug="onlabel", brand="On"),
                _row(drug="elsewhere", brand="Else", cancer_type="melanoma"),
                _row(drug="agnostic", brand="Ag", cancer_type="solid_tumors"),
                _row(
                    biomarker_id="M",
                    genes="G2",
                    aliases="ALT2",
                    alteration="mutation",
                    direction="any",
                    drug="mdrug",
                    brand="M",
                ),
            ]
        )
    )
    markers = {"s": _markers(["g1", "ALT2"], [1.0, -4.0], [0.01, 1e-20])}
    res = match_targets(markers, table, cancer_type="breast")
    assert list(res.summary["biomarker_id"]) == ["M", "B"]  # 0.5 * 4 * 10 = 20 > 1 * 2
    assert res.summary["score"].tolist() == pytest.approx([20.0, 2.0])
    status = res.drugs.set_index("drug")["status"]
    expected = {"mdrug": "approved", "onlabel": "approved", "agnostic": "approved"}
    assert status.to_dict() == expected | {"elsewhere": "repositioning"}
    assert res.summary.iloc[1]["repositioning"] == "elsewhere"
    aml = match_targets(markers, table, cancer_type="aml").drugs.set_index("drug")["status"]
    assert aml["agnostic"] == "repositioning"  # a solid-tumour approval does not cover AML


def test_prevalence_adds_to_the_score(shipped) -> None:
    markers = {"msi": _markers(["MLH1"], [-2.0], [1e-4]), "mss": _markers(["MLH1"], [0.1], [0.9])}
    prev = pd.DataFrame({"MSI_H_dMMR": [0.8, 0.02]}, index=["msi", "mss"])  # a cross-tab
    res = match_targets(markers, shipped, prev, cancer_type="colorectal")
    msi = res.top("msi", 1).iloc[0]
    assert msi["biomarker_id"] == "MSI_H_dMMR"
    assert (msi["marker_score"], msi["prevalence_score"]) == pytest.approx((8.0, 8.0))
    mss = res.top("mss", 1).iloc[0]
    assert mss["score"] == pytest.approx(0.2) and not mss["significant"]
    drugs = res.drugs.loc[("msi", 1)].set_index("drug")["status"]
    assert drugs["pembrolizumab"] == drugs["nivolumab"] == drugs["ipilimumab"] == "approved"
    only_prev = match_targets({"x": _markers([], [], [])}, shipped, {"x": {"tmb_h": 0.5}})
    assert only_prev.summary.iloc[0][["biomarker_id", "score"]].tolist() == ["TMB_H", 5.0]
    assert math.isnan(only_prev.summary.iloc[0]["padj"])
    with pytest.raises(ValidationError, match=r"prevalence of 'TMB_H' in subgroup 'x' must lie"):
        match_targets({"x": _markers([], [], [])}, shipped, {"x": {"TMB_H": 1.5}})
    with pytest.raises(ValidationError, match="biomarker_id 'MSI' is not in the targets table"):
        match_targets({"x": _markers([], [], [])}, shipped, {"x": {"MSI": 0.5}})


def test_marker_input_shapes(shipped) -> None:
    genes = ("ERBB2", "GAPDH", "TACSTD2")
    limma = ModeratedTResult(
        genes=genes, coefficient="subgroup", log_fc=np.array([2.0, 0.0, 1.0]),
        ave_expr=np.zeros(3), t=np.zeros(3), pvalue=np.array([1e-6, 0.9, 1e-3]),
        fdr=np.array([1e-5, 0.9, 1e-2]), s2=np.ones(3), s2_post=np.ones(3), stdev_unscaled=1.0,
        df_residual=10.0, df_prior=4.0, s2_prior=1.0, df_total=14.0, n=12, rounds=2,
        adjusted_for_site=False,
    )  # fmt: skip
    deseq = pd.DataFrame(
        {"log2FoldChange": [2.0, 1.0], "padj": [1e-5, 1e-2]}, index=pd.Index(["Erbb2", "TROP2"])
    )
    long = pd.DataFrame({"subgroup": ["k1", "k1"], "gene": ["ERBB2", "TROP2"], "coef": [2.0, 1.0],
                         "FDR": [1e-5, 1e-2]})  # fmt: skip
    cox = CoxScreenResult(
        genes=genes, coef=np.array([2.0, 0.0, 1.0]), se=np.ones(3), z=np.zeros(3),
        pvalue=np.array([1e-6, 0.9, 1e-3]), fdr=np.array([1e-5, 0.9, 1e-2]),
        converged=np.ones(3, bool), tested=np.ones(3, bool), covariates=(), n=12, n_events=5,
        rounds=3, iterations=2, ties="breslow", alpha=0.05, stratified_by_site=False,
        transform="none",
    )  # fmt: skip
    tables = [match_targets({"k1": m}, shipped).summary for m in (limma, deseq, cox)]
    tables.append(match_targets(long, shipped).summary)
    for t in tables[1:]:
        pd.testing.assert_frame_equal(t, tables[0])
    assert "TROP2" in set(tables[0]["biomarker_id"])  # TROP2 -> TACSTD2 through the alias
    trop = tables[0].set_index("biomarker_id").loc["TROP2"]
    assert trop["gene"] == "TACSTD2" and "sacituzumab govitecan" in trop["drugs"]
    single = match_targets(deseq, shipped)
    assert single.subgroups == ("all",)


def test_bad_marker_tables(shipped) -> None:
    with pytest.raises(SchemaError, match=r"subgroup 'a': no FDR column \(one of padj"):
        match_targets({"a": pd.DataFrame({"gene": ["ERBB2"], "log2fc": [1.0]})}, shipped)
    with pytest.raises(SchemaError, match=r"subgroup 'a': no effect column"):
        match_targets({"a": pd.DataFrame({"gene": ["ERBB2"], "padj": [0.1]})}, shipped)
    with pytest.raises(SchemaError, match=r"no 'gene' column or gene index"):
        match_targets({"a": pd.DataFrame({"log2fc": [1.0], "padj": [0.1]})}, shipped)
    with pytest.raises(ValidationError, match=r"column 'padj' must lie in \[0, 1\]"):
        match_targets({"a": _markers(["ERBB2"], [1.0], [1.5])}, shipped)
    with pytest.raises(ValidationError, match="cancer_type 'liver' is unknown"):
        match_targets({"a": _markers(["ERBB2"], [1.0], [0.1])}, shipped, cancer_type="liver")
    with pytest.raises(ValidationError, match="fdr must lie in"):
        match_targets({"a": _markers(["ERBB2"], [1.0], [0.1])}, shipped, fdr=0)


def test_result_schema_and_json(shipped) -> None:
    res = match_targets({"A": _markers(["ERBB2", "KRAS"], [3.0, 1.0], [1e-8, np.nan])}, shipped,
                        cancer_type="breast")  # fmt: skip
    stats = res.statistics()
    assert stats["subgroups"] == 1 and stats["targets"] == len(res.summary) == 3
    assert stats["repositioning"] >= 2  # zanidatamab; Enhertu for HER2-mutant NSCLC
    assert list(res.tables()) == ["summary", "drugs"]
    doc = json.loads(res.to_json())
    assert doc["tables"]["summary"][0]["biomarker_id"] == "ERBB2_positive"
    assert doc["tables"]["summary"][0]["subgroup"] == "A"
    assert "KRAS_G12C" not in set(res.summary["biomarker_id"])  # untested gene skipped
    assert "trastuzumab" in res.summary_text()
    with pytest.raises(ValidationError, match="subgroup 'Z' is not one"):
        res.top("Z")

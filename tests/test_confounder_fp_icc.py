"""False positives by confounder type (evaluation/confounder_fp.py) and count agreement beyond Spearman
(ICC(2,1), relative count error in evaluation/counts.py), issue 23. Planted predictions; a few seconds."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

sitk = pytest.importorskip("SimpleITK")

from nnunetv2_mfns.errors import MfnsInputError  # noqa: E402
from nnunetv2_mfns.evaluation.confounder_fp import (CONFOUNDER_BITS, TABLE_FILE, confounder_fp_table,  # noqa: E402
                                                    fp_by_type, summarise, write_confounder_fp)
from nnunetv2_mfns.evaluation.counts import agreement, count_agreement_markdown, icc_2_1  # noqa: E402


def _scene():
    truth = np.zeros((4, 20, 20), bool)
    truth[1, 2:4, 2:8] = True  # a PVS
    cmap = np.zeros((4, 20, 20), np.uint8)
    cmap[1, 10:13, 10:13] = CONFOUNDER_BITS["wmh"]  # two WMH blobs
    cmap[3, 15:18, 2:5] = CONFOUNDER_BITS["wmh"]
    cmap[:, 0, :] = CONFOUNDER_BITS["rim"]  # rim row
    cmap[2, 0, 5:8] |= CONFOUNDER_BITS["sulcus"]  # a sulcus inside the rim
    return truth, cmap


def test_prediction_equal_to_wmh_map_is_all_wmh_false_positives():
    truth, cmap = _scene()
    wmh = (cmap & CONFOUNDER_BITS["wmh"]) > 0
    res = fp_by_type(wmh, truth, cmap)
    assert res["total"] == (18, 2)
    assert res["wmh"] == (18, 2)
    for t in ("sulcus", "lacune", "flow_void", "hyperintense", "rim", "none"):
        assert res[t] == (0, 0), t
    assert fp_by_type(truth, truth, cmap)["total"] == (0, 0)  # a perfect prediction has no FP anywhere


def test_overlapping_types_and_unmapped_false_positives():
    truth, cmap = _scene()
    pred = truth.copy()
    pred[2, 0, 5:8] = True  # sulcus in the rim: counts under both
    pred[0, 8:10, 8:10] = True  # outside every map
    res = fp_by_type(pred, truth, cmap)
    assert res["sulcus"] == (3, 1) and res["rim"] == (3, 1)
    assert res["none"] == (4, 1) and res["total"] == (7, 2)
    assert res["wmh"] == (0, 0)


def _write(arr, path):
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.65, 0.65, 2.0))
    sitk.WriteImage(img, str(path))


def test_write_confounder_fp_section_and_table(tmp_path):
    truth, cmap = _scene()
    ds = tmp_path / "ds"
    for sub in ("labels", "confounders", "pred_wmh", "pred_truth"):
        (ds / sub).mkdir(parents=True)
    _write(truth.astype(np.uint8), ds / "labels" / "C1.nii.gz")
    _write(cmap, ds / "confounders" / "C1.nii.gz")
    _write(((cmap & CONFOUNDER_BITS["wmh"]) > 0).astype(np.uint8), ds / "pred_wmh" / "C1.nii.gz")
    _write(truth.astype(np.uint8), ds / "pred_truth" / "C1.nii.gz")
    subjects = {"subjects": {"C1": {"confounder_map": "confounders/C1.nii.gz"}}}
    files = {"WMHmodel": {"C1": ds / "pred_wmh" / "C1.nii.gz"}, "Perfect": {"C1": ds / "pred_truth" / "C1.nii.gz"}}
    out = tmp_path / "out"
    out.mkdir()
    table = confounder_fp_table(ds / "labels", files, subjects, ds, ["C1"])
    lines = write_confounder_fp(out, table, ["WMHmodel", "Perfect"])
    text = "\n".join(lines)
    assert "False positives by cause" in text and "| WMHmodel | " in text
    row = next(line for line in lines if line.startswith("| WMHmodel"))
    assert "18 / 2 (100%)" in row  # the wmh column
    table = pd.read_csv(out / TABLE_FILE)
    s = summarise(table, ["WMHmodel", "Perfect"]).set_index(["method", "type"])
    assert s.loc[("WMHmodel", "wmh"), "share"] == pytest.approx(1.0)
    assert s.loc[("Perfect", "wmh"), "fp_voxels"] == 0
    assert (out / "fig_confounder_fp.png").is_file()
    # no maps -> no section
    assert write_confounder_fp(out, confounder_fp_table(ds / "labels", files, {"subjects": {}}, tmp_path, ["C1"]),
                               ["WMHmodel"]) == []
    # a map named in subjects.json but missing is refused (before the report writes anything)
    with pytest.raises(MfnsInputError, match="confounder map"):
        confounder_fp_table(ds / "labels", files, {"subjects": {"C1": {"confounder_map": "nope.nii.gz"}}}, ds, ["C1"])


def test_icc_2_1_matches_shrout_fleiss_and_hand_computation():
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges, ICC(2,1) = 0.29
    sf = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    assert icc_2_1(sf) == pytest.approx(0.2898, abs=1e-4)
    # by hand: x = 1, 2, 3; y = 2, 3, 5. grand mean 8/3; MSR = 19/6, MSC = 8/3, MSE = 1/6
    # ICC = (19/6 - 1/6) / (19/6 + 1/6 + 2 (8/3 - 1/6) / 3) = 3 / 5
    assert icc_2_1(np.array([[1, 2], [2, 3], [3, 5]], float)) == pytest.approx(0.6)
    assert math.isnan(icc_2_1(np.array([[1, 2], [2, 3]], float)))  # n < 3


def test_agreement_separates_ranking_from_absolute_counts():
    y = np.array([10, 20, 30, 40, 50], float)
    a = agreement(2 * y, y)  # same order, twice the count
    assert a["spearman_rs"] == pytest.approx(1.0)
    assert a["rel_error"] == pytest.approx(1.0) and a["rel_abs_error"] == pytest.approx(1.0)
    assert a["icc_2_1"] < 0.5
    b = agreement(y + np.array([1, -1, 0, 1, -1]), y)
    assert b["icc_2_1"] > 0.99 and abs(b["rel_error"]) < 0.05


def test_count_section_says_raters_are_simulated():
    corr = pd.DataFrame([{"region": "BG", "x": "M", "y": "rater1", "n": 5, "spearman_rs": 0.9, "icc_2_1": 0.8,
                          "rel_error": -0.1, "rel_abs_error": 0.2}])
    subj = {"created_by": {"tool": "mfns-make-phantom", "args": {"raters": {"rater1": {}, "rater2": {}}}}}
    text = "\n".join(count_agreement_markdown(corr, subj))
    assert "SIMULATED" in text and "ICC(2,1)" in text and "-10.0%" in text
    assert "SIMULATED" not in "\n".join(count_agreement_markdown(corr, {"subjects": {}}))
    json.dumps(subj)

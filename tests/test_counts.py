"""Rating-slice counts on slices with known components and region masks; agreement statistics against
hand-computed values."""
import json
import math

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.evaluation.counts import (agreement, count_correlations, count_folders, count_rating_slices,
                                             count_slice)


def known_slice():
    """12 x 12 slice: components with known sizes and positions (midline between columns 5 and 6)."""
    s = np.zeros((12, 12), bool)
    s[1, 1] = True            # A: 1 px, low-index side
    s[3, 2:4] = True          # B: 2 px, low side
    s[6, 3] = s[7, 4] = True  # C: diagonal pair -> 1 component at 8-conn, 2 at 4-conn, low side
    s[2, 8:11] = True         # D: 3 px, high side
    s[9:11, 9] = True         # E: 2 px, high side
    s[5, 5:8] = True          # F: 3 px straddling the midline, centroid column 6 -> high side
    return s


def test_count_slice_connectivity_min_size_and_sides():
    s = known_slice()
    assert count_slice(s) == {"total": 6, "left": 3, "right": 3}  # high-index side is patient left (LPS)
    assert count_slice(s, connectivity=4)["total"] == 7
    assert count_slice(s, min_size=2)["total"] == 5   # A dropped
    assert count_slice(s, min_size=3)["total"] == 2   # D, F
    assert count_slice(np.zeros((5, 5), bool)) == {"total": 0, "left": 0, "right": 0}
    with pytest.raises(MfnsInputError, match="connectivity"):
        count_slice(s, connectivity=6)
    with pytest.raises(MfnsInputError, match="min_size"):
        count_slice(s, min_size=0)


def test_count_slice_region_mask_and_region_midline():
    s = known_slice()
    region = np.zeros_like(s)
    region[:, 0:8] = True  # keeps A, B, C, F (F cut to columns 5-7), drops D and E
    r = count_slice(s, region)
    assert r["total"] == 4
    # region spans columns 0..7 -> midline 3.5; A(1), B(2.5) low, C(3.5 on the midline -> low), F(6) high
    assert (r["left"], r["right"]) == (1, 3)
    flipped = count_slice(s, region, high_index_is_left=False)
    assert (flipped["left"], flipped["right"]) == (3, 1)
    cut = np.zeros_like(s)
    cut[:, 0:6] = True
    cut[:, 7:] = True  # column 6 excluded splits F into two pieces, each counted
    assert count_slice(s, cut)["total"] == 7


def write(arr, path):
    img = sitk.GetImageFromArray(np.asarray(arr).astype(np.uint8))
    img.SetSpacing((0.5, 0.5, 2.0))
    sitk.WriteImage(img, str(path))


def test_count_rating_slices_with_region_files(tmp_path):
    mask = np.zeros((5, 12, 12), bool)
    mask[2] = known_slice()
    mask[4, 1, 1] = mask[4, 10, 10] = True
    region = np.zeros((5, 12, 12), np.uint8)
    region[:, :, 0:8] = 1
    (tmp_path / "regions").mkdir()
    write(region, tmp_path / "regions" / "PVS_001_BG.nii.gz")
    subj = {"rating_slices": {"BG": 2, "CSO": 4}, "region_masks": {"BG": "regions/PVS_001_BG.nii.gz"}}
    r = count_rating_slices(mask, subj, tmp_path)
    assert r["BG"] == {"slice": 2, "region_mask": "regions/PVS_001_BG.nii.gz", "total": 4, "left": 1, "right": 3}
    assert r["CSO"]["total"] == 2 and r["CSO"]["region_mask"] is None  # whole slice without a region mask
    assert r["CSO"]["left"] == 1 and r["CSO"]["right"] == 1
    # explicit indices replace subjects.json's; a flipped x direction swaps the side names
    r2 = count_rating_slices(mask, subj, tmp_path, rating_slices={"CSO": 2}, direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert list(r2) == ["CSO"] and r2["CSO"]["total"] == 6 and (r2["CSO"]["left"], r2["CSO"]["right"]) == (3, 3)
    with pytest.raises(MfnsInputError, match=r"rating_slices\['BG'\] = 7"):
        count_rating_slices(mask, {"rating_slices": {"BG": 7}}, tmp_path, case="PVS_001")
    with pytest.raises(MfnsInputError, match="no rating_slices"):
        count_rating_slices(mask, {}, tmp_path, case="PVS_001")
    write(region * 255, tmp_path / "regions" / "PVS_001_BG.nii.gz")  # 255-valued region masks work too
    assert count_rating_slices(mask, subj, tmp_path)["BG"]["total"] == 4
    write(region[:, :-1], tmp_path / "regions" / "PVS_001_BG.nii.gz")
    with pytest.raises(MfnsInputError, match="PVS_001_BG.nii.gz: region mask BG shape"):
        count_rating_slices(mask, subj, tmp_path)


def test_agreement_against_hand_computed_values():
    # x = 1..5, y = 2, 1, 4, 3, 5: ranks are the values, rank differences -1, 1, -1, 1, 0, sum of squares 4,
    # rs = 1 - 6 * 4 / (5 * 24) = 0.8. p (scipy's t approximation, df 3): t = 0.8 sqrt(3 / 0.36) = 4 / sqrt(3);
    # the t(3) CDF is 1/2 + (1/pi) [t / (sqrt3 (1 + t^2/3)) + atan(t / sqrt3)] = 1/2 + (0.48 + atan(4/3)) / pi,
    # so p = 2 (1/2 - (0.48 + 0.9272952) / pi) = 2 (0.5 - 0.4479560) = 0.1040880.
    a = agreement([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert a["spearman_rs"] == pytest.approx(0.8) and a["spearman_p"] == pytest.approx(0.1040880, rel=1e-5)
    # Bland-Altman: d = x - y = -1, 1, -1, 1, 0 -> bias 0, SD sqrt(4 / 4) = 1, limits -/+ 1.96
    assert a["bias"] == pytest.approx(0.0) and a["sd_diff"] == pytest.approx(1.0)
    assert (a["loa_low"], a["loa_high"]) == pytest.approx((-1.96, 1.96))
    assert a["n"] == 5 and a["note"] == "" and (a["mean_x"], a["mean_y"]) == pytest.approx((3.0, 3.0))
    # ties get average ranks: x = 1, 1, 2, 3 -> 1.5, 1.5, 3, 4 against 1, 2, 3, 4: centred
    # (-1, -1, .5, 1.5) . (-1.5, -.5, .5, 1.5) = 4.5 over sqrt(4.5 * 5) -> rs = 3 / sqrt(10) = 0.9486833
    t = agreement([1, 1, 2, 3], [1, 2, 3, 4])
    assert t["spearman_rs"] == pytest.approx(0.9486833, rel=1e-6)
    # d = 0, -1, -1, -1: bias -0.75, SD sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5
    assert t["bias"] == pytest.approx(-0.75) and t["sd_diff"] == pytest.approx(0.5)
    # NaN pairs are dropped before anything is computed
    assert agreement([1, np.nan, 2, 3, 4, 5], [2, 7, 1, 4, 3, 5])["spearman_rs"] == pytest.approx(0.8)
    small = agreement([3, 4], [3, 5])
    assert small["n"] == 2 and math.isnan(small["spearman_rs"]) and "n = 2 < 3" in small["note"]
    assert small["bias"] == pytest.approx(-0.5)
    const = agreement([3, 3, 3, 3], [1, 2, 3, 4])
    assert math.isnan(const["spearman_rs"]) and "constant" in const["note"]
    empty = agreement([], [])
    assert empty["n"] == 0 and math.isnan(empty["bias"])


RATER1_OFFSETS = (1, -1, 0, 1, -1)  # rater 1 miscounts by these: BG truth 2, 4, 6, 8, 10 -> 3, 3, 6, 9, 9


@pytest.fixture
def rated_dataset(tmp_path):
    ds = tmp_path / "Dataset001_T"
    (ds / "labelsTr").mkdir(parents=True)
    (ds / "regions").mkdir()
    pred = tmp_path / "pred"
    pred.mkdir()
    subjects = {}
    truth_bg = []
    for i in range(5):
        case = f"PVS_{i + 1:03d}"
        gt = np.zeros((4, 20, 20), bool)
        n = 2 + 2 * i  # i-th case: n isolated dots on slice 1 (BG), spaced 2 px apart
        for k in range(n):
            gt[1, 2 + 2 * (k // 8), 2 + 2 * (k % 8)] = True
        gt[3, 5, 5] = True
        p = gt.copy()
        p[1, 2, 2] = False  # the model misses one BG dot in every case
        region = np.ones((4, 20, 20), np.uint8)
        write(gt, ds / "labelsTr" / f"{case}.nii.gz")
        write(p, pred / f"{case}.nii.gz")
        write(region, ds / "regions" / f"{case}_BG.nii.gz")
        truth_bg.append(n)
        subjects[case] = {"subject": f"sub-{i}", "age": 60 + i, "sex": "F", "set": "train",
                          "rating_slices": {"BG": 1, "CSO": 3}, "region_masks": {"BG": f"regions/{case}_BG.nii.gz"},
                          "rater_counts": {"rater1": {"BG": n + RATER1_OFFSETS[i], "CSO": 1},
                                           "rater2": {"BG": n, "CSO": None}}}
    subjects["PVS_099"] = {"subject": "sub-x", "age": 50, "sex": "M", "set": "test"}  # no rating slices: skipped
    sj = ds / "subjects.json"
    sj.write_text(json.dumps({"schema": "nnunetv2_mfns.subjects/1", "subjects": subjects}))
    return ds, sj, pred, truth_bg


def test_count_folders_and_correlations(rated_dataset):
    from nnunetv2_mfns.evaluation.io import load_subjects
    ds, sj, pred, truth_bg = rated_dataset
    counts = count_folders(load_subjects(sj), ds, {"M": pred}, ds / "labelsTr")
    assert list(counts.columns) == ["case", "source", "kind", "region", "side", "count"]
    tot = counts[(counts["side"] == "total") & (counts["region"] == "BG")].pivot(index="case", columns="source",
                                                                                  values="count")
    assert list(tot["truth"]) == truth_bg
    assert list(tot["M"]) == [n - 1 for n in truth_bg]
    assert set(counts.loc[counts["kind"] == "rater", "side"]) == {"total"}
    assert "PVS_099" not in set(counts["case"])
    corr = count_correlations(counts)
    pairs = set(zip(corr["region"], corr["x"], corr["y"]))
    assert {("BG", "M", "rater1"), ("BG", "M", "rater2"), ("BG", "rater1", "rater2"), ("BG", "M", "truth"),
            ("BG", "rater1", "truth")} <= pairs
    row = corr[(corr["region"] == "BG") & (corr["x"] == "M") & (corr["y"] == "truth")].iloc[0]
    assert row["bias"] == pytest.approx(-1.0) and row["spearman_rs"] == pytest.approx(1.0)
    assert list(tot["rater1"]) == [3, 3, 6, 9, 9]
    row = corr[(corr["region"] == "BG") & (corr["x"] == "M") & (corr["y"] == "rater1")].iloc[0]
    # M = 1, 3, 5, 7, 9 (ranks 1..5, centred -2..2); rater 1 ranks 1.5, 1.5, 3, 4.5, 4.5 (centred -1.5, -1.5, 0,
    # 1.5, 1.5): sum of products 9 over sqrt(10 * 9) -> rs = 3 / sqrt(10); M - rater1 = -2, 0, -1, -2, 0: bias -1
    assert row["spearman_rs"] == pytest.approx(0.9486833, rel=1e-6) and row["bias"] == pytest.approx(-1.0)
    cso = corr[(corr["region"] == "CSO") & (corr["x"] == "M") & (corr["y"] == "rater2")].iloc[0]
    assert cso["n"] == 0 and math.isnan(cso["spearman_rs"])  # rater2 has no CSO counts


def test_truth_count_checked_against_true_counts(rated_dataset, caplog):
    from nnunetv2_mfns.evaluation.io import load_subjects
    ds, sj, pred, truth_bg = rated_dataset
    doc = json.loads(sj.read_text())
    doc["subjects"]["PVS_001"]["true_counts"] = {"BG": truth_bg[0]}
    doc["subjects"]["PVS_002"]["true_counts"] = {"BG": truth_bg[1] + 5}
    sj.write_text(json.dumps(doc))
    with caplog.at_level("WARNING", logger="nnunetv2_mfns.evaluation.counts"):
        count_folders(load_subjects(sj), ds, {"M": pred}, ds / "labelsTr")
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith("PVS_002: truth count")


def test_count_folders_missing_prediction(rated_dataset):
    from nnunetv2_mfns.evaluation.io import load_subjects
    ds, sj, pred, _ = rated_dataset
    (pred / "PVS_002.nii.gz").unlink()
    with pytest.raises(MfnsInputError, match=r"PVS_002\.nii\.gz: prediction of method 'M'"):
        count_folders(load_subjects(sj), ds, {"M": pred}, ds / "labelsTr")
    c = count_folders(load_subjects(sj), ds, {"M": pred}, ds / "labelsTr", allow_missing=True)
    assert "PVS_002" not in set(c.loc[c["source"] == "M", "case"])


def test_cli_counts(rated_dataset, tmp_path, capsys):
    from nnunetv2_mfns.cli.counts import main
    ds, sj, pred, _ = rated_dataset
    out = tmp_path / "counts_out"
    assert main(["--subjects", str(sj), "--gt", str(ds / "labelsTr"), "--pred", f"M={pred}", "--out", str(out),
                 "--connectivity", "4"]) == 0
    assert pd.read_csv(out / "counts.csv").shape[0] > 0 and pd.read_csv(out / "correlations.csv").shape[0] > 0
    rs = tmp_path / "rs.json"
    rs.write_text(json.dumps({"PVS_001": {"BG": 99}}))
    capsys.readouterr()
    assert main(["--subjects", str(sj), "--pred", f"M={pred}", "--out", str(tmp_path / "o2"),
                 "--rating-slices", str(rs)]) == 2
    assert "rating_slices['BG'] = 99" in capsys.readouterr().err
    assert main(["--subjects", str(sj), "--pred", f"M={pred}", "--out", str(out)]) == 2  # exists, no --overwrite
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other"}))
    capsys.readouterr()
    assert main(["--subjects", str(bad), "--out", str(tmp_path / "o3")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {bad}: not a subjects file")


def test_cli_counts_checks_inputs_before_creating_out(rated_dataset, tmp_path, capsys):
    """Issue 11 item 7: no --out folder after a refused input; a folder given as --subjects is named a directory."""
    from nnunetv2_mfns.cli.counts import main
    ds, sj, pred, _ = rated_dataset
    out = tmp_path / "never"
    assert main(["--subjects", str(ds), "--pred", f"M={pred}", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {ds}: is a directory, expected the subjects.json file"
    assert not out.exists()
    assert main(["--subjects", str(sj), "--pred", f"M={tmp_path / 'nothing'}", "--out", str(out)]) == 2
    assert "folder not found" in capsys.readouterr().err and not out.exists()
    rs = tmp_path / "rs.json"
    rs.write_text(json.dumps({"PVS_001": {"BG": 99}}))  # out of range: found while counting
    assert main(["--subjects", str(sj), "--pred", f"M={pred}", "--out", str(out), "--rating-slices", str(rs)]) == 2
    assert "rating_slices['BG'] = 99" in capsys.readouterr().err and not out.exists()
    assert main(["--subjects", str(sj), "--pred", f"M={pred}", "--out", str(out), "--rating-slices", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err and not out.exists()

"""Per-case metrics on hand-built arrays with hand-computed answers, and folder evaluation input checks."""
import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.evaluation.metrics import evaluate_case, evaluate_folders, hd95, metrics_wide

SP = (2.0, 0.5, 0.5)  # z, y, x mm: the paper's 2 mm slices, fine in-plane


def vol(shape=(4, 10, 10)):
    return np.zeros(shape, bool)


def test_hand_computed_two_lesions():
    gt, pred = vol(), vol()
    gt[1, 1:3, 1:3] = True  # lesion A: 4 voxels
    gt[1, 6, 6] = True      # lesion B: 1 voxel, missed
    pred[1, 1:3, 2:4] = True  # 2 voxels on A, 2 beside it (same predicted component)
    pred[3, 8, 8] = True      # isolated false positive
    m = evaluate_case(pred, gt, SP)
    # TP 2, FP 3, FN 3
    assert (m["tp_voxels"], m["fp_voxels"], m["fn_voxels"]) == (2, 3, 3)
    assert m["dsc"] == pytest.approx(4 / 10)
    assert m["sen"] == pytest.approx(2 / 5)
    assert m["ppv"] == pytest.approx(2 / 5)
    assert m["n_true_components"] == 2 and m["n_pred_components"] == 2
    assert m["lesion_recall"] == pytest.approx(0.5)
    assert m["lesion_precision"] == pytest.approx(0.5)
    assert m["lesion_f1"] == pytest.approx(0.5)
    assert m["vol_true_mm3"] == pytest.approx(5 * 0.5)
    assert m["vol_pred_mm3"] == pytest.approx(5 * 0.5)
    assert "hd95_mm" not in m  # off by default


@pytest.mark.parametrize("gt_on,pred_on,expect", [
    (False, False, {"dsc": 1.0, "sen": math.nan, "ppv": math.nan, "lesion_recall": math.nan,
                    "lesion_precision": math.nan, "lesion_f1": 1.0, "hd95_mm": 0.0}),
    (False, True, {"dsc": 0.0, "sen": math.nan, "ppv": 0.0, "lesion_recall": math.nan,
                   "lesion_precision": 0.0, "lesion_f1": 0.0, "hd95_mm": math.nan}),
    (True, False, {"dsc": 0.0, "sen": 0.0, "ppv": math.nan, "lesion_recall": 0.0,
                   "lesion_precision": math.nan, "lesion_f1": 0.0, "hd95_mm": math.nan}),
])
def test_empty_mask_conventions(gt_on, pred_on, expect):
    gt, pred = vol(), vol()
    gt[2, 3:5, 3:5] = gt_on
    pred[0, 7, 7] = pred_on
    m = evaluate_case(pred, gt, SP, compute_hd95=True)
    for k, v in expect.items():
        if math.isnan(v):
            assert math.isnan(m[k]), k
        else:
            assert m[k] == v, k


def test_one_voxel_lesions():
    gt, pred = vol(), vol()
    gt[1, 4, 4] = True
    pred[1, 4, 4] = True
    m = evaluate_case(pred, gt, SP)
    assert m["dsc"] == 1.0 and m["lesion_recall"] == 1.0 and m["lesion_precision"] == 1.0
    pred2 = vol()
    pred2[1, 4, 5] = True  # face neighbour: no overlap, so neither voxel nor lesion credit
    m2 = evaluate_case(pred2, gt, SP)
    assert m2["dsc"] == 0.0 and m2["lesion_recall"] == 0.0 and m2["lesion_precision"] == 0.0


def test_touching_lesions_depend_on_connectivity():
    gt, pred = vol(), vol()
    gt[1, 2, 2] = True
    gt[2, 3, 3] = True  # corner-touching: one component with 26-, two with 18- and 6-connectivity
    gt[1, 6, 6] = True
    gt[1, 6, 7] = True  # face-touching: one component for every connectivity
    pred[1, 2, 2] = True
    pred[1, 6, 6] = True
    m26 = evaluate_case(pred, gt, SP, connectivity=26)
    m6 = evaluate_case(pred, gt, SP, connectivity=6)
    m18 = evaluate_case(pred, gt, SP, connectivity=18)
    assert m26["n_true_components"] == 2 and m26["lesion_recall"] == 1.0
    assert m6["n_true_components"] == 3 and m6["lesion_recall"] == pytest.approx(2 / 3)
    assert m18["n_true_components"] == 3
    assert m26["dsc"] == m6["dsc"] == pytest.approx(2 * 2 / (4 + 2))
    with pytest.raises(MfnsInputError, match="connectivity"):
        evaluate_case(pred, gt, SP, connectivity=8)


def test_any_overlap_rule_is_many_to_many_and_only_an_option():
    """The pre-issue-11 rule, still available by name: merges and splits are not errors."""
    gt, pred = vol(), vol()
    gt[1, 2, 2] = True
    gt[1, 2, 5] = True
    pred[1, 2, 2:6] = True  # one predicted blob bridges both true lesions
    m = evaluate_case(pred, gt, SP, lesion_rule="any_overlap")
    assert m["n_true_detected"] == 2 and m["lesion_recall"] == 1.0
    assert m["n_pred_components"] == 1 and m["lesion_precision"] == 1.0
    assert m["n_merging_pred"] == 1
    gt2, pred2 = vol(), vol()
    gt2[1, 5, 1:8] = True  # one long true PVS ...
    pred2[1, 5, 1:3] = True
    pred2[1, 5, 5:8] = True  # ... broken into two predicted pieces
    pred2[3, 0, 0] = True  # plus an unmatched one
    m2 = evaluate_case(pred2, gt2, SP, lesion_rule="any_overlap")
    assert m2["lesion_recall"] == 1.0 and m2["n_split_true"] == 1
    assert m2["n_pred_matched"] == 2 and m2["lesion_precision"] == pytest.approx(2 / 3)
    assert m2["lesion_f1"] == pytest.approx(2 * (2 / 3) / (1 + 2 / 3))
    with pytest.raises(MfnsInputError, match="lesion_rule"):
        evaluate_case(pred2, gt2, SP, lesion_rule="touch")
    with pytest.raises(MfnsInputError, match="min_iou"):
        evaluate_case(pred2, gt2, SP, min_iou=0)


def _many_pvs(shape=(6, 40, 40), n=12, seed=0):
    """n separate short PVS-like tubes (3 voxels along z, one voxel wide) on a grid, seeded."""
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, bool)
    for k, (y, x) in enumerate([(y, x) for y in range(3, 37, 6) for x in range(3, 37, 6)][:n]):
        z = int(rng.integers(0, shape[0] - 3))
        gt[z:z + 3, y, x] = True
    return gt


def test_all_ones_prediction_does_not_score_well():
    """Issue 11: an all-ones prediction scored lesion recall = precision = F1 = 1.0 under any-overlap."""
    gt = _many_pvs()
    pred = np.ones_like(gt)
    m = evaluate_case(pred, gt, SP)
    assert m["dsc"] < 0.01
    assert m["lesion_recall"] == 0.0 and m["lesion_precision"] == 0.0 and m["lesion_f1"] == 0.0
    assert m["n_merging_pred"] == 1
    old = evaluate_case(pred, gt, SP, lesion_rule="any_overlap")
    assert old["lesion_f1"] == 1.0  # what the old default reported


def test_one_blob_covering_several_pvs_matches_at_most_one():
    gt = vol((4, 12, 12))
    gt[1, 2, 2] = gt[1, 2, 5] = gt[1, 2, 8] = True  # three one-voxel PVS in a row
    pred = vol((4, 12, 12))
    pred[1, 2, 2:9] = True  # one blob of 7 voxels over all three: IoU 1/7 with each
    m = evaluate_case(pred, gt, SP)
    assert m["n_true_detected"] == 1 and m["n_pred_matched"] == 1
    assert m["lesion_recall"] == pytest.approx(1 / 3) and m["lesion_precision"] == 1.0
    assert m["lesion_f1"] == pytest.approx(0.5)
    big = vol((4, 12, 12))
    big[0:3, 0:5, 0:10] = True  # a larger blob: IoU 1/150 with each, below 0.1, so no PVS is found
    mb = evaluate_case(big, gt, SP)
    assert mb["lesion_recall"] == 0.0 and mb["lesion_precision"] == 0.0 and mb["lesion_f1"] == 0.0


def test_one_pvs_split_in_three_counts_two_false_positives():
    gt = vol((4, 12, 12))
    gt[1, 5, 0:11] = True  # one long PVS of 11 voxels
    pred = vol((4, 12, 12))
    pred[1, 5, 0:3] = pred[1, 5, 4:7] = pred[1, 5, 8:11] = True  # three pieces of 3 (IoU 3/11 each)
    m = evaluate_case(pred, gt, SP)
    assert m["n_pred_components"] == 3 and m["n_split_true"] == 1
    assert m["lesion_recall"] == 1.0 and m["n_pred_matched"] == 1
    assert m["lesion_precision"] == pytest.approx(1 / 3)
    assert m["lesion_f1"] == pytest.approx(0.5)


def test_one_voxel_pvs_iou_threshold():
    gt = vol((5, 9, 9))
    gt[2, 4, 4] = True
    patch = vol((5, 9, 9))
    patch[2, 3:6, 3:6] = True  # 3x3 in-plane: IoU 1/9 >= 0.1, matched
    cube = vol((5, 9, 9))
    cube[1:4, 3:6, 3:6] = True  # 3x3x3: IoU 1/27 < 0.1, not matched
    assert evaluate_case(patch, gt, SP)["lesion_f1"] == 1.0
    mc = evaluate_case(cube, gt, SP)
    assert mc["lesion_f1"] == 0.0 and mc["dsc"] == pytest.approx(2 / 28)
    assert evaluate_case(cube, gt, SP, min_iou=0.03)["lesion_f1"] == 1.0


def test_matching_is_maximum_weight_not_greedy():
    """Hand-labelled components along one line of voxels: true A = x0-3, B = x4-5; predicted P = x0-2 + x4-5,
    Q = x3. IoU(A,P) = 3/6, IoU(B,P) = 2/5, IoU(A,Q) = 1/4. Best-IoU-first greedy pairing takes (A, P) and
    then has nothing left for B; the maximum-weight matching takes (A, Q) + (B, P) (total 0.65 > 0.5)."""
    from nnunetv2_mfns.evaluation.lesion_matching import match_lesions
    gt_lab = np.array([1, 1, 1, 1, 2, 2, 0, 0]).reshape(1, 1, 8)
    pred_lab = np.array([1, 1, 1, 2, 1, 1, 0, 0]).reshape(1, 1, 8)
    m = match_lesions(gt_lab, 2, pred_lab, 2)
    assert [(t, p) for t, p, _ in m.pairs] == [(1, 2), (2, 1)]
    assert [w for _, _, w in m.pairs] == pytest.approx([0.25, 0.4])
    assert m.n_true_detected == m.n_pred_matched == 2
    # a threshold above IoU(A, Q) leaves only the pair (A, P) or (B, P); the heavier one wins
    m2 = match_lesions(gt_lab, 2, pred_lab, 2, min_iou=0.3)
    assert [(t, p) for t, p, _ in m2.pairs] == [(1, 1)]


def test_hd95_hand_computed():
    gt, pred = vol(), vol()
    gt[1, 4, 2] = True
    pred[1, 4, 5] = True  # 3 voxels apart along x at 0.5 mm
    assert hd95(pred, gt, SP) == pytest.approx(1.5)
    pred[2, 4, 2] = True  # add a voxel one slice (2 mm) above the truth
    # pred->gt distances {1.5, 2.0}; gt->pred {min(1.5, 2.0)} = 1.5; P95 of {1.5, 2.0} = 1.975
    assert hd95(pred, gt, SP) == pytest.approx(max(np.percentile([1.5, 2.0], 95), 1.5))
    assert hd95(gt, gt, SP) == 0.0


def test_evaluate_case_shape_mismatch():
    with pytest.raises(MfnsInputError, match="shape"):
        evaluate_case(vol((2, 3, 3)), vol(), SP)


# ---------- folders ----------

def write(arr, path, spacing_xyz=(0.5, 0.5, 2.0), origin=(0.0, 0.0, 0.0), dtype=np.uint8):
    img = sitk.GetImageFromArray(np.asarray(arr).astype(dtype))
    img.SetSpacing(spacing_xyz)
    img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


@pytest.fixture
def folders(tmp_path):
    rng = np.random.default_rng(0)
    gt_dir, p1, p2 = tmp_path / "labelsTr", tmp_path / "m1", tmp_path / "m2"
    for d in (gt_dir, p1, p2):
        d.mkdir()
    arrays = {}
    for c in ("PVS_001", "PVS_002", "PVS_003"):
        g = rng.random((4, 12, 10)) > 0.9
        a = g.copy()
        a[0] = ~a[0]
        b = np.zeros_like(g)
        write(g, gt_dir / f"{c}.nii.gz")
        write(a, p1 / f"{c}.nii.gz")
        write(b, p2 / f"{c}.nii.gz")
        arrays[c] = (g, a, b)
    return tmp_path, gt_dir, {"A": p1, "B": p2}, arrays


def test_evaluate_folders_tidy_and_equal_to_evaluate_case(folders):
    root, gt_dir, preds, arrays = folders
    df = evaluate_folders(gt_dir, preds, {"PVS_001": 0, "PVS_002": 1}, compute_hd95=True, progress=False)
    assert list(df.columns) == ["case", "method", "fold", "metric", "value"]
    assert set(df["method"]) == {"A", "B"} and df["case"].nunique() == 3
    for c, (g, a, b) in arrays.items():
        ref = evaluate_case(a, g, SP, compute_hd95=True)
        got = df[(df["case"] == c) & (df["method"] == "A")].set_index("metric")["value"]
        for k, v in ref.items():
            assert got[k] == pytest.approx(v, nan_ok=True), (c, k)
    folds = df.drop_duplicates("case").set_index("case")["fold"]
    assert folds["PVS_001"] == 0 and folds["PVS_002"] == 1 and folds.isna()["PVS_003"]
    wide = metrics_wide(df)
    assert len(wide) == 6 and "dsc" in wide.columns


def test_evaluate_folders_parallel_matches_serial(folders):
    _, gt_dir, preds, _ = folders
    a = evaluate_folders(gt_dir, preds, progress=False)
    b = evaluate_folders(gt_dir, preds, num_workers=2, progress=False)
    assert a.equals(b)


def test_missing_cases_error_or_allowed(folders):
    _, gt_dir, preds, _ = folders
    (preds["B"] / "PVS_002.nii.gz").unlink()
    with pytest.raises(MfnsInputError, match=r"PVS_002\.nii\.gz.*missing.*--allow-missing"):
        evaluate_folders(gt_dir, preds, progress=False)
    df = evaluate_folders(gt_dir, preds, allow_missing=True, progress=False)
    assert df.attrs["missing"] == {"B": ["PVS_002"]}
    assert set(df.loc[df["method"] == "B", "case"]) == {"PVS_001", "PVS_003"}


def test_extra_case_is_an_error(folders):
    _, gt_dir, preds, arrays = folders
    write(arrays["PVS_001"][0], preds["A"] / "PVS_099.nii.gz")
    with pytest.raises(MfnsInputError, match=r"PVS_099\.nii\.gz.*has no label"):
        evaluate_folders(gt_dir, preds, allow_missing=True, progress=False)


def test_geometry_mismatch_names_the_file(folders):
    _, gt_dir, preds, arrays = folders
    write(arrays["PVS_002"][1], preds["A"] / "PVS_002.nii.gz", spacing_xyz=(0.5, 0.5, 3.0))
    with pytest.raises(MfnsInputError, match=r"m1/PVS_002\.nii\.gz: geometry differs.*spacing"):
        evaluate_folders(gt_dir, preds, progress=False)
    write(arrays["PVS_002"][1], preds["A"] / "PVS_002.nii.gz", origin=(5.0, 0.0, 0.0))
    with pytest.raises(MfnsInputError, match="origin"):
        evaluate_folders(gt_dir, preds, progress=False)
    write(arrays["PVS_002"][1][:, :-1], preds["A"] / "PVS_002.nii.gz")
    with pytest.raises(MfnsInputError, match="size"):
        evaluate_folders(gt_dir, preds, progress=False)


def test_non_binary_prediction_and_label_refused(folders):
    _, gt_dir, preds, arrays = folders
    a = arrays["PVS_003"][1].astype(np.uint8)
    a[0, 0, 0] = 2
    write(a, preds["A"] / "PVS_003.nii.gz")
    with pytest.raises(MfnsInputError, match=r"m1/PVS_003\.nii\.gz: prediction has values other than 0/1 \(e\.g\. 2\)"):
        evaluate_folders(gt_dir, preds, progress=False)
    write(a.astype(np.float32) * 0.5, preds["A"] / "PVS_003.nii.gz", dtype=np.float32)
    with pytest.raises(MfnsInputError, match="other than 0/1"):
        evaluate_folders(gt_dir, preds, progress=False)
    write(arrays["PVS_003"][1], preds["A"] / "PVS_003.nii.gz")
    write(a, gt_dir / "PVS_003.nii.gz")
    with pytest.raises(MfnsInputError, match=r"labelsTr/PVS_003\.nii\.gz: label has values"):
        evaluate_folders(gt_dir, preds, progress=False)


def test_cli_evaluate(folders, capsys):
    from nnunetv2_mfns.cli.evaluate import main
    root, gt_dir, preds, _ = folders
    splits = root / "mfns_splits.json"
    splits.write_text(json.dumps({"seed": 3, "folds": [{"fold": 0, "test": ["PVS_001", "PVS_002"]},
                                                       {"fold": 1, "test": ["PVS_003"]}]}))
    out = root / "out"
    argv = ["--gt", str(gt_dir), "--pred", f"A={preds['A']}", f"B={preds['B']}", "--splits", str(splits),
            "--out", str(out), "--reference", "A", "--hd95", "--n-boot", "200"]
    assert main(argv) == 0
    for f in ("metrics.csv", "summary.csv", "summary.md", "stats.csv"):
        assert (out / f).stat().st_size > 0
    import pandas as pd
    m = pd.read_csv(out / "metrics.csv")
    assert set(m.loc[m["case"] == "PVS_003", "fold"]) == {1}
    assert "hd95_mm" in set(m["metric"])
    s = pd.read_csv(out / "stats.csv")
    # B predicts nothing, so its PPV is undefined on every case: that row stays, with n = 0 and a note
    assert set(s["method"]) == {"B"} and (s["seed"] == 0).all()
    assert dict(zip(s["metric"], s["n"])) == {"dsc": 3, "sen": 3, "ppv": 0, "lesion_f1": 3}
    assert s.loc[s["metric"] == "ppv", "note"].item() == "no paired cases"
    capsys.readouterr()
    assert main(argv) == 2  # refuses to overwrite
    assert "use --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0
    capsys.readouterr()
    assert main(["--gt", str(gt_dir), "--pred", "nonsense", "--out", str(root / "o2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --pred 'nonsense': expected NAME=DIR")


def test_installed_console_script_reports_user_error(folders):
    """The real `mfns-evaluate` entry point: a non-binary prediction gives exit code 2 and one error line."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    exe = shutil.which("mfns-evaluate") or str(Path(sys.executable).parent / "mfns-evaluate")
    root, gt_dir, preds, arrays = folders
    a = arrays["PVS_001"][1].astype(np.uint8) * 3
    write(a, preds["A"] / "PVS_001.nii.gz")
    r = subprocess.run([exe, "--gt", str(gt_dir), "--pred", f"A={preds['A']}", "--out", str(root / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "PVS_001.nii.gz: prediction has values other than 0/1" in lines[0]


def test_one_folder_per_fold(folders):
    """A method may come as several folders (e.g. nnU-Net predictions per fold); a case in two is an error."""
    import shutil
    from nnunetv2_mfns.evaluation.io import parse_named_dirs
    root, gt_dir, preds, _ = folders
    f0, f1 = root / "fold0", root / "fold1"
    f0.mkdir()
    f1.mkdir()
    shutil.copy(preds["A"] / "PVS_001.nii.gz", f0)
    shutil.copy(preds["A"] / "PVS_002.nii.gz", f1)
    shutil.copy(preds["A"] / "PVS_003.nii.gz", f1)
    split = parse_named_dirs([f"A={f0}", f"A={f1}", f"B={preds['B']}"])
    assert split == {"A": [f0, f1], "B": preds["B"]}
    a = evaluate_folders(gt_dir, split, progress=False)
    b = evaluate_folders(gt_dir, preds, progress=False)
    assert a.equals(b)
    shutil.copy(preds["A"] / "PVS_002.nii.gz", f0)
    with pytest.raises(MfnsInputError, match=r"fold1/PVS_002\.nii\.gz: case PVS_002 of method 'A' is also in .*fold0"):
        evaluate_folders(gt_dir, split, progress=False)


def _fold_folders(root, preds, layout):
    """Copies method A's predictions into per-fold folders named fold_k (as mfns-compare writes them)."""
    import shutil
    out = []
    for k, cases in layout.items():
        d = root / "predictions" / "A" / f"fold_{k}"
        d.mkdir(parents=True)
        for c in cases:
            shutil.copy(preds["A"] / f"{c}.nii.gz", d / f"{c}.nii.gz")
        out.append(f"A={d}")
    return out


def test_cli_evaluate_refuses_a_case_outside_its_folds_test_group(folders, capsys):
    """Issue 11 item 3: a prediction in fold_0 of a case that fold 0 trained on must never be scored."""
    from nnunetv2_mfns.cli.evaluate import main
    root, gt_dir, preds, _ = folders
    splits = root / "mfns_splits.json"
    splits.write_text(json.dumps({"seed": 3, "folds": [
        {"fold": 0, "train": ["PVS_003"], "val": [], "test": ["PVS_001", "PVS_002"]},
        {"fold": 1, "train": ["PVS_001"], "val": ["PVS_002"], "test": ["PVS_003"]}]}))
    good = _fold_folders(root / "ok", preds, {0: ["PVS_001", "PVS_002"], 1: ["PVS_003"]})
    assert main(["--gt", str(gt_dir), "--pred", *good, "--splits", str(splits), "--out", str(root / "o_ok"),
                 "--n-boot", "200"]) == 0
    bad = _fold_folders(root / "bad", preds, {0: ["PVS_001", "PVS_003"], 1: ["PVS_002"]})
    capsys.readouterr()
    out = root / "o_bad"
    assert main(["--gt", str(gt_dir), "--pred", *bad, "--splits", str(splits), "--out", str(out),
                 "--n-boot", "200"]) == 2
    err = capsys.readouterr().err
    assert "fold_0/PVS_003.nii.gz: case PVS_003 of method 'A' is in folder fold_0 but not in fold 0's test group" in err
    assert "fold 0's train group; fold 1 tests it" in err
    assert not out.exists()  # refused before anything was written
    # the report refuses it too, and without --splits nothing can be checked (the old behaviour)
    from nnunetv2_mfns.evaluation.report import build_report
    with pytest.raises(MfnsInputError, match=r"fold_0/PVS_003\.nii\.gz: case PVS_003"):
        build_report(root / "r_bad", gt_dir, {"A": [root / "bad/predictions/A/fold_0", root / "bad/predictions/A/fold_1"]},
                     None, splits, n_boot=200)
    assert not (root / "r_bad").exists()
    # a folder named after a fold the splits file does not have
    odd = root / "odd" / "fold_7"
    odd.mkdir(parents=True)
    import shutil
    for c in ("PVS_001", "PVS_002", "PVS_003"):
        shutil.copy(preds["A"] / f"{c}.nii.gz", odd / f"{c}.nii.gz")
    assert main(["--gt", str(gt_dir), "--pred", f"A={odd}", "--splits", str(splits), "--out", str(root / "o7")]) == 2
    assert "named fold_7 but" in capsys.readouterr().err


def test_cli_evaluate_checks_inputs_before_creating_out(folders, capsys):
    """Issue 11 item 7: --out must not appear when an input is refused; a folder given as a file is named so."""
    from nnunetv2_mfns.cli.evaluate import main
    root, gt_dir, preds, _ = folders
    out = root / "never"
    assert main(["--gt", str(root / "no_labels"), "--pred", f"A={preds['A']}", "--out", str(out)]) == 2
    assert "label folder not found" in capsys.readouterr().err and not out.exists()
    assert main(["--gt", str(gt_dir), "--pred", f"A={preds['A']}", "--subjects", str(root), "--out", str(out)]) == 2
    assert f"{root}: is a directory, expected the subjects.json file" in capsys.readouterr().err
    assert main(["--gt", str(gt_dir), "--pred", f"A={preds['A']}", "--splits", str(root), "--out", str(out)]) == 2
    assert "is a directory" in capsys.readouterr().err
    # a broken prediction is found while the metrics are computed: still no folder
    (preds["B"] / "PVS_002.nii.gz").write_bytes(b"not a nifti")
    assert main(["--gt", str(gt_dir), "--pred", f"A={preds['A']}", f"B={preds['B']}", "--out", str(out)]) == 2
    assert "cannot be read as an image" in capsys.readouterr().err and not out.exists()


def test_cli_lesion_rule_option(folders, capsys):
    """The old rule is reachable only by name; --min-iou is checked before any work."""
    from nnunetv2_mfns.cli.evaluate import main
    import pandas as pd
    root, gt_dir, preds, arrays = folders
    allones = root / "allones"
    allones.mkdir()
    for c, (g, _, _) in arrays.items():
        write(np.ones_like(g, dtype=np.uint8), allones / f"{c}.nii.gz")
    base = ["--gt", str(gt_dir), "--pred", f"X={allones}", "--n-boot", "200"]
    assert main(base + ["--out", str(root / "new")]) == 0
    assert main(base + ["--out", str(root / "old"), "--lesion-rule", "any_overlap"]) == 0
    new, old = (pd.read_csv(root / d / "metrics.csv") for d in ("new", "old"))
    assert "rule `one_to_one` (one-to-one matching on IoU >= 0.1)" in (root / "new" / "summary.md").read_text()
    assert "rule `any_overlap` (old touch rule" in (root / "old" / "summary.md").read_text()
    f1 = lambda m: m.loc[(m["metric"] == "lesion_f1"), "value"]  # noqa: E731
    assert (f1(new) == 0).all()
    assert (f1(old).dropna() == 1).any()
    capsys.readouterr()
    assert main(base + ["--out", str(root / "bad"), "--min-iou", "1.5"]) == 2
    assert "--min-iou" in capsys.readouterr().err and not (root / "bad").exists()


def test_cli_pred_given_twice_keeps_both(folders):
    """README writes `--pred MfNS_De=a --pred nnUNet_3d=b`: both methods must be evaluated, not only the last."""
    from nnunetv2_mfns.cli.evaluate import main
    import pandas as pd
    root, gt_dir, preds, _ = folders
    out = root / "twice"
    assert main(["--gt", str(gt_dir), "--pred", f"A={preds['A']}", "--pred", f"B={preds['B']}", "--out", str(out),
                 "--reference", "A", "--n-boot", "200"]) == 0
    assert set(pd.read_csv(out / "metrics.csv")["method"]) == {"A", "B"}


def test_detection_by_size_bins_both_sides_and_gives_a_trivial_prediction_nothing():
    """size_detection.py: true PVS of 1, 4, 10 and 20 voxels; the prediction finds the 4- and 20-voxel ones
    and adds a 1-voxel false positive. An all-ones prediction finds no PVS of any size."""
    import pandas as pd

    from nnunetv2_mfns.evaluation.size_detection import size_markdown, size_table
    gt, pred = vol((6, 30, 30)), vol((6, 30, 30))
    gt[0, 0, 0] = True                         # 1 voxel, missed
    gt[2, 5, 5:9] = True                       # 4 voxels, found exactly
    gt[4, 10:12, 10:15] = True                 # 10 voxels, missed
    gt[1:5, 20:25, 20] = True                  # 20 voxels, found by a thinner piece (IoU 10/20)
    pred[2, 5, 5:9] = True
    pred[1:3, 20:25, 20] = True
    pred[5, 28, 28] = True                     # 1-voxel false positive
    m = evaluate_case(pred, gt, SP)
    assert [m[f"n_true_{b}"] for b in ("1-2vox", "3-5vox", "6-15vox", "16+vox")] == [1, 1, 1, 1]
    assert [m[f"lesion_recall_{b}"] for b in ("1-2vox", "3-5vox", "6-15vox", "16+vox")] == [0, 1, 0, 1]
    assert m["n_pred_1-2vox"] == 1 and m["lesion_precision_1-2vox"] == 0
    assert m["n_pred_6-15vox"] == 1 and m["lesion_precision_6-15vox"] == 1   # the 10-voxel piece of the 20
    assert math.isnan(m["lesion_precision_16+vox"])                          # no predicted component that large
    # the bins add up to the lesion metrics of the same pass
    assert sum(m[f"n_true_hit_{b}"] for b in ("1-2vox", "3-5vox", "6-15vox", "16+vox")) == m["n_true_detected"]

    ones = evaluate_case(np.ones_like(gt), gt, SP)
    assert all(ones[f"lesion_recall_{b}"] == 0 for b in ("1-2vox", "3-5vox", "6-15vox", "16+vox"))

    # pooled over cases in the report table: detected / true summed, NaN-skipping per-case mean
    rows = [("c1", "A", k, v) for k, v in m.items()] + [("c2", "A", k, v) for k, v in ones.items()]
    table = size_table(pd.DataFrame(rows, columns=["case", "method", "metric", "value"]), ["A"])
    big = table.set_index("size_bin").loc["16+vox"]
    assert (big["n_true"], big["n_detected"], big["recall_pooled"]) == (2, 1, 0.5)
    assert big["n_pred"] == 1 and big["n_matched"] == 0   # the all-ones blob is one unmatched 16+ component
    text = "\n".join(size_markdown(table, pd.DataFrame(), "A", 0.5))
    assert "| A | 16+ vox | 1 / 2 | 0.500 | 0 / 1 | 0.000 |" in text and "one voxel = 0.50 mm³" in text

    # paired recall tests: a method identical to the reference gets no p, and the row says why
    from nnunetv2_mfns.evaluation.size_detection import recall_metric
    from nnunetv2_mfns.evaluation.fold_stats import fold_level_tests
    both = pd.DataFrame([(c, m, int(c[1:]) - 1, k, v) for m in ("A", "B") for c, _, k, v in rows],
                        columns=["case", "method", "fold", "metric", "value"])
    tests = fold_level_tests(both, "A", tuple(recall_metric(b) for b in ("1-2vox", "16+vox")))
    text = "\n".join(size_markdown(size_table(both, ["A", "B"]), tests, "A", 0.5))
    # A's 16+ recall on the same two cases: c1 1 of 1, c2 0 of 1 -> (1 + 0) / 2
    assert "| B | 16+ vox | 2 / 2 | 0.500 | +0.000 | f0 +0.000; f1 +0.000 | NaN | NaN | NaN | NaN | all unit differences equal: t undefined" in text

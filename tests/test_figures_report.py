"""Summary table, and the full report (every figure) from a small FAKE result set (paired statistics:
test_stats_folds.py)."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.evaluation.confounder_fp import FILES as CONFOUNDER_FILES
from nnunetv2_mfns.evaluation.report import FIGURE_FILES, REPORT_FILES, build_report
from nnunetv2_mfns.evaluation.stats import summary_markdown, summary_table
from synthetic_results import make_fake_result_set


def tidy(values: dict[str, list[float]], metric="dsc"):
    rows = [(f"C{i:03d}", m, None, metric, v) for m, vs in values.items() for i, v in enumerate(vs)]
    return pd.DataFrame(rows, columns=["case", "method", "fold", "metric", "value"])


def test_summary_table_mean_sd_and_markdown():
    df = tidy({"MfNS_De": [0.6, 0.8, np.nan], "B": [0.5, 0.5, 0.8]})
    s = summary_table(df, "MfNS_De", metric_names=("dsc",))
    a = s[s["method"] == "MfNS_De"].iloc[0]
    assert a["n"] == 2 and a["mean"] == pytest.approx(0.7) and a["sd"] == pytest.approx(np.std([0.6, 0.8], ddof=1))
    md = summary_markdown(s)
    assert "| MfNS_De | 2 | 0.700 ± 0.141 |" in md and "| B | 3 | 0.600 ± 0.173 |" in md


def check_png(path):
    import matplotlib.image as mpimg
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] >= 150 and img.shape[1] >= 300, path
    # a non-trivial picture: many distinct colours, not one flat field
    assert img[..., :3].std() > 0.05 and len(np.unique(img[..., :3].reshape(-1, 3), axis=0)) > 20, path


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return make_fake_result_set(tmp_path_factory.mktemp("fake"), n_cases=5, shape=(14, 56, 48), pvs_per_case=(30, 90),
                                seed=3)


def test_build_report_full(fake, tmp_path):
    out = tmp_path / "report"
    prov = {"command": "mfns-report --gt ...", "commands": ["nnUNetv2_train 501 2d 0 -tr nnUNetTrainerMfNSDe"]}
    rep = build_report(out, fake.gt_dir, fake.pred_dirs, fake.subjects_json, fake.splits_json, provenance=prov,
                       compute_hd95=True, n_boot=500, seed=11)
    assert rep == out / "report.md"
    # the fake result set has no phantom confounder maps: the false-positives-by-cause files are not written
    expected = [f for f in REPORT_FILES if f not in CONFOUNDER_FILES]
    for f in expected:
        assert (out / f).is_file() and (out / f).stat().st_size > 200, f
    assert not any((out / f).exists() for f in CONFOUNDER_FILES)
    for f in FIGURE_FILES:
        check_png(out / f)
    text = rep.read_text()
    for f in expected[:-1]:
        assert f"({f})" in text, f
    assert "nnUNetv2_train 501 2d 0 -tr nnUNetTrainerMfNSDe" in text and "bootstrap seed: 11" in text
    assert "| fold | test group |" in text
    m = pd.read_csv(out / "metrics.csv")
    assert list(m.columns) == ["case", "method", "fold", "metric", "value"]
    assert m["fold"].notna().all() and m["case"].nunique() == 5 and set(m["method"]) == set(fake.pred_dirs)
    st = pd.read_csv(out / "stats.csv")
    assert set(st["method"]) == set(fake.pred_dirs) - {"MfNS_De"} and (st["n"] == 5).all() and (st["seed"] == 11).all()
    size = pd.read_csv(out / "detection_by_size.csv")
    assert set(size["method"]) == set(fake.pred_dirs) and set(size["size_bin"]) == {"1-2vox", "3-5vox", "6-15vox", "16+vox"}
    assert ((size["n_detected"] <= size["n_true"]) & (size["n_matched"] <= size["n_pred"])).all()
    assert "## Detection by PVS size" in text and "recall difference vs MfNS_De" in text
    c = pd.read_csv(out / "correlations.csv")
    assert {"model vs rater", "rater vs rater", "model vs truth"} <= set(c["comparison"])
    counts = pd.read_csv(out / "counts.csv")
    assert {"left", "right", "total"} == set(counts["side"])
    with pytest.raises(MfnsInputError, match="--overwrite"):
        build_report(out, fake.gt_dir, fake.pred_dirs, fake.subjects_json, None)


def test_build_report_one_method_three_subjects_no_subjects_file(fake, tmp_path):
    # three cases only, one method, no subjects.json: statistics and counts become notes, nothing crashes
    import shutil
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for c in fake.cases[:3]:
        shutil.copy(fake.gt_dir / f"{c}.nii.gz", gt)
        shutil.copy(fake.pred_dirs["UNet2D"] / f"{c}.nii.gz", pred)
    out = tmp_path / "r1"
    rep = build_report(out, gt, {"UNet2D": pred}, None, None, reference_method="MfNS_De", n_boot=200)
    text = rep.read_text()
    assert "No paired comparison" in text and "No counts" in text
    for f in FIGURE_FILES:
        assert (out / f).stat().st_size > 1000
    check_png(out / "fig3_metrics_boxplot.png")
    check_png(out / "fig4_overlays.png")
    check_png(out / "fig5_burden_mip.png")
    # again, now with the overwrite flag and an existing unrelated file that must survive
    (out / "notes.txt").write_text("mine")
    build_report(out, gt, {"UNet2D": pred}, None, None, overwrite=True, n_boot=200)
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_report(fake, tmp_path, capsys):
    from nnunetv2_mfns.cli.report import main
    out = tmp_path / "cli"
    argv = ["--gt", str(fake.gt_dir), "--pred", f"MfNS_De={fake.pred_dirs['MfNS_De']}",
            f"nnUNet_3d={fake.pred_dirs['nnUNet_3d']}", "--subjects", str(fake.subjects_json), "--splits",
            str(fake.splits_json), "--out", str(out), "--n-boot", "200"]
    assert main(argv) == 0
    assert "mfns-report --gt" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(argv) == 2 and "error:" in capsys.readouterr().err
    assert main(argv[:-2] + ["--n-boot", "5", "--overwrite"]) == 2
    assert capsys.readouterr().err.startswith("error: --n-boot")


def write_training_log(folder, dice, start="2026_11_25_10_00_00", first_epoch=0):
    """An nnU-Net training log as nnUNetTrainer.print_to_log_file writes it (numpy >= 2 repr of the dice)."""
    folder.mkdir(parents=True, exist_ok=True)
    ts = "2026-11-25 10:00:00.000000: "
    lines = [ts + "\n#######################################################################", ts + "Desired fold for training: 0"]
    for e, d in enumerate(dice, start=first_epoch):
        lines += [ts + "", ts + f"Epoch {e} ", ts + "Current learning rate: 0.05 ", ts + "train_loss -0.3 ",
                  ts + "val_loss -0.2 ", ts + f"Pseudo dice [np.float32({d})] ", ts + "Epoch time: 12.1 s "]
    (folder / f"training_log_{start}.txt").write_text("\n".join(lines) + "\n")


def test_convergence_parses_nnunet_log_and_judges_the_curve(tmp_path):
    from nnunetv2_mfns.evaluation.convergence import ema_curve, parse_training_log, read_convergence
    # the issue-10 MfNS_De curve (12 epochs): flat at the end; the stock 3d one: still rising
    flat = [.13, .25, .33, .49, .57, .59, .63, .65, .63, .65, .66, .64]
    write_training_log(tmp_path / "flat", flat)
    c = read_convergence(tmp_path / "flat")
    assert c.pseudo_dice == pytest.approx(flat)
    ema = [flat[0]]
    for d in flat[1:]:
        ema.append(0.9 * ema[-1] + 0.1 * d)  # nnU-Net's nnUNetLogger formula
    assert c.ema == pytest.approx(ema)
    # the raw curve has flattened (the EMA still climbs: it lags ~10 epochs); last 3 vs the 3 before: +0.013
    assert c.status == "flat" and c.window == 3 and c.gain == pytest.approx(0.65 - (0.63 + 0.65 + 0.63) / 3)
    write_training_log(tmp_path / "stock2d", [0] * 7 + [.57, .64, .64, .66, .67])  # issue 10: "still rising"
    assert read_convergence(tmp_path / "stock2d").status == "rising"
    plateau = [0.7] * 20
    write_training_log(tmp_path / "plateau", plateau)
    assert read_convergence(tmp_path / "plateau").status == "flat"
    rising = [0, 0, 0, 0, 0, 0, 0, 0, 0, .004, .06, .16]
    write_training_log(tmp_path / "rising", rising)
    r = read_convergence(tmp_path / "rising")
    assert r.status == "rising" and r.gain > 0.01
    write_training_log(tmp_path / "short", [0.1, 0.2, 0.3])
    assert read_convergence(tmp_path / "short").status == "too short"
    assert read_convergence(tmp_path / "nothing").status == "no log"
    # older numpy prints plain floats; several classes are averaged; nan ignored
    assert parse_training_log("2026-01-01 00:00:00.000000: Epoch 0\n"
                              "2026-01-01 00:00:01.000000: Pseudo dice [0.5, nan, 0.7]\n") == {0: pytest.approx(0.6)}
    # a run continued with --c writes a second log from epoch 10 on: the later file wins
    write_training_log(tmp_path / "resumed", [0.1] * 12)
    write_training_log(tmp_path / "resumed", [0.5, 0.6], start="2026_11_25_11_00_00", first_epoch=10)
    res = read_convergence(tmp_path / "resumed")
    assert len(res.pseudo_dice) == 12 and res.pseudo_dice[10:] == pytest.approx([0.5, 0.6])
    assert ema_curve([0.2, float("nan"), 0.4]) == pytest.approx([0.2, 0.2, 0.22])


def test_convergence_judged_on_our_validation_dsc_when_recorded(tmp_path):
    """A `study` model folder holds learning_curve.csv: the rule reads our DSC there, not the pseudo-Dice."""
    from nnunetv2_mfns.evaluation.convergence import read_convergence
    from nnunetv2_mfns.trainers.learning_curve import CURVE_FIELDS, append_curve_rows
    folder = tmp_path / "study"
    write_training_log(folder, [0.7] * 20)  # nnU-Net's pseudo-Dice: flat
    rows = [dict.fromkeys(CURVE_FIELDS, 0) | {"iterations": it, "case": c, "group": "val", "dsc": d}
            for it, dscs in ((50, (0.2, 0.3)), (100, (0.3, 0.4)), (150, (0.4, 0.5)), (200, (0.55, 0.65)))
            for c, d in zip(("A", "B"), dscs)]
    append_curve_rows(folder / "learning_curve.csv", rows)
    c = read_convergence(folder)
    assert c.validation_dsc == [(50, pytest.approx(0.25)), (100, pytest.approx(0.35)), (150, pytest.approx(0.45)),
                                (200, pytest.approx(0.6))]
    # last 2 points vs the 2 before: 0.525 - 0.3 -> still rising, although the pseudo-Dice is flat
    assert c.status == "rising" and c.gain == pytest.approx(0.225) and "validation DSC 0.600 after 200" in c.describe()
    (folder / "learning_curve.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MfnsInputError, match="not a learning curve"):
        read_convergence(folder)


def _training_provenance(tmp_path, budget, curves):
    folders = []
    for k, dice in enumerate(curves):
        d = tmp_path / f"model_{budget}" / f"fold_{k}"
        write_training_log(d, dice)
        folders.append(str(d))
    return {"trainer": f"nnUNetTrainerMfNSDe_{budget}", "configuration": "2d", "budget": budget,
            "epochs": len(curves[0]), "iterations_per_epoch": 8, "checkpoint": "checkpoint_final.pth",
            "model_folders": folders}


def test_report_states_its_budget_and_warns(fake, tmp_path):
    """Issue 10 item 5: report.md opens with the budget; ci/demo or a rising curve -> a one-line warning."""
    import shutil
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir()
    pred.mkdir()
    for c in fake.cases[:3]:
        shutil.copy(fake.gt_dir / f"{c}.nii.gz", gt)
        shutil.copy(fake.pred_dirs["MfNS_De"] / f"{c}.nii.gz", pred)

    def first_lines(prov, name):
        rep = build_report(tmp_path / name, gt, {"MfNS_De": pred}, None, None, provenance=prov, n_boot=200)
        return rep.read_text().splitlines()

    demo = first_lines({"training": {"MfNS_De": _training_provenance(tmp_path, "demo", [[.1, .2, .3]])}}, "demo")
    assert "fold_0: 3 epoch(s): too short to judge" in "\n".join(demo)
    assert demo[2].startswith("> **Warning: these numbers are not accuracy results.**")
    assert "MfNS_De: trained with the `demo` budget (3 epochs x 8 iterations)" in demo[2]
    text = "\n".join(demo)
    assert "## Training budget" in text and "| MfNS_De | nnUNetTrainerMfNSDe_demo | 2d | demo | 3 epochs x 8 iterations |" \
        " checkpoint_final.pth |" in text
    assert text.index("## Training budget") < text.index("## Data")

    full_rising = _training_provenance(tmp_path, "full", [[.5] * 20, [0.1 * i / 2 for i in range(20)]])
    rising = first_lines({"training": {"MfNS_De": full_rising}}, "rising")
    assert rising[2].startswith("> **Warning") and "validation curve still rising at the end (fold_1)" in rising[2]
    assert "`full` budget" not in rising[2]

    full_flat = _training_provenance(tmp_path, "full", [[.5] * 20, [.6] * 20])
    flat = first_lines({"training": {"MfNS_De": full_flat}}, "flat")
    assert not any(line.startswith("> **Warning") for line in flat[:6])
    assert "fold_0: flat (EMA pseudo-Dice 0.500 after 20 epochs; mean pseudo-Dice +0.000" in "\n".join(flat)

    with pytest.raises(MfnsInputError, match=r"provenance\['training'\]\['MfNS_De'\]\['model_folders'\]"):
        first_lines({"training": {"MfNS_De": {**full_flat, "model_folders": "fold_0"}}}, "bad")
    assert not (tmp_path / "bad").exists()
    unknown = first_lines(None, "unknown")
    assert unknown[2].startswith("> **Training budget unknown**")


def test_fig7_worst_cases_chosen_and_drawn(fake, tmp_path):
    """Issue 10 item 5 (paper Fig. 7): per method the lowest-DSC and the largest-miss case, chosen automatically,
    on the slices with most missed and most false-positive voxels."""
    import shutil
    import SimpleITK as sitk
    from nnunetv2_mfns.evaluation.failure_cases import error_slices, pick_failure_cases
    pred = tmp_path / "pred"
    shutil.copytree(fake.pred_dirs["MfNS_De"], pred)
    c_fp, c_miss = fake.cases[1], fake.cases[3]

    def read(p):
        img = sitk.ReadImage(str(p))
        return sitk.GetArrayFromImage(img).astype(bool), img

    # c_fp: the truth plus a big false-positive slab on one slice -> lowest DSC, nothing missed
    gt_fp, ref = read(fake.gt_dir / f"{c_fp}.nii.gz")
    p_fp = gt_fp.copy()
    z_fp = 2
    p_fp[z_fp, 5:45, 5:40] = True
    p_fp[z_fp] |= gt_fp[z_fp]
    # c_miss: the truth with every PVS of the slab's upper half removed -> largest missed volume, DSC still higher
    gt_miss, ref2 = read(fake.gt_dir / f"{c_miss}.nii.gz")
    p_miss = gt_miss.copy()
    p_miss[gt_miss.shape[0] // 2:] = False
    for arr, r, c in ((p_fp, ref, c_fp), (p_miss, ref2, c_miss)):
        img = sitk.GetImageFromArray(arr.astype(np.uint8))
        img.CopyInformation(r)
        sitk.WriteImage(img, str(pred / f"{c}.nii.gz"))
    out = tmp_path / "rep"
    rep = build_report(out, fake.gt_dir, {"MfNS_De": pred, "UNet2D": fake.pred_dirs["UNet2D"]}, fake.subjects_json,
                       fake.splits_json, n_boot=200)
    metrics = pd.read_csv(out / "metrics.csv")
    picks = pick_failure_cases(metrics, ["MfNS_De", "UNet2D"])
    mf = [(p.reason, p.case) for p in picks if p.method == "MfNS_De"]
    assert mf == [("lowest DSC", c_fp), ("largest missed volume", c_miss)]
    d = metrics[(metrics["method"] == "UNet2D") & (metrics["metric"] == "dsc")]
    un = [p for p in picks if p.method == "UNet2D"]
    assert un[0].case == d.sort_values(["value", "case"]).iloc[0]["case"] and un[0].reason.startswith("lowest DSC")
    # when the lowest-DSC case is also the largest miss, the next-largest miss is shown and labelled so
    fake_metrics = pd.DataFrame([(c, "M", None, k, v) for c, dsc, fn in (("A", 0.2, 50), ("B", 0.5, 30), ("C", 0.9, 0))
                                 for k, v in (("dsc", dsc), ("fn_voxels", fn), ("tp_voxels", 10), ("vol_true_mm3", 60 + fn))],
                                columns=["case", "method", "fold", "metric", "value"])
    assert [(p.reason, p.case) for p in pick_failure_cases(fake_metrics, ["M"])] == [
        ("lowest DSC, largest missed volume", "A"), ("2nd-largest missed volume", "B")]
    # slices: most missed first, then most false positives
    sl = error_slices(gt_miss, p_miss)
    fn_per_slice = (gt_miss & ~p_miss).sum(axis=(1, 2))
    assert sl[0] == ("most missed", int(np.argmax(fn_per_slice)))
    assert error_slices(gt_fp, p_fp) == [("most false positives", z_fp)]
    check_png(out / "fig7_failure_cases.png")
    text = rep.read_text()
    assert "## Worst cases (Fig. 7)" in text and "![Fig. 7](fig7_failure_cases.png)" in text
    assert f"| MfNS_De | lowest DSC | {c_fp} |" in text and f"| MfNS_De | largest missed volume | {c_miss} |" in text
    assert f"{z_fp} (most false positives)" in text

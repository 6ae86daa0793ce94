"""benchmarks/long_budget.py (issue 22's 2000- vs 500-iteration check): LR parsing from nnU-Net's logs of a resumed
run, and the report's pairing of test subjects across budgets and methods by case name, checked against numbers
worked out by hand on a small made-up result set whose case order differs between files."""
from pathlib import Path

import pandas as pd
import pytest

from benchmark_modules import load_benchmark


@pytest.fixture(scope="module")
def long_budget():
    return load_benchmark("long_budget")


def test_learning_rates_of_a_resumed_run_take_the_later_log(tmp_path, long_budget):
    (tmp_path / "training_log_2026_1_1_00_00_00.txt").write_text(
        "2026-01-01 00:00:01.0: Epoch 0 \n2026-01-01 00:00:01.1: Current learning rate: 0.01 \n"
        "2026-01-01 00:01:01.0: Epoch 1 \n2026-01-01 00:01:01.1: Current learning rate: 0.009 \n"
        "2026-01-01 00:02:01.0: Epoch 2 \n2026-01-01 00:02:01.1: Current learning rate: 0.5 \n")  # interrupted
    (tmp_path / "training_log_2026_1_1_01_00_00.txt").write_text(
        "2026-01-01 01:00:01.0: Epoch 2 \n2026-01-01 01:00:01.1: Current learning rate: 0.008 \n"
        "2026-01-01 01:01:01.0: Epoch 3 \n2026-01-01 01:01:01.1: Current learning rate: 0.007 \n")
    lr = long_budget.learning_rates(tmp_path)
    assert lr["epoch"].tolist() == [0, 1, 2, 3]
    assert lr["lr"].tolist() == [0.01, 0.009, 0.008, 0.007]


def _metrics(method: str, fold: int, dsc: dict) -> pd.DataFrame:
    rows = []
    for case, value in dsc.items():
        for metric, v in (("dsc", value), ("sen", value + 0.1), ("ppv", value - 0.1), ("lesion_f1", value / 2)):
            rows.append({"case": case, "method": method, "fold": fold, "metric": metric, "value": v})
    return pd.DataFrame(rows)


def _curve(trainer: str, fold: int, points: dict) -> pd.DataFrame:
    rows = []
    for epoch, (iterations, dscs) in points.items():
        for case, d in dscs.items():
            rows.append({"trainer": trainer, "configuration": "2d", "fold": fold, "epoch": epoch,
                         "iterations": iterations, "cpu_s": 1.0 * iterations, "wall_s": 1.0, "pseudo_dice": 0.5,
                         "ema_pseudo_dice": 0.5, "group": "val", "case": case, "dsc": d, "sen": d, "ppv": d})
    return pd.DataFrame(rows)


def test_report_pairs_subjects_by_name_across_budgets_and_methods(tmp_path, long_budget):
    raw = tmp_path / "raw"
    # MfNS_De fold 0: study test DSC a=0.70, b=0.80; long a=0.74, b=0.90 (rows in another order) -> +0.07
    for budget, dsc in (("study", {"a": 0.70, "b": 0.80}), ("long", {"b": 0.90, "a": 0.74})):
        d = raw / budget / "MfNS_De"
        d.mkdir(parents=True)
        _metrics("MfNS_De", 0, dsc).to_csv(d / "fold_0_metrics.csv", index=False)
    # UNet2D fold 0: study has a third subject c that MfNS_De lacks (left out of the pairing)
    for budget, dsc in (("study", {"c": 0.10, "b": 0.78, "a": 0.72}), ("long", {"a": 0.70, "b": 0.80})):
        d = raw / budget / "UNet2D"
        d.mkdir(parents=True)
        _metrics("UNet2D", 0, dsc).to_csv(d / "fold_0_metrics.csv", index=False)
    # curves: long MfNS_De at 500 / 2000 iterations with LRs 0.05 (peak) and 0.0005; study at 500
    # a point at epoch e follows e finished epochs: its LR is that of epoch e - 1
    _curve("nnUNetTrainerMfNSDe_long", 0, {20: (500, {"v1": 0.6, "v2": 0.7}),
                                            80: (2000, {"v1": 0.8, "v2": 0.9})}).to_csv(
        raw / "long" / "MfNS_De" / "fold_0_curve.csv", index=False)
    pd.DataFrame({"epoch": [0, 19, 79], "lr": [0.05, 0.025, 0.0005]}).to_csv(
        raw / "long" / "MfNS_De" / "fold_0_lr.csv", index=False)
    _curve("nnUNetTrainerMfNSDe_study", 0, {20: (500, {"v1": 0.70, "v2": 0.74})}).to_csv(
        raw / "study" / "MfNS_De" / "fold_0_curve.csv", index=False)
    text = long_budget.report(tmp_path, [0])
    lines = text.splitlines()
    mfns_val = next(x for x in lines if x.startswith("| MfNS_De | 0 | 0.720 |"))
    # long at 500: 0.650 with LR 0.50 of the peak; at 2000: 0.850 (0.01); long end - study end = 0.850 - 0.720
    assert "| 0.650 (0.50) |" in mfns_val and "| 0.850 (0.01) |" in mfns_val and mfns_val.endswith("| +0.130 |")
    mfns_test = next(x for x in lines if x.startswith("| MfNS_De | 0 | 2 |"))
    assert "| 0.750 -> 0.820 (+0.070) |" in mfns_test  # DSC, pairs (a, b) by name
    unet_test = next(x for x in lines if x.startswith("| UNet2D | 0 | 2 |"))
    assert "| 0.750 -> 0.750 (+0.000) |" in unet_test   # c has no long value: left out
    # ordering: MfNS_De - UNet2D on the same subjects: study (0.70-0.72 + 0.80-0.78)/2 = 0.000,
    # long (0.74-0.70 + 0.90-0.80)/2 = +0.070
    order = next(x for x in lines if x.startswith("| UNet2D | 0 | +"))
    assert order == "| UNet2D | 0 | +0.000 (2 subjects) | +0.070 (2 subjects) |"
    assert (tmp_path / "long_vs_study_curves.png").stat().st_size > 1000
    # no run at all: said so, not filled in
    assert any(x.startswith("| nnUNet_3d | 0 |") and "not run" in x for x in lines)

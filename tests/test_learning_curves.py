"""benchmarks/learning_curves.py: method parsing, the budget subclass, and the outputs from a curve CSV (no training)."""
import csv
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def lc():
    spec = importlib.util.spec_from_file_location("learning_curves", ROOT / "benchmarks" / "learning_curves.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_methods_and_aliases(lc):
    assert lc.parse_method("MfNS_De") == ("nnUNetTrainerMfNSDe", "2d")
    assert lc.parse_method("nnUNet_3d") == ("nnUNetTrainer", "3d_fullres")
    assert lc.parse_method("nnUNetTrainerMfNSDe_ResCBAM") == ("nnUNetTrainerMfNSDe_ResCBAM", "2d")
    assert lc.parse_method("X@3d_lowres") == ("X", "3d_lowres")


def test_budget_class_keeps_the_trainer_and_sets_the_schedule(lc):
    from nnunetv2_mfns.trainers import nnUNetTrainerMfNSDe_NoDS
    cls = lc.budgeted_class(nnUNetTrainerMfNSDe_NoDS, 7, 5, 2)
    assert issubclass(cls, nnUNetTrainerMfNSDe_NoDS) and cls.__name__ == "nnUNetTrainerMfNSDe_NoDS__curve7x5"


def _rows(method, points):
    rows = []
    for it, dscs in points:
        for group, case, dsc in zip(["val", "val", "test"], ["A_001", "A_002", "A_003"], dscs):
            rows.append(dict(method=method, trainer=method, configuration="2d", fold=0, epoch=it // 10, iterations=it,
                             cpu_s=it * 1.5, wall_s=it * 3.0, pseudo_dice=0.5, ema_pseudo_dice=0.4, group=group,
                             case=case, dsc=dsc, sen=dsc, ppv=dsc, seed=0))
    return rows


def test_outputs_from_curve_csv(lc, tmp_path):
    work, out = tmp_path / "work", tmp_path / "docs" / "learning_curves_x"
    (work / "curves").mkdir(parents=True)
    fast = _rows("fast", [(10, [0.5, 0.7, 0.6]), (20, [0.8, 0.8, 0.8]), (30, [0.8, 0.8, 0.8]), (40, [0.8, 0.8, 0.8])])
    slow = _rows("slow", [(10, [0.0, 0.0, 0.0]), (20, [0.3, 0.3, 0.3])])
    for name, rows in (("fast", fast), ("slow", slow)):
        with open(work / "curves" / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=lc.CSV_FIELDS)
            w.writeheader()
            w.writerows(rows)
    lc.write_outputs(work, out, {"commands": ["python benchmarks/learning_curves.py run ..."], "seed": 0,
                                 "title": "test"})
    assert (out / "learning_curves.png").stat().st_size > 1000
    with open(out / "learning_curves.csv") as f:
        assert len(list(csv.DictReader(f))) == len(fast) + len(slow)
    readme = (out / "README.md").read_text()
    # fast: plateau = mean of the last 3 points = 0.8, 95% of it first reached at iteration 20
    assert "| fast | 4 | 0.800 | 0.800 | 0.800 |" in readme and "| 0.800 | 20 | 1.50 |" in readme
    # slow stopped at 20 of 40 iterations: no plateau claimed
    assert "n/a (curve ends at 20 of 40 iterations)" in readme
    curves = lc.summarise(fast)
    assert curves["fast"][0]["dsc_val"] == pytest.approx(0.6) and curves["fast"][0]["dsc_test"] == pytest.approx(0.6)
    assert lc.plateau_stats(curves["fast"]) == (pytest.approx(0.8), 20)

"""Learning curves (issue 10): the trainers' own curve recording (real nnU-Net training on a tiny dataset,
resumed), the `study` budget, and the multi-fold outputs (evaluation/learning_curves.py through
benchmarks/learning_curves.py report)."""
import csv
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark_modules import load_benchmark
from tiny_dataset import make_tiny_dataset, nnunet_env

from nnunetv2_mfns.evaluation import learning_curves as curves

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def lc():
    return load_benchmark("learning_curves")


@pytest.fixture(scope="module")
def sr():
    return load_benchmark("study_report")


@pytest.fixture(scope="module")
def ss():
    return load_benchmark("study_status")


def test_methods_aliases_and_names_from_results_folders(lc):
    from nnunetv2_mfns.errors import MfnsInputError
    assert lc.parse_method("MfNS_De") == ("nnUNetTrainerMfNSDe", "2d")
    assert lc.parse_method("nnUNet_3d") == ("nnUNetTrainer", "3d_fullres")
    assert lc.parse_method("X@3d_fullres") == ("X", "3d_fullres")
    with pytest.raises(MfnsInputError, match="configuration"):
        lc.parse_method("X@3d_lowres")
    assert curves.method_name("nnUNetTrainerMfNSDe_study", "2d") == "MfNS_De"
    assert curves.method_name("nnUNetTrainer_study", "3d_fullres") == "nnUNet_3d"
    assert curves.method_name("nnUNetTrainer_study", "2d") == "nnUNet_2d"
    assert curves.method_name("nnUNetTrainerMfNSDe_ResCBAM__curve7x5", "2d") == "nnUNetTrainerMfNSDe_ResCBAM"
    assert curves.method_name("nnUNetTrainerMfNSDe_NoDS_short", "3d_fullres") == "nnUNetTrainerMfNSDe_NoDS@3d_fullres"
    # a suffix that is not a budget stays part of the name
    assert curves.method_name("nnUNetTrainerMfNSDe_50epochs", "2d") == "nnUNetTrainerMfNSDe_50epochs"


def _write_curve(results: Path, folder: str, fold: int, dsc: float) -> None:
    path = results / folder / f"fold_{fold}" / "learning_curve.csv"
    path.parent.mkdir(parents=True)
    path.write_text("trainer,configuration,fold,epoch,iterations,cpu_s,wall_s,pseudo_dice,ema_pseudo_dice,group,"
                    f"case,dsc,sen,ppv\nx,2d,{fold},2,50,10,20,0.5,0.4,val,PVS_001,{dsc},{dsc},{dsc}\n")


def test_report_copies_raw_curves_named_by_results_folder(lc, tmp_path, capsys):
    """Stock 2d and 3d_fullres share the trainer class nnUNetTrainer_study: the raw copies are named by the
    results folder, so neither overwrites the other, and the report names them nnUNet_2d and nnUNet_3d."""
    results = tmp_path / "results" / "Dataset613_PVSStudy"
    _write_curve(results, "nnUNetTrainer_study__nnUNetPlans__2d", 0, 0.61)
    _write_curve(results, "nnUNetTrainer_study__nnUNetPlans__3d_fullres", 0, 0.73)
    _write_curve(results, "nnUNetTrainer_study__nnUNetPlans__3d_fullres", 1, 0.75)
    out = tmp_path / "docs" / "learning_curves_t"
    assert lc.main(["report", "--results", str(results), "--out", str(out), "--copy-raw"]) == 0
    assert "3 raw learning_curve.csv files copied" in capsys.readouterr().out
    raw = sorted(p.relative_to(out / "raw").as_posix() for p in (out / "raw").rglob("*.csv"))
    assert raw == ["nnUNetTrainer_study__nnUNetPlans__2d/fold_0.csv",
                   "nnUNetTrainer_study__nnUNetPlans__3d_fullres/fold_0.csv",
                   "nnUNetTrainer_study__nnUNetPlans__3d_fullres/fold_1.csv"]
    assert ",0.73,0.73,0.73" in (out / "raw" / raw[1]).read_text()
    readme = (out / "README.md").read_text()
    assert "| nnUNet_2d | 0 | 1 | 1 | 50 | 0.610 |" in readme and "| nnUNet_3d | 0,1 | 2 | 1 | 50 | 0.740 |" in readme


def test_study_budget_records_a_curve_and_others_do_not():
    from nnunetv2_mfns.trainers import (nnUNetTrainer_study, nnUNetTrainerMfNSDe_ci, nnUNetTrainerMfNSDe_study,
                                        nnUNetTrainerUNet2D_PaperRecipe_study)
    from nnunetv2_mfns.trainers.budgets import BUDGETS
    from nnunetv2_mfns.trainers.nnUNetTrainerMfNSDe import nnUNetTrainerMfNSDe
    assert BUDGETS["study"].curve_every > 0 and BUDGETS["ci"].curve_every == 0
    for cls in (nnUNetTrainerMfNSDe_study, nnUNetTrainerUNet2D_PaperRecipe_study, nnUNetTrainer_study):
        assert hasattr(cls, "_record_curve_point"), cls
    assert issubclass(nnUNetTrainerMfNSDe_study, nnUNetTrainerMfNSDe)
    assert not hasattr(nnUNetTrainerMfNSDe_ci, "_record_curve_point")


def test_budgeted_class_keeps_the_trainer(lc):
    from nnunetv2_mfns.trainers import nnUNetTrainerMfNSDe_NoDS
    cls = lc.budgeted_class(nnUNetTrainerMfNSDe_NoDS, 7, 5, 2, 3)
    assert issubclass(cls, nnUNetTrainerMfNSDe_NoDS) and cls.__name__ == "nnUNetTrainerMfNSDe_NoDS__curve7x5"


def test_curve_recorded_during_real_training_and_resumed(tmp_path):
    """Tiny dataset, nnU-Net's run_training in a subprocess: 2 epochs x 1 iteration, a point every epoch on
    fold 0's validation cases. Then the final checkpoint is removed and the run resumed from
    checkpoint_latest (epoch 1): it retrains epoch 2 and must not write that point twice."""
    env = nnunet_env(tmp_path)
    _, name = make_tiny_dataset(Path(env["nnUNet_raw"]), dataset_id=991, n_train=6, n_test=0, seed=0)
    subprocess.run([BIN / "nnUNetv2_plan_and_preprocess", "-d", "991", "-c", "2d", "-np", "1"], env=env,
                   check=True, capture_output=True)
    env["nnUNet_n_proc_DA"] = "0"  # augmentation in the training process: its CPU time is in the curve
    cmd = [sys.executable, str(ROOT / "benchmarks" / "learning_curves.py"), "_train", "--work", str(tmp_path),
           "--dataset-id", "991", "--fold", "0", "--epochs", "2", "--iters", "1", "--val-iters", "1",
           "--eval-every", "1", "--method", "UNet2D"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = (Path(env["nnUNet_results"]) / name / "nnUNetTrainerUNet2D_PaperRecipe__curve2x1__nnUNetPlans__2d"
              / "fold_0")
    with open(folder / "learning_curve.csv") as f:
        rows = list(csv.DictReader(f))
    n_val = 2  # nnU-Net's own 5-fold split of 6 cases: fold 0 validates 2
    assert [int(r["iterations"]) for r in rows] == [1] * n_val + [2] * n_val
    assert all(r["group"] == "val" and 0.0 <= float(r["dsc"]) <= 1.0 for r in rows)
    cpu = [float(r["cpu_s"]) for r in rows]
    assert 0 < cpu[0] <= cpu[-1]
    assert "learning curve: epoch 2" in (folder / next(p.name for p in folder.glob("training_log_*.txt"))).read_text()

    # interrupted after the last epoch's checkpoint but before its curve point (nnU-Net deletes
    # checkpoint_latest at the end, so the final one stands in for it): resuming takes the point, once
    (folder / "checkpoint_final.pth").rename(folder / "checkpoint_latest.pth")
    with open(folder / "learning_curve.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows[:n_val])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "start epoch 2" in proc.stdout
    with open(folder / "learning_curve.csv") as f:
        again = list(csv.DictReader(f))
    assert [int(r["iterations"]) for r in again] == [1] * n_val + [2] * n_val
    assert [r["dsc"] for r in again[n_val:]] == [r["dsc"] for r in rows[n_val:]]  # same weights, same cases


def _rows(method, fold, points):
    rows = []
    for it, dscs in points:
        for case, dsc in zip(["A_001", "A_002"], dscs):
            rows.append(dict(method=method, trainer=method, configuration="2d", fold=str(fold), epoch=it // 10,
                             iterations=it, cpu_s=it * 1.5, wall_s=it * 3.0, pseudo_dice=0.5, ema_pseudo_dice=0.4,
                             group="val", case=f"{case}_{fold}", dsc=dsc, sen=dsc, ppv=dsc))
    return rows


def test_outputs_pool_folds_and_claim_no_plateau_for_unfinished_curves(lc, tmp_path):
    out = tmp_path / "docs" / "learning_curves_x"
    fast = (_rows("fast", 0, [(10, [0.5, 0.7]), (20, [0.8, 0.8]), (30, [0.8, 0.8]), (40, [0.8, 0.8])])
            + _rows("fast", 1, [(10, [0.6, 0.6]), (20, [0.6, 0.6]), (30, [0.6, 0.6]), (40, [0.6, 0.6])]))
    # slow: fold 0 reached 20 iterations, fold 1 only 10 -> its curve stops at the last point both folds have
    slow = _rows("slow", 0, [(10, [0.0, 0.0]), (20, [0.3, 0.3])]) + _rows("slow", 1, [(10, [0.2, 0.2])])
    curves.write_outputs(fast + slow, out, {"commands": ["python benchmarks/learning_curves.py report ..."], "seed": 0,
                                        "title": "test", "budget_iterations": 40})
    assert (out / "learning_curves.png").stat().st_size > 1000
    with open(out / "learning_curves.csv") as f:
        assert len(list(csv.DictReader(f))) == len(fast) + len(slow)
    readme = (out / "README.md").read_text()
    # fast: pooled DSC 0.6 at 10 (4 cases), then 0.7; plateau 0.7, 95% of it (0.665) first at 20; flat tail
    assert "| fast | 0,1 | 4 | 4 | 40 | 0.700 | 0.700 / 0.700 | 0.700 | +0.000 | 20 | 1.50 |" in readme
    assert "| slow | 0,1 | 4 | 1 | 10 | 0.100 |" in readme and "n/a (ends at 10 of 40)" in readme
    # a method with a finished fold pools only finished folds; the one still training is named
    partial = fast + _rows("fast", 2, [(10, [0.0, 0.0])])
    curves.write_outputs(partial, out, {"title": "test", "budget_iterations": 40})
    readme = (out / "README.md").read_text()
    assert "| fast | 0,1 | 4 | 4 | 40 | 0.700 |" in readme and "fast: fold 2 at 10 iterations" in readme
    summary = curves.summarise(fast)
    assert summary["fast"][0]["dsc"] == pytest.approx(0.6) and summary["fast"][0]["n_folds"] == 2
    assert curves.plateau_stats(summary["fast"]) == (pytest.approx(0.7), 20, pytest.approx(0.0))


def test_study_report_merges_the_per_job_workdirs(sr, tmp_path):
    """benchmarks/study_report.py: finished jobs only (predictions + provenance), folds filter, one training
    entry per method with every fold's model folder and split digest."""
    import json
    for method, fold, finished in (("MfNS_De", 0, True), ("MfNS_De", 1, True), ("MfNS_De", 2, False),
                                   ("UNet2D", 0, True)):
        wd = tmp_path / f"w_{method}_f{fold}"
        pred = wd / "predictions_best" / method / f"fold_{fold}"
        pred.mkdir(parents=True)
        if finished:
            (pred / "PVS_001.nii.gz").write_bytes(b"x")
            (wd / "provenance.json").write_text(json.dumps({
                "dataset": "Dataset613_PVSStudy", "training budget": "study: ...",
                "training": {method: {"trainer": f"{method}_study", "budget": "study",
                                      "model_folders": [f"/r/{method}/fold_{fold}"], "split_digests": {str(fold): f"d{fold}"}}},
                "mfns-compare command": f"mfns-compare --methods {method} --folds {fold}"}))
    jobs = sr.finished_jobs(tmp_path, ["MfNS_De", "UNet2D"])
    assert {m: [f for f, _ in runs] for m, runs in jobs.items()} == {"MfNS_De": [0, 1], "UNet2D": [0]}
    assert [f for f, _ in sr.finished_jobs(tmp_path, ["MfNS_De"], [1])["MfNS_De"]] == [1]
    prov = sr.merged_provenance(jobs)
    assert prov["training"]["MfNS_De"]["model_folders"] == ["/r/MfNS_De/fold_0", "/r/MfNS_De/fold_1"]
    assert prov["training"]["MfNS_De"]["split_digests"] == {"0": "d0", "1": "d1"}
    assert prov["folds"] == {"MfNS_De": [0, 1], "UNet2D": [0]} and len(prov["jobs"]) == 3


def test_study_tools_refuse_bad_input_and_write_nothing(lc, sr, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="no such folder"):
        sr.main(["--study", str(tmp_path / "missing"), "--out", str(out), "--methods", "MfNS_De"])
    with pytest.raises(SystemExit, match="no finished job for MfNS_De"):
        sr.main(["--study", str(tmp_path), "--out", str(out), "--methods", "MfNS_De"])
    with pytest.raises(SystemExit):
        sr.main(["--study", str(tmp_path), "--out", str(out), "--methods", "MfNS_De", "--folds", "0,x"])
    assert "expected comma-separated fold numbers" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="not found"):
        lc.main(["report", "--results", str(tmp_path / "missing"), "--out", str(out)])
    with pytest.raises(SystemExit, match="no learning-curve rows"):
        lc.main(["report", "--results", str(tmp_path), "--out", str(out)])
    assert not out.exists()
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "run_study.sh")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "usage:" in proc.stderr


def test_study_status_tells_what_is_tested_trained_and_left(ss, tmp_path, capsys):
    """benchmarks/study_status.py: tested = predictions + provenance; iterations from the curve state; the CPU
    time left at the method's measured price; the 2d and 3d_fullres stock folders are told apart."""
    import json
    results = tmp_path / "results" / "Dataset613_PVSStudy"

    def state(folder, epochs, cpu_per_epoch):
        folder.mkdir(parents=True)
        (folder / "learning_curve_state.json").write_text(json.dumps(
            {"epochs": {str(e): {"cpu_s": e * cpu_per_epoch, "wall_s": 0.0} for e in range(1, epochs + 1)}}))

    mfns = results / "nnUNetTrainerMfNSDe_study__nnUNetPlans__2d"
    state(mfns / "fold_0", 20, 100.0)        # 500 iterations at 4 CPU s each
    state(mfns / "fold_1", 4, 100.0)         # 100 of 500
    (mfns / "fold_2").mkdir()
    (mfns / "fold_2" / "training_log_2026_11_25_10_00_00.txt").write_text("")
    state(results / "nnUNetTrainer_study__nnUNetPlans__3d_fullres" / "fold_0", 20, 250.0)
    pred = tmp_path / "w_MfNS_De_f0" / "predictions_best" / "MfNS_De" / "fold_0"
    pred.mkdir(parents=True)
    (pred / "PVS_001.nii.gz").write_bytes(b"x")
    (tmp_path / "w_MfNS_De_f0" / "provenance.json").write_text("{}")

    rows = ss.study_status(tmp_path, ["MfNS_De", "nnUNet_3d", "nnUNet_2d"], [0, 1, 2, 3])
    by = {(r["method"], r["fold"]): r for r in rows}
    assert by[("MfNS_De", 0)]["state"] == "tested" and by[("MfNS_De", 0)]["training_cpu_s_left"] == 0
    assert by[("MfNS_De", 1)]["state"] == "100 of 500 iterations trained (stopped or running)"
    assert by[("MfNS_De", 1)]["cpu_s_per_iteration"] == pytest.approx(4.0)
    assert by[("MfNS_De", 1)]["training_cpu_s_left"] == pytest.approx(400 * 4.0)
    assert by[("MfNS_De", 2)]["state"] == "started, no epoch finished"
    assert by[("MfNS_De", 3)]["state"] == "not started" and by[("MfNS_De", 3)]["training_cpu_s_left"] == 2000
    assert by[("nnUNet_3d", 0)]["state"] == "trained, not yet tested"
    assert by[("nnUNet_3d", 1)]["training_cpu_s_left"] == pytest.approx(500 * 10.0)
    assert by[("nnUNet_2d", 0)]["state"] == "not started" and by[("nnUNet_2d", 0)]["training_cpu_s_left"] is None
    assert ss.main(["--study", str(tmp_path), "--methods", "MfNS_De,nnUNet_2d", "--folds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert "| MfNS_De | 1 | 100 of 500 iterations trained (stopped or running) | 4.00 | 27 min |" in out
    assert "0.4 single-thread hours, plus 2 job(s) of methods not measured yet" in out
    with pytest.raises(SystemExit, match="not a run_study.sh folder"):
        ss.main(["--study", str(tmp_path / "results"), "--methods", "MfNS_De"])
    with pytest.raises(SystemExit, match="'bad name': not a method name"):
        ss.main(["--study", str(tmp_path), "--methods", "MfNS_De,bad name"])

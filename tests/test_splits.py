"""Tests for the paper's age-stratified folds (issue 5): partition properties, age balance on the
paper's age distribution, determinism, mfns-make-splits, and stock nnU-Net reading splits_final.json."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mfns.cli.make_splits import main as splits_main
from nnunetv2_mfns.dataset_conversion.pd_cohort import convert_pd_cohort
from nnunetv2_mfns.dataset_conversion.splits import (load_splits, make_age_stratified_splits, nnunet_splits,
                                                     write_splits)
from nnunetv2_mfns.errors import MfnsInputError

# 20 ages matching the paper's cohort: mean 63.0 +/- 10.3, range 42-79, median 64.
PAPER_AGES = [42, 46, 49, 52, 55, 58, 60, 62, 63, 64, 64, 66, 67, 68, 70, 71, 72, 74, 77, 79]


def _ages(n: int, seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {f"PVS_{i:03d}": float(a) for i, a in enumerate(np.round(rng.normal(63, 10.3, n), 1), start=1)}


def _check_protocol(splits: dict, cases: set[str]) -> None:
    n = splits["n_groups"]
    groups = splits["groups"]
    assert len(groups) == n and all(g == sorted(g) for g in groups)
    flat = [c for g in groups for c in g]
    assert sorted(flat) == sorted(cases) and len(flat) == len(set(flat))  # each case in exactly one group
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    tests = [c for f in splits["folds"] for c in f["test"]]
    assert sorted(tests) == sorted(cases) and len(tests) == len(set(tests))  # each case tested exactly once
    assert sorted(f["val_group"] for f in splits["folds"]) == list(range(n))  # each group validates once
    for k, f in enumerate(splits["folds"]):
        assert f["fold"] == k and f["test_group"] == k and f["val_group"] != k
        assert f["test"] == groups[k] and f["val"] == groups[f["val_group"]]
        tr, va, te = set(f["train"]), set(f["val"]), set(f["test"])
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == cases
        assert f["train"] == sorted(f["train"])


@pytest.mark.parametrize("n", [5, 6, 7, 11, 20, 23])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_case_tested_once_and_sets_disjoint(n: int, seed: int) -> None:
    ages = _ages(n, seed)
    splits = make_age_stratified_splits(ages, seed=seed)
    _check_protocol(splits, set(ages))
    assert splits["seed"] == seed and splits["n_groups"] == 5


def test_other_group_counts() -> None:
    ages = _ages(9)
    for n_groups in (3, 4, 9):
        splits = make_age_stratified_splits(ages, seed=3, n_groups=n_groups)
        _check_protocol(splits, set(ages))


def test_groups_are_age_balanced_on_the_paper_distribution() -> None:
    assert abs(np.mean(PAPER_AGES) - 63.0) < 0.5 and abs(np.std(PAPER_AGES, ddof=1) - 10.3) < 0.2
    assert np.median(PAPER_AGES) == 64 and (min(PAPER_AGES), max(PAPER_AGES)) == (42, 79)
    ages = {f"PVS_{i:03d}": float(a) for i, a in enumerate(PAPER_AGES, start=1)}
    sexes = {c: ("F" if i % 2 else "M") for i, c in enumerate(sorted(ages))}
    for seed in range(20):
        splits = make_age_stratified_splits(ages, seed=seed, sexes=sexes)
        means = [s["age_mean"] for s in splits["group_stats"]]
        assert max(means) - min(means) <= 3.0, (seed, means)
        for s, g in zip(splits["group_stats"], splits["groups"]):
            group_ages = [ages[c] for c in g]
            assert s["n"] == 4 and s["age_mean"] == pytest.approx(np.mean(group_ages))
            assert s["age_sd"] == pytest.approx(np.std(group_ages, ddof=1))
            assert s["n_F"] + s["n_M"] == 4 and s["n_F"] == sum(sexes[c] == "F" for c in g)
    # Contrast: an unstratified random partition of the same ages is far less balanced on average.
    rng = np.random.default_rng(0)
    spreads = []
    for _ in range(200):
        perm = rng.permutation(PAPER_AGES)
        spreads.append(np.ptp([perm[i::5].mean() for i in range(5)]))
    assert np.median(spreads) > 6.0


def test_same_seed_same_splits_and_input_order_irrelevant() -> None:
    ages = _ages(17, seed=4)
    a = make_age_stratified_splits(ages, seed=7)
    reordered = dict(reversed(list(ages.items())))
    assert make_age_stratified_splits(reordered, seed=7) == a
    others = [make_age_stratified_splits(ages, seed=s) for s in range(5)]
    assert any(o["groups"] != a["groups"] or o["folds"] != a["folds"] for o in others)
    assert make_age_stratified_splits(ages, seed=7)["group_stats"][0]["n_F"] is None  # no sexes given


def test_tied_ages_are_handled_and_seeded() -> None:
    ages = {f"C_{i:03d}": 60.0 for i in range(1, 11)}
    a, b = make_age_stratified_splits(ages, seed=1), make_age_stratified_splits(ages, seed=1)
    assert a == b
    _check_protocol(a, set(ages))


@pytest.mark.parametrize("ages,kwargs,message", [
    ({f"C_{i:03d}": 60.0 for i in range(4)}, {}, "4 case(s) cannot fill 5 groups"),
    ({"C_001": 60.0, "C_002": float("nan"), "C_003": 50.0, "C_004": 1.0, "C_005": 2.0}, {},
     "missing or non-numeric age for 1 case(s): C_002"),
    ({f"C_{i:03d}": 60.0 for i in range(6)}, {"n_groups": 2}, "--n-groups: must be an integer >= 3"),
])
def test_bad_split_inputs(ages, kwargs, message) -> None:
    with pytest.raises(MfnsInputError) as e:
        make_age_stratified_splits(ages, seed=0, **kwargs)
    assert message in str(e.value)


def test_write_and_load_splits(tmp_path: Path) -> None:
    splits = make_age_stratified_splits(_ages(8), seed=0)
    raw, pre = tmp_path / "raw", tmp_path / "pre" / "Dataset001_X"
    raw.mkdir()
    written = write_splits(splits, pre, raw_dataset_dir=raw)
    assert {p.name for p in written} == {"splits_final.json", "mfns_splits.json"}
    assert json.loads((pre / "splits_final.json").read_text()) == nnunet_splits(splits)
    assert json.loads((raw / "splits_final.json").read_text()) == nnunet_splits(splits)
    assert load_splits(pre) == splits and load_splits(raw) == splits
    with pytest.raises(MfnsInputError, match="splits already exist; pass --overwrite"):
        write_splits(splits, pre, raw_dataset_dir=raw)
    other = make_age_stratified_splits(_ages(8), seed=1)
    write_splits(other, pre, raw_dataset_dir=raw, overwrite=True)
    assert load_splits(pre) == other
    assert sorted(p.name for p in pre.iterdir()) == ["mfns_splits.json", "splits_final.json"]  # no temp files
    with pytest.raises(MfnsInputError, match="run mfns-make-splits first"):
        load_splits(tmp_path)


def _tiny_dataset(raw_root: Path, dataset_id: int, n: int) -> Path:
    """A tiny cohort (6x16x16 volumes, CSV manifest, one unlabeled scan) converted with the PD converter,
    so the stock-nnU-Net check below also proves the converter's output passes nnU-Net's own checks."""
    rng = np.random.default_rng(dataset_id)
    src = raw_root.parent / f"cohort{dataset_id}"
    src.mkdir(parents=True)
    rows = ["subject,t2w,mask,age,sex"]
    for i in range(1, n + 2):
        img = sitk.GetImageFromArray(rng.normal(400, 20, (6, 16, 16)).astype(np.float32))
        img.SetSpacing((0.5, 0.5, 2.0))
        sitk.WriteImage(img, str(src / f"s{i}_T2w.nii.gz"))
        if i > n:
            break  # the last scan is unlabeled and goes to imagesTs
        lab_arr = np.zeros((6, 16, 16), np.uint8)
        lab_arr[2:4, 5 + i % 5, 6:9] = 1
        lab = sitk.GetImageFromArray(lab_arr)
        lab.CopyInformation(img)
        sitk.WriteImage(lab, str(src / f"s{i}_mask.nii.gz"))
        rows.append(f"s{i},s{i}_T2w.nii.gz,s{i}_mask.nii.gz,{PAPER_AGES[i * 3 % 20]},{'F' if i % 2 else 'M'}")
    (src / "manifest.csv").write_text("\n".join(rows) + "\n")
    return convert_pd_cohort(raw_root, dataset_id, "SplitTest", manifest=src / "manifest.csv",
                             test_scans=str(src / f"s{n + 1}_T2w.nii.gz"), show_progress=False)


def test_make_splits_cli_and_stock_nnunet_reads_them(tmp_path: Path, monkeypatch, capsys) -> None:
    env = {"nnUNet_raw": str(tmp_path / "raw"), "nnUNet_preprocessed": str(tmp_path / "pre"),
           "nnUNet_results": str(tmp_path / "results"), "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1",
           "OMP_NUM_THREADS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    raw = _tiny_dataset(tmp_path / "raw", 502, 6)

    assert splits_main(["-d", "502", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "age-stratified splits: 5 groups, seed 3" in out and "age mean" in out and "fold 4: test = group 4" in out
    pre = tmp_path / "pre" / "Dataset502_SplitTest"
    splits = load_splits(pre)
    assert sorted(c for g in splits["groups"] for c in g) == [f"PVS_{i:03d}" for i in range(1, 7)]
    assert (raw / "imagesTs" / "PVS_007_0000.nii.gz").is_file()  # the unlabeled scan is not in any fold
    assert load_splits(raw) == splits
    assert splits_main(["-d", "Dataset502_SplitTest", "--seed", "3"]) == 2
    assert "splits already exist; pass --overwrite" in capsys.readouterr().err
    assert splits_main(["-d", "503"]) == 2
    assert "-d 503: Could not find a dataset with the ID 503" in capsys.readouterr().err
    split_text = (pre / "splits_final.json").read_text()

    # Stock nnU-Net: plan + preprocess (must keep our splits_final.json), then the default trainer's split.
    exe = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
    proc = subprocess.run([str(exe), "-d", "502", "-c", "2d", "-npfp", "1", "-np", "1", "--verify_dataset_integrity"],
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (pre / "splits_final.json").read_text() == split_text

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    torch.set_num_threads(1)
    for fold in splits["folds"]:
        trainer = get_trainer_from_args("502", "2d", fold["fold"], "nnUNetTrainer", device=torch.device("cpu"))
        tr_keys, val_keys = trainer.do_split()
        assert sorted(tr_keys) == fold["train"] and sorted(val_keys) == fold["val"]
        dataset_tr, dataset_val = trainer.get_tr_and_val_datasets()
        assert sorted(dataset_tr.identifiers) == fold["train"] and sorted(dataset_val.identifiers) == fold["val"]
        data, seg, *_ = dataset_val.load_case(fold["val"][0])  # the key names a real preprocessed case
        assert seg.shape[1:] == data.shape[1:]
    log = capsys.readouterr().out
    assert "Using splits from existing split file" in log and "Creating new 5-fold" not in log

    # --overwrite with another seed rewrites both copies consistently.
    assert splits_main(["-d", "502", "--seed", "4", "--overwrite"]) == 0
    assert load_splits(pre)["seed"] == 4 and load_splits(raw)["seed"] == 4
    assert (pre / "splits_final.json").read_text() == (raw / "splits_final.json").read_text()


def test_make_splits_reports_missing_ages_and_env(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.delenv("nnUNet_preprocessed", raising=False)
    raw = _tiny_dataset(tmp_path / "raw", 504, 5)
    assert splits_main(["-d", "504"]) == 2
    assert capsys.readouterr().err == "error: $nnUNet_preprocessed is not set (nnU-Net's data folders are needed)\n"
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    doc = json.loads((raw / "subjects.json").read_text())
    doc["subjects"]["PVS_002"]["age"] = None
    (raw / "subjects.json").write_text(json.dumps(doc))
    assert splits_main(["-d", "504"]) == 2
    err = capsys.readouterr().err
    assert "subjects.json: no numeric age for training case(s) PVS_002" in err
    assert not (tmp_path / "pre").exists()

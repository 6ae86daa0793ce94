"""`mfns-predict`: input discovery and refusals (fast, no model), model resolution, the per-subject report on a
hand-built scene, and end to end with a tiny MfNS_De model trained by the stock CLI on phantom scans with
awkward names (the model is trained once per session)."""
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from tiny_dataset import _write, make_tiny_case, nnunet_env

from nnunetv2_mfns.cli.predict import main, parse_rating_slices
from nnunetv2_mfns.errors import MfnsInputError
from nnunetv2_mfns.inference.inputs import collect_inputs, stage_inputs
from nnunetv2_mfns.inference.model import resolve_model
from nnunetv2_mfns.inference.naming import output_paths

BIN = Path(sys.executable).parent
TRAINER = "nnUNetTrainerMfNSDe_ci"


def _img(shape_zyx=(8, 20, 20), spacing=(0.5, 0.5, 2.0), direction=None, value=None):
    arr = np.random.default_rng(0).normal(100, 10, shape_zyx).astype(np.float32) if value is None else value
    im = sitk.GetImageFromArray(arr)
    im.SetSpacing(spacing)
    if direction is not None:
        im.SetDirection(direction)
    return im


def _write_img(im, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(im, str(path))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- inputs and names

def test_collect_plain_folder_single_files_and_names(tmp_path):
    a = _write_img(_img(), tmp_path / "in" / "my scan 1.nii")
    b = _write_img(_img(), tmp_path / "in" / "case_007_0000.nii.gz")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    c = _write_img(_img(), tmp_path / "other" / "x.nii.gz").rename(tmp_path / "other" / "x.NII.GZ")  # ITK reads it
    scans = collect_inputs([tmp_path / "in", c])
    assert [s.name for s in scans] == ["case_007", "my scan 1", "x"]
    assert [s.path for s in scans] == [b, a, c]
    assert output_paths(scans[1]).mask == Path("masks/my scan 1.nii.gz")
    staged = stage_inputs(scans, tmp_path / "stage")
    assert [p.name for p in staged] == ["scan_0000_0000.nii.gz", "scan_0001_0000.nii", "scan_0002_0000.nii.gz"]
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(staged[1]))),
                          sitk.GetArrayFromImage(sitk.ReadImage(str(a))))


def test_collect_bids_names(tmp_path):
    root = tmp_path / "bids"
    (root / "dataset_description.json").parent.mkdir(parents=True)
    (root / "dataset_description.json").write_text("{}")
    _write_img(_img(), root / "sub-01" / "anat" / "sub-01_T2w.nii.gz")
    _write_img(_img(), root / "sub-02" / "ses-b" / "anat" / "sub-02_ses-b_acq-hr_T2w.nii")
    _write_img(_img(), root / "sub-02" / "ses-b" / "anat" / "sub-02_ses-b_T1w.nii.gz")  # not a T2w: ignored
    scans = collect_inputs([root])
    assert [s.name for s in scans] == ["sub-01", "sub-02_ses-b_acq-hr"]
    op = output_paths(scans[1])
    assert op.mask == Path("sub-02/ses-b/anat/sub-02_ses-b_acq-hr_desc-PVS_mask.nii.gz")
    assert op.components == Path("sub-02/ses-b/anat/sub-02_ses-b_acq-hr_desc-PVScomponents_dseg.nii.gz")
    assert op.regions["BG"] == Path("sub-02/ses-b/anat/sub-02_ses-b_acq-hr_label-BG_mask.nii.gz")


@pytest.mark.parametrize("case,match", [
    ("duplicate", "same output name 'a'"),
    ("missing", "input not found"),
    ("not_nifti", "not a NIfTI file"),
    ("empty", "no .nii or .nii.gz"),
])
def test_collect_errors(tmp_path, case, match):
    if case == "duplicate":
        items = [_write_img(_img(), tmp_path / "a.nii"), _write_img(_img(), tmp_path / "d" / "a_0000.nii.gz")]
    elif case == "missing":
        items = [tmp_path / "nope.nii.gz"]
    elif case == "not_nifti":
        (tmp_path / "scan.mha").write_text("x")
        items = [tmp_path / "scan.mha"]
    else:
        (tmp_path / "empty").mkdir()
        items = [tmp_path / "empty"]
    with pytest.raises(MfnsInputError, match=match):
        collect_inputs(items)


def test_parse_rating_slices(tmp_path):
    assert parse_rating_slices("12,25") == {"*": {"BG": 12, "CSO": 25}}
    f = tmp_path / "s.json"
    f.write_text(json.dumps({"scan one": {"BG": 3, "CSO": 20}}))
    assert parse_rating_slices(str(f)) == {"scan one": {"BG": 3, "CSO": 20}}
    f.write_text(json.dumps({"scan one": {"BG": -3}}))
    for bad in ("12", "a,b", str(f), "-1,4"):
        with pytest.raises(MfnsInputError):
            parse_rating_slices(bad)


# ---------------------------------------------------------------- model folder

def _fake_model(root: Path, dataset="Dataset993_X", folder="nnUNetTrainerMfNSDe_ci__nnUNetPlans__2d", folds=(0,),
                channels=1) -> Path:
    m = root / dataset / folder
    m.mkdir(parents=True)
    (m / "plans.json").write_text("{}")
    (m / "dataset.json").write_text(json.dumps({"channel_names": {str(i): "T2" for i in range(channels)},
                                                "labels": {"background": 0, "PVS": 1}, "file_ending": ".nii.gz"}))
    for f in folds:
        (m / f"fold_{f}").mkdir()
        (m / f"fold_{f}" / "checkpoint_final.pth").write_bytes(b"")
    return m


def test_resolve_model(tmp_path, monkeypatch):
    m = _fake_model(tmp_path / "res", folds=(0, 2))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "res"))
    spec = resolve_model("993", "2d", TRAINER)
    assert spec.folder == m and spec.folds == (0, 2) and spec.configuration == "2d" and spec.trainer == TRAINER
    assert resolve_model(model_dir=tmp_path / "res").folder == m  # unzipped export: a results-like tree
    assert resolve_model(model_dir=m, folds=["2"]).folds == (2,)
    with pytest.raises(MfnsInputError, match="fold_1/checkpoint_final.pth: checkpoint not found"):
        resolve_model(model_dir=m, folds=["1"])
    with pytest.raises(MfnsInputError, match="no trained model there"):
        resolve_model("993", "3d_fullres", TRAINER)
    with pytest.raises(MfnsInputError, match="trained dataset matching"):
        resolve_model("994", "2d", TRAINER)
    m2 = _fake_model(tmp_path / "two", channels=2)
    with pytest.raises(MfnsInputError, match="2 input channels"):
        resolve_model(model_dir=m2)
    _fake_model(tmp_path / "two", folder="nnUNetTrainer__nnUNetPlans__3d_fullres")
    with pytest.raises(MfnsInputError, match="several trained models"):
        resolve_model(model_dir=tmp_path / "two")


# ---------------------------------------------------------------- refusals: one line, exit 2, nothing written

SAGITTAL = (0, 0, 1, 1, 0, 0, 0, 1, 0)  # index axis 2 runs left-right
SWAPPED = (0, 1, 0, 1, 0, 0, 0, 0, 1)   # index axis 0 runs anterior-posterior


@pytest.mark.parametrize("kind,match", [
    ("2d", "2D image"),
    ("single_slice", "2D image or a single slice"),
    ("4d", "4D image"),
    ("sagittal", "not an axial acquisition"),
    ("swapped", "wrongly oriented"),
    ("thick_in_plane", "non-axial acquisition stored as axial"),
])
def test_bad_input_refused(tmp_path, capsys, kind, match):
    model = _fake_model(tmp_path / "res")
    good = _write_img(_img(), tmp_path / "in" / "good.nii.gz")
    if kind == "2d":
        im = sitk.GetImageFromArray(np.zeros((20, 20), np.float32))
    elif kind == "single_slice":
        im = _img((1, 20, 20))
    elif kind == "4d":
        im = sitk.JoinSeries([_img(), _img()])
    elif kind == "sagittal":
        im = _img(direction=SAGITTAL)
    elif kind == "swapped":
        im = _img(direction=SWAPPED)
    else:
        im = _img(spacing=(2.0, 0.5, 0.5))
    bad = _write_img(im, tmp_path / "in" / f"bad {kind}.nii.gz")
    before = {p: _sha(p) for p in (good, bad)}
    out = tmp_path / "out"
    rc = main([str(good), str(bad), "-o", str(out), "-m", str(model), "-device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and str(bad) in err and match in err, err
    assert not out.exists()
    assert {p: _sha(p) for p in (good, bad)} == before


def test_existing_outputs_refused(tmp_path, capsys):
    model = _fake_model(tmp_path / "res")
    scan = _write_img(_img(), tmp_path / "in" / "s.nii.gz")
    out = tmp_path / "out"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "s.nii.gz").write_bytes(b"old")
    rc = main([str(scan), "-o", str(out), "-m", str(model), "--no-report"])
    assert rc == 2 and "output exists (use --overwrite" in capsys.readouterr().err
    assert (out / "masks" / "s.nii.gz").read_bytes() == b"old" and sorted(p.name for p in out.iterdir()) == ["masks"]


# ---------------------------------------------------------------- report on a hand-built scene

def test_subject_report_and_batch(tmp_path):
    from nnunetv2_mfns.evaluation.census import pvs_census
    from nnunetv2_mfns.evaluation.rating_categories import rate_subject
    from nnunetv2_mfns.evaluation.subject_report import SUBJECT_FILES, build_subject_report, write_batch
    shape = (10, 40, 40)
    image = np.full(shape, 100.0, np.float32)
    mask = np.zeros(shape, bool)
    mask[3, 10:30:3, 8] = True   # 7 BG dots on slice 3, right side
    mask[7, 5:35:2, 30] = True   # 15 CSO dots on slice 7, left side
    image[mask] = 160
    regions = {"BG": np.zeros(shape, np.uint8), "CSO": np.zeros(shape, np.uint8), "WM": np.ones(shape, np.uint8)}
    regions["BG"][2:5] = 1
    regions["CSO"][6:9] = 1
    hemi = np.ones(shape, np.uint8)
    hemi[:, :, :20] = 2
    census = pvs_census(mask, (0.5, 0.5, 2.0), image=image, regions=regions, hemisphere=hemi)
    info = {"rating_slices": {"BG": 3, "CSO": 7}, "slice_source": {"BG": "manual", "CSO": "automatic"},
            "automatic_slices": {"BG": 4, "CSO": 7}, "ventricle_top_slice": 5,
            "registration": {"ncc_after": 0.71, "ncc_threshold": 0.5, "ok": True, "transform": "affine",
                             "mattes_mi_before": -0.4, "mattes_mi_after": -0.6, "seconds": 1.0}}
    ratings = rate_subject(mask, info["rating_slices"], regions, hemi)
    assert [(r["count"], r["category"]) for r in ratings] == [(7, 1), (15, 2), (7, 1), (15, 2)]
    rep = build_subject_report(tmp_path / "reports" / "s 1", "s 1", image, mask, (2.0, 0.5, 0.5), census, ratings,
                               info, regions, meta={"input": "s 1.nii"})
    assert sorted(p.name for p in rep.parent.iterdir()) == sorted(SUBJECT_FILES)
    text = rep.read_text()
    for needle in ("protocol_slice_both_hemispheres", "max_slice_one_hemisphere", "normalised correlation 0.710",
                   "BG rating slice: 3 (manual, automatic would be 4)", "CSO rating slice: 7 (automatic)",
                   "22 PVS", "2 (11-20)"):
        assert needle in text, needle
    assert (rep.parent / "report.pdf").read_bytes()[:5] == b"%PDF-"
    files = write_batch(tmp_path, [{"name": "s 1", "report": Path("reports/s 1/report.html"), "census": census,
                                    "ratings": ratings, "rating_info": info, "meta": {"input": "s 1.nii"}}])
    stats = pd.read_csv(files[1])
    assert stats.loc[0, "n_pvs"] == 22 and stats.loc[0, "CSO_protocol_category"] == 2
    assert stats.loc[0, "BG_maxslice_hemisphere"] == "right" and stats.loc[0, "BG_slice_source"] == "manual"
    assert len(pd.read_csv(files[0])) == 22
    assert 'href="reports/s%201/report.html"' in files[2].read_text()


# ---------------------------------------------------------------- end to end with a trained tiny model

def _run(cmd, env, log: Path):
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    log.write_text(proc.stdout + "\n---stderr---\n" + proc.stderr)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """MfNS_De (2d, ci budget) trained by the stock CLI on 5 tiny cases at the demo phantom's voxel size, so
    that prediction on phantom scans needs no resampling (a few sliding-window tiles per slice)."""
    tmp = tmp_path_factory.mktemp("predict_model")
    env = nnunet_env(tmp)
    base = Path(env["nnUNet_raw"]) / "Dataset993_TinyPredict"
    rng = np.random.default_rng(0)
    for sub in ("imagesTr", "labelsTr"):
        (base / sub).mkdir(parents=True)
    for i in range(5):
        img, lab = make_tiny_case(rng, (10, 64, 64))
        _write(img, base / "imagesTr" / f"tiny_{i:03d}_0000.nii.gz", spacing=(1.75, 1.75, 2.0))
        _write(lab, base / "labelsTr" / f"tiny_{i:03d}.nii.gz", spacing=(1.75, 1.75, 2.0))
    (base / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2"}, "labels": {"background": 0, "PVS": 1},
                                                   "numTraining": 5, "file_ending": ".nii.gz"}))
    _run([BIN / "nnUNetv2_plan_and_preprocess", "-d", "993", "-c", "2d", "-np", "1"], env, tmp / "plan.log")
    _run([BIN / "nnUNetv2_train", "993", "2d", "0", "-tr", TRAINER, "-device", "cpu"], env, tmp / "train.log")
    folder = Path(env["nnUNet_results"]) / base.name / f"{TRAINER}__nnUNetPlans__2d"
    assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
    return env, folder


@pytest.fixture(scope="session")
def phantom_scans(tmp_path_factory):
    """Two demo-profile phantom scans under awkward names: spaces, no _0000, one .nii and one .nii.gz."""
    from nnunetv2_mfns.dataset_conversion.phantom import generate_cohort
    tmp = tmp_path_factory.mktemp("predict_phantom")
    ds = generate_cohort(tmp / "raw", n_subjects=2, seed=0, profile="demo", dataset_id=994, progress=False)
    src = sorted((ds / "imagesTr").glob("*_0000.nii.gz"))
    inp = tmp / "my scans"
    inp.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(src[0])), str(inp / "scan one.nii"))
    shutil.copyfile(src[1], inp / "Subject B T2.nii.gz")
    return inp


def test_predict_end_to_end(tiny_model, phantom_scans, tmp_path, monkeypatch, capsys):
    env, model_folder = tiny_model
    monkeypatch.setenv("nnUNet_results", env["nnUNet_results"])
    inputs = sorted(phantom_scans.iterdir())
    before = {p: _sha(p) for p in inputs}
    out = tmp_path / "out put"
    args = [str(phantom_scans), "-o", str(out), "-d", "993", "-c", "2d", "-tr", TRAINER, "-f", "0", "-device", "cpu",
            "--disable_tta"]
    assert main(args) == 0, capsys.readouterr().err
    names = ["Subject B T2", "scan one"]
    for name, src in zip(names, inputs):
        m = sitk.ReadImage(str(out / "masks" / f"{name}.nii.gz"))
        i = sitk.ReadImage(str(src))
        assert m.GetSize() == i.GetSize() and np.allclose(m.GetSpacing(), i.GetSpacing())
        assert np.allclose(m.GetOrigin(), i.GetOrigin()) and np.allclose(m.GetDirection(), i.GetDirection())
        assert set(np.unique(sitk.GetArrayFromImage(m))) <= {0, 1}
        comps = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "components" / f"{name}_components.nii.gz")))
        census = pd.read_csv(out / "reports" / name / "census.csv")
        assert comps.max() == len(census) and ((comps > 0) == (sitk.GetArrayFromImage(m) > 0)).all()
        for f in ("report.html", "report.pdf", "rating_slices.png", "pvs_projection.png", "summary.json"):
            assert (out / "reports" / name / f).is_file()
        for r in ("BG", "CSO", "WM", "brain", "hemisphere"):
            assert (out / "regions" / f"{name}_{r}.nii.gz").is_file()
    stats = pd.read_csv(out / "stats.csv")
    assert list(stats["subject"]) == names
    assert set(stats["BG_slice_source"]) == {"automatic"} and stats["registration_ok"].all()
    assert stats["BG_protocol_category"].between(0, 4).all() and stats["CSO_maxslice_category"].between(0, 4).all()
    assert set(pd.read_csv(out / "census.csv")["subject"]) <= set(names)
    index = (out / "index.html").read_text()
    assert 'href="reports/scan%20one/report.html"' in index and "Subject B T2" in index
    assert not [p for p in out.rglob(".*") if p.name != ".mfns-predict" and ".mfns-predict" not in p.parts]
    assert not list((out / ".mfns-predict" / "work").iterdir())  # per-scan work folders removed
    assert {p: _sha(p) for p in inputs} == before
    # a second run finds both scans done: nothing is redone or rewritten
    mtime = (out / "stats.csv").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0 and "2 scan(s) already done" in capsys.readouterr().out
    assert (out / "stats.csv").stat().st_mtime_ns == mtime
    # other settings on finished scans: refused without --overwrite
    assert main(args + ["--threshold", "0.7"]) == 2 and "--overwrite" in capsys.readouterr().err


def test_predict_bids_export_layout_manual_slices(tiny_model, phantom_scans, tmp_path):
    _, model_folder = tiny_model
    # an unzipped nnUNetv2_export_model_to_zip archive: DatasetXXX/TRAINER__PLANS__CONF/... under any root
    export = tmp_path / "exported"
    shutil.copytree(model_folder, export / model_folder.parent.name / model_folder.name,
                    ignore=shutil.ignore_patterns("validation", "checkpoint_best.pth"))
    bids = tmp_path / "bids"
    anat = bids / "sub-07" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    shutil.copyfile(phantom_scans / "Subject B T2.nii.gz", anat / "sub-07_ses-1_T2w.nii.gz")
    out = tmp_path / "derivatives"
    rc = main([str(bids), "-o", str(out), "-m", str(export), "-device", "cpu", "--disable_tta", "--rating-slices", "3,20",
               "-q"])
    assert rc == 0
    pre = out / "sub-07" / "ses-1" / "anat" / "sub-07_ses-1"
    for suffix in ("_desc-PVS_mask.nii.gz", "_desc-PVScomponents_dseg.nii.gz", "_label-BG_mask.nii.gz",
                   "_desc-hemisphere_dseg.nii.gz"):
        assert Path(str(pre) + suffix).is_file(), suffix
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    summary = json.loads((out / "reports" / "sub-07_ses-1" / "summary.json").read_text())
    assert summary["rating_info"]["rating_slices"] == {"BG": 3, "CSO": 20}
    assert summary["rating_info"]["slice_source"] == {"BG": "manual", "CSO": "manual"}
    stats = pd.read_csv(out / "stats.csv")
    assert stats.loc[0, "BG_protocol_slice"] == 3 and stats.loc[0, "CSO_protocol_slice"] == 20


def test_output_never_replaces_an_input(tmp_path, capsys):
    model = _fake_model(tmp_path / "res")
    scan = _write_img(_img(), tmp_path / "out" / "masks" / "s.nii.gz")
    before = _sha(scan)
    rc = main([str(scan), "-o", str(tmp_path / "out"), "-m", str(model), "--no-report", "--overwrite"])
    assert rc == 2 and "would replace an input scan" in capsys.readouterr().err and _sha(scan) == before


def test_sigterm_removes_the_temporary_folder(tiny_model, phantom_scans, tmp_path):
    """`kill` (SIGTERM) during a scan: its work folder inside OUT is removed, no half-written file is left."""
    import os
    import signal
    import time
    _, model_folder = tiny_model
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "nnunetv2_mfns.cli.predict", str(phantom_scans), "-o", str(out),
                             "-m", str(model_folder), "-device", "cpu", "-q"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / ".mfns-predict" / "work").is_dir() or not any((out / ".mfns-predict" / "work").iterdir()):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    # nothing half-written: no temporary file anywhere, the unfinished scan's work folder removed
    assert not [p for p in out.rglob(".*") if p.name != ".mfns-predict" and ".mfns-predict" not in p.parts]
    assert not list((out / ".mfns-predict" / "work").iterdir())


def test_predict_masks_only(tiny_model, phantom_scans, tmp_path, capsys):
    """--no-report: one .nii input, the mask named after it and nothing else (no registration, no report)."""
    _, model_folder = tiny_model
    out = tmp_path / "o"
    rc = main([str(phantom_scans / "scan one.nii"), "-o", str(out), "-m", str(model_folder), "-f", "0",
               "-device", "cpu", "--disable_tta", "--no-report", "-q"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if ".mfns-predict" not in p.parts) == \
        ["masks", "masks/scan one.nii.gz"]


def test_one_volume_4d_is_read_as_3d(tmp_path):
    import nibabel as nib
    f = tmp_path / "four d.nii.gz"
    voxels = np.random.default_rng(0).normal(100, 10, (20, 20, 8, 1)).astype(np.float32)  # constant is refused
    nib.save(nib.Nifti1Image(voxels, np.diag([0.5, 0.5, 2.0, 1.0])), str(f))
    scans = collect_inputs([f])
    assert scans[0].header.size == (20, 20, 8)
    staged = stage_inputs(scans, tmp_path / "stage")
    assert sitk.ReadImage(str(staged[0])).GetDimension() == 3


# ---------------------------------------------------------------- cohorts: failures, resume, shards, flags

@pytest.fixture(scope="session")
def cohort4(phantom_scans, tmp_path_factory):
    """Four scans (the two phantom scans under two names each)."""
    d = tmp_path_factory.mktemp("cohort4") / "scans"
    d.mkdir()
    src = sorted(phantom_scans.iterdir())
    for i, name in enumerate(["a", "b", "c", "d"]):
        sitk.WriteImage(sitk.ReadImage(str(src[i % 2])), str(d / f"{name}.nii.gz"))
    return d


def _fake_locate_failing(fail: set):
    """locate_rating_slices stand-in (the registration is tested in test_rating_slices.py): fixed slices and
    simple regions, a registration failure for the scans named in `fail`."""
    from nnunetv2_mfns.evaluation import rating_slices

    def fake(image, *, manual_slices=None, deformable=False, seed=0, source=None):
        if Path(source).name.split(".")[0] in fail:
            raise MfnsInputError(f"{source}: registration to MNI152 failed (correlation 0.10 < 0.5 inside the brain)")
        shape = tuple(image.GetSize()[::-1])
        half = np.zeros(shape, np.uint8)
        half[:, :, : shape[2] // 2] = 1
        return rating_slices.RatingSliceResult(
            bg_slice=8, cso_slice=18, slice_source={"BG": "automatic", "CSO": "automatic"},
            regions={k: np.ones(shape, np.uint8) for k in ("BG", "CSO", "WM", "brain")}, hemisphere=half + 1,
            ventricle_top_slice=12, registration={"ok": True, "ncc_after": 0.9}, automatic_slices={"BG": 8, "CSO": 18})
    return fake


def test_failed_registration_and_shards_equal_one_run(tiny_model, cohort4, tmp_path, monkeypatch, capsys):
    """A scan whose registration fails still gets its mask and census, is named in stats.csv and on stderr, and
    the run exits 3; `--num-parts 2` twice plus `--merge` gives the unsharded run's cohort files byte for byte."""
    from nnunetv2_mfns.evaluation import rating_slices
    _, model_folder = tiny_model
    monkeypatch.setattr(rating_slices, "locate_rating_slices", _fake_locate_failing({"c"}))
    common = ["-m", str(model_folder), "-device", "cpu", "--disable_tta", "-q"]
    one = tmp_path / "one"
    assert main([str(cohort4), "-o", str(one)] + common) == 3
    err = capsys.readouterr().err
    assert "attention: c: rating slices: not found (registration to MNI152 failed (correlation 0.10" in err
    for name in "abcd":
        assert (one / "masks" / f"{name}.nii.gz").is_file() and (one / "reports" / name / "report.html").is_file()
    assert not (one / "regions" / "c_BG.nii.gz").exists() and (one / "regions" / "a_BG.nii.gz").is_file()
    stats = pd.read_csv(one / "stats.csv").set_index("subject")
    assert list(stats.index) == list("abcd")
    assert stats.loc["c", "rating slices"].startswith("not found (registration to MNI152 failed")
    assert stats.loc["a", "rating slices"] == "BG automatic, CSO automatic"
    assert pd.isna(stats.loc["c", "BG_protocol_count"]) and stats.loc["a", "BG_protocol_slice"] == 8
    assert "not found (registration" in (one / "reports" / "c" / "report.html").read_text()

    sharded = tmp_path / "sharded"
    rcs = [main([str(cohort4), "-o", str(sharded), "--num-parts", "2", "--part-id", str(k)] + common) for k in (1, 0)]
    assert rcs == [0, 3]  # part 0 holds a and c, part 1 b and d
    assert not (sharded / "census.csv").exists()  # a part writes no cohort files
    assert main(["--merge", "-o", str(sharded)]) == 3
    for f in ("census.csv", "stats.csv", "index.html"):
        assert (sharded / f).read_bytes() == (one / f).read_bytes(), f
    assert len(pd.read_csv(one / "census.csv")) == int(stats["n_pvs"].sum())


def test_kill_9_then_rerun_keeps_finished_scans(tiny_model, cohort4, tmp_path):
    """`kill -9` after the first scan's done-marker: that scan's outputs stay byte for byte through the rerun,
    which redoes only the others."""
    import os
    import signal
    import time
    _, model_folder = tiny_model
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "nnunetv2_mfns.cli.predict", str(cohort4), "-o", str(out), "-m", str(model_folder),
           "-device", "cpu", "--disable_tta", "--no-report", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = out / ".mfns-predict" / "done"
    deadline = time.time() + 300
    while not (done.is_dir() and any(done.glob("*.json"))):
        assert proc.poll() is None and time.time() < deadline, proc.stderr.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    finished = sorted(p.stem for p in done.glob("*.json"))
    assert 1 <= len(finished) < 4, finished
    kept = {n: _sha(out / "masks" / f"{n}.nii.gz") for n in finished}
    mtimes = {n: (out / "masks" / f"{n}.nii.gz").stat().st_mtime_ns for n in finished}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{len(finished)} scan(s) already done" in proc.stdout
    assert {n: _sha(out / "masks" / f"{n}.nii.gz") for n in finished} == kept
    assert {n: (out / "masks" / f"{n}.nii.gz").stat().st_mtime_ns for n in finished} == mtimes
    assert sorted(p.stem for p in done.glob("*.json")) == list("abcd")
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{n}.nii.gz" for n in "abcd"]


def test_threshold_and_min_size(tiny_model, phantom_scans, tmp_path, capsys):
    """Defaults reproduce nnU-Net's mask; a stricter threshold and a minimum size only remove voxels; recorded."""
    from nnunetv2_mfns.inference.postprocess import MinSize, apply, parse_min_size, parse_threshold
    _, model_folder = tiny_model
    scan = phantom_scans / "scan one.nii"
    base = ["-m", str(model_folder), "-device", "cpu", "--disable_tta", "--no-report", "-q"]
    assert main([str(scan), "-o", str(tmp_path / "a")] + base) == 0
    assert main([str(scan), "-o", str(tmp_path / "b"), "--threshold", "0.5"] + base) == 0
    assert main([str(scan), "-o", str(tmp_path / "c"), "--threshold", "0.9", "--min-size", "3"] + base) == 0
    a, b, c = (sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / x / "masks" / "scan one.nii.gz"))) for x in "abc")
    assert a.sum() > 0 and abs(int(a.sum()) - int(b.sum())) <= 0.01 * a.sum()  # argmax vs P >= 0.5 (ties only)
    assert c.sum() < a.sum() and not (c & ~a).any()
    from scipy import ndimage
    lab, n = ndimage.label(c, np.ones((3, 3, 3)))
    assert n == 0 or np.bincount(lab.ravel())[1:].min() >= 3
    # the pure functions: voxels vs mm3, and bad values refused in one line
    assert parse_min_size("2.5mm3") == MinSize(2.5, "mm3") and parse_min_size("4") == MinSize(4, "voxels")
    assert parse_min_size("0") is None and parse_threshold("0.3") == 0.3
    m, removed = apply(np.array([[[1, 0, 0, 1, 1]]]), None, None, MinSize(2, "voxels"), (1, 1, 1))
    assert m.tolist() == [[[0, 0, 0, 1, 1]]] and removed == 1
    m, _ = apply(np.zeros((1, 1, 5)), np.array([[[0.1, 0.5, 0.6, 0.2, 0.9]]]), 0.5, MinSize(1, "mm3"), (1, 1, 2))
    assert m.tolist() == [[[0, 1, 1, 0, 1]]]
    capsys.readouterr()
    for flag, value in (("--threshold", "1.5"), ("--threshold", "x"), ("--min-size", "-3"), ("--min-size", "3 cm"),
                        ("--num-parts", "0"), ("--num-parts", "x"), ("--part-id", "2")):
        extra = ["--num-parts", "2"] if flag == "--part-id" else []
        assert main([str(scan), "-o", str(tmp_path / "bad"), flag, value] + extra + base) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and flag in err[0], err
    assert not (tmp_path / "bad").exists()


def test_emit_slurm(tiny_model, cohort4, tmp_path, capsys):
    _, model_folder = tiny_model
    d = tmp_path / "slurm"
    rc = main([str(cohort4), "-o", str(tmp_path / "o"), "-m", str(model_folder), "--num-parts", "3",
               "--emit-slurm", str(d), "--slurm-header=--time=02:00:00", "-device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    parts = (d / "predict_parts.sbatch").read_text()
    assert "#SBATCH --array=0-2" in parts and "#SBATCH --time=02:00:00" in parts
    assert "--num-parts 3" in parts and '--part-id "$SLURM_ARRAY_TASK_ID"' in parts and str(cohort4) in parts
    cmd = next(line for line in parts.splitlines() if "--part-id" in line)  # the array task's command line
    assert "--emit-slurm" not in cmd and "--slurm-header" not in cmd and str(tmp_path / "o") in cmd
    assert "--merge -o " + str(tmp_path / "o") in (d / "merge.sbatch").read_text()
    assert "--dependency=afterany:$arr merge.sbatch" in (d / "submit.sh").read_text()
    assert not (tmp_path / "o").exists()
    assert main([str(cohort4), "-o", str(tmp_path / "o"), "-m", str(model_folder), "--emit-slurm", str(d)]) == 2


# ---------------------------------------------------------------- DICOM in

def _write_dicom_series(vol: sitk.Image, folder: Path, uid: str, desc: str = "T2_TSE_AX", te: str = "95",
                        tr: str = "4500", extra: dict | None = None) -> sitk.Image:
    """One DICOM file per slice (GDCM via SimpleITK) with the tags a scanner writes; file names are
    deliberately not sorted like the slices. Returns the int16 volume as written."""
    folder.mkdir(parents=True, exist_ok=True)
    vol = sitk.Cast(sitk.RescaleIntensity(vol, 0, 3000), sitk.sitkInt16)
    d = vol.GetDirection()
    series_uid = f"1.2.826.0.1.3680043.2.1125.7.{uid}"
    tags = {"0008|0060": "MR", "0008|103e": desc, "0018|0081": te, "0018|0080": tr, "0020|000e": series_uid,
            "0020|000d": f"{series_uid}.0", "0010|0020": f"P{uid}", "0020|0011": uid,
            "0020|0037": "\\".join(f"{v:.6f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
            "0018|0050": f"{vol.GetSpacing()[2]:g}", **(extra or {})}
    import locale
    w = sitk.ImageFileWriter()
    w.SetImageIO("GDCMImageIO")
    w.KeepOriginalImageUIDOn()
    ctype = locale.setlocale(locale.LC_CTYPE)
    try:
        for i in range(vol.GetDepth()):
            s = vol[:, :, i]
            for k, v in tags.items():
                s.SetMetaData(k, v)
            s.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in vol.TransformIndexToPhysicalPoint((0, 0, i))))
            s.SetMetaData("0020|0013", str(i + 1))
            s.SetMetaData("0008|0018", f"{series_uid}.{i + 1}")
            w.SetFileName(str(folder / f"f{(i * 7919) % 1000:03d}_{i}"))  # any names, no extension
            w.Execute(s)
    finally:  # GDCM's DICOM writer sets LC_CTYPE to "C": Python's default text encoding would become ASCII
        locale.setlocale(locale.LC_CTYPE, ctype)
    return vol


def test_dicom_folder_in_and_wrong_series_refused(tiny_model, phantom_scans, tmp_path, monkeypatch, capsys):
    from nnunetv2_mfns.evaluation import rating_slices
    _, model_folder = tiny_model
    monkeypatch.setattr(rating_slices, "locate_rating_slices", _fake_locate_failing(set()))
    src = sorted(phantom_scans.iterdir())
    root = tmp_path / "dicom"
    written = {name: _write_dicom_series(sitk.ReadImage(str(f)), root / name, str(i + 1))
               for i, (name, f) in enumerate(zip(["patient01", "patient02"], src))}
    out = tmp_path / "out"
    common = ["-m", str(model_folder), "-device", "cpu", "--disable_tta", "-q"]
    assert main([str(root), "-o", str(out)] + common) == 0, capsys.readouterr().err
    for name, vol in written.items():
        conv = sitk.ReadImage(str(out / "converted" / f"{name}.nii.gz"))
        assert np.array_equal(sitk.GetArrayFromImage(conv), sitk.GetArrayFromImage(vol))
        assert np.allclose(conv.GetOrigin(), vol.GetOrigin(), atol=1e-3) and np.allclose(conv.GetSpacing(), vol.GetSpacing())
        side = json.loads((out / "converted" / f"{name}.json").read_text())
        assert side["EchoTime"] == 0.095 and side["SeriesDescription"] == "T2_TSE_AX"
        assert sitk.ReadImage(str(out / "masks" / f"{name}.nii.gz")).GetSize() == vol.GetSize()
        assert (out / "reports" / name / "report.html").is_file()
    assert list(pd.read_csv(out / "stats.csv")["subject"]) == ["patient01", "patient02"]

    vol = sitk.ReadImage(str(src[0]))
    sag = sitk.PermuteAxes(vol, [2, 1, 0])
    sag.SetDirection((0, 0, 1, 0, 1, 0, 1, 0, 0))
    for name, kw, match in (("t1", {"desc": "T1_MPRAGE", "te": "3", "tr": "2300"}, "not a T2-weighted series"),
                            ("short_te", {"desc": "AX SE", "te": "12", "tr": "600"}, "echo time 12 ms"),
                            ("flair", {"desc": "AX T2 FLAIR", "extra": {"0018|0082": "2500"}}, "inversion-recovery"),
                            ("sagittal", {}, "not an axial series")):
        bad = tmp_path / f"bad_{name}"
        shutil.copytree(root / "patient01", bad / "patient01")
        _write_dicom_series(sag if name == "sagittal" else vol, bad / "odd", "9", **kw)
        capsys.readouterr()
        assert main([str(bad), "-o", str(tmp_path / f"o_{name}")] + common) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "DICOM series 'odd'" in err[0] and match in err[0], err
        assert not (tmp_path / f"o_{name}").exists()

"""Acceptance tests of the synthetic PVS cohort (issue 4). Demo profile, a few subjects; ~2 min on 2 cores."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import spearmanr

os.environ.setdefault("OMP_NUM_THREADS", "1")

sitk = pytest.importorskip("SimpleITK")

from nnunetv2_mfns.cli.make_phantom import main as make_phantom_main  # noqa: E402
from nnunetv2_mfns.dataset_conversion.phantom import (SubjectSpec, generate_cohort, get_profile,  # noqa: E402
                                                      make_demographics, simulate_subject)
from nnunetv2_mfns.dataset_conversion.phantom import cohort as cohort_mod  # noqa: E402
from nnunetv2_mfns.dataset_conversion.phantom.anatomy import AC_MNI_ZYX, load_template  # noqa: E402
from nnunetv2_mfns.dataset_conversion.phantom.measure import (elongation_2d, inplane_lengths,  # noqa: E402
                                                              inplane_widths, lengths_3d)
from nnunetv2_mfns.dataset_conversion.phantom.raters import DEFAULT_RATERS, rater_count  # noqa: E402
from nnunetv2_mfns.errors import MfnsInputError  # noqa: E402

VENV_BIN = Path(sys.executable).parent


def _read(path: Path) -> tuple[np.ndarray, "sitk.Image"]:
    img = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(img), img


def _hash_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


N_COHORT = 5


@pytest.fixture(scope="module")
def cohort5(tmp_path_factory) -> Path:
    """5-subject demo cohort shared by the content tests and nnU-Net's integrity check (read only)."""
    return generate_cohort(tmp_path_factory.mktemp("raw"), n_subjects=N_COHORT, seed=3, profile="demo",
                           dataset_id=990, progress=False)


@pytest.fixture(scope="module")
def subjects5(cohort5) -> dict:
    return json.loads((cohort5 / "subjects.json").read_text())


@pytest.fixture(scope="module")
def realistic_small():
    """One subject of the realistic profile (0.5 mm in-plane, 2 mm slices, 0.5 mm simulation grid),
    shrunk to a 12-slice slab around the CSO rating slice to keep the test fast."""
    prof = get_profile("realistic", slab="rating", n_slices=28, matrix=(320, 280))
    return simulate_subject(SubjectSpec("PVS_001", "sub-001", 74.0, "M", seed=11, index=0), prof)


# ----------------------------------------------------------------------------------------------------
def test_template_is_offline_and_anatomy_plausible():
    tpl = load_template()
    # ventricles and deep GM exist where anatomy puts them
    vz = np.argwhere(tpl.ventricles)[:, 0] + tpl.origin[0]
    assert 20 <= vz.max() <= 40, "lateral ventricle top should be ~30 mm above the AC plane in MNI"
    deep = np.argwhere(tpl.deep > 0.5) + tpl.origin
    assert np.abs(deep[:, 2]).max() <= 34 and deep[:, 0].min() > -13
    ac = np.round(AC_MNI_ZYX - tpl.origin).astype(int)
    near = tpl.bg_region[ac[0] - 2: ac[0] + 3].sum()
    assert near > 500, "the BG region must cover the basal ganglia around the anterior commissure"
    assert 0.05 < tpl.csf[tpl.mask].mean() < 0.3


def test_dataset_layout_and_subjects_json(cohort5, subjects5):
    ds = json.loads((cohort5 / "dataset.json").read_text())
    assert cohort5.name == "Dataset990_PVSPhantom"
    assert ds["channel_names"] == {"0": "T2"} and ds["labels"] == {"background": 0, "PVS": 1}
    assert ds["file_ending"] == ".nii.gz" and ds["numTraining"] == N_COHORT
    assert subjects5["schema"] == "nnunetv2_mfns.subjects/1"
    assert subjects5["dataset_name"] == "Dataset990_PVSPhantom"
    cb = subjects5["created_by"]
    assert cb["tool"] == "mfns-make-phantom" and cb["seed"] == 3
    assert cb["args"]["profile"]["name"] == "demo" and cb["args"]["n_subjects"] == N_COHORT
    cases = sorted(subjects5["subjects"])
    assert cases == [f"PVS_{i:03d}" for i in range(1, N_COHORT + 1)]
    for i, case in enumerate(cases, start=1):
        e = subjects5["subjects"][case]
        assert e["subject"] == f"sub-{i:03d}" and e["set"] == "train" and e["sex"] in ("F", "M")
        assert 42 <= e["age"] <= 79
        assert (cohort5 / "imagesTr" / f"{case}_0000.nii.gz").is_file()
        assert (cohort5 / "labelsTr" / f"{case}.nii.gz").is_file()
        for r in ("BG", "CSO"):
            assert (cohort5 / e["region_masks"][r]).is_file()
            assert e["region_masks"][r] == f"regions/{case}_{r}.nii.gz"
        assert e["rating_slices"]["CSO"] > e["rating_slices"]["BG"]
    assert [e["sex"] for e in subjects5["subjects"].values()].count("F") in (N_COHORT // 2, N_COHORT // 2 + 1)
    assert (cohort5 / "montage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in cohort5.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_geometry_and_dtypes(cohort5, subjects5):
    for case, e in subjects5["subjects"].items():
        img_a, img = _read(cohort5 / "imagesTr" / f"{case}_0000.nii.gz")
        lab_a, lab = _read(cohort5 / "labelsTr" / f"{case}.nii.gz")
        assert img.GetPixelID() == sitk.sitkFloat32 and lab.GetPixelID() == sitk.sitkUInt8
        assert img.GetSpacing()[2] == pytest.approx(2.0)
        assert img.GetSpacing()[0] == pytest.approx(1.75) and img.GetSpacing()[1] == pytest.approx(1.75)
        assert img_a.shape == (28, 80, 80)
        for other in [lab] + [sitk.ReadImage(str(cohort5 / e["region_masks"][r])) for r in ("BG", "CSO")]:
            assert other.GetSize() == img.GetSize()
            assert np.allclose(other.GetSpacing(), img.GetSpacing())
            assert np.allclose(other.GetOrigin(), img.GetOrigin())
            assert np.allclose(other.GetDirection(), img.GetDirection())
        assert set(np.unique(lab_a)) <= {0, 1} and lab_a.sum() > 0
        assert np.isfinite(img_a).all() and img_a.min() >= 0
        for r in ("BG", "CSO"):
            reg = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort5 / e["region_masks"][r])))
            assert reg.dtype == np.uint8 and reg[e["rating_slices"][r]].sum() > 0
    import nibabel as nib

    nimg = nib.load(str(cohort5 / "imagesTr" / "PVS_001_0000.nii.gz"))
    assert nimg.header.get_zooms()[2] == pytest.approx(2.0) and nimg.shape[2] == 28


def test_rating_slice_counts_are_label_components(cohort5, subjects5):
    for case, e in subjects5["subjects"].items():
        lab = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort5 / "labelsTr" / f"{case}.nii.gz")))
        for r in ("BG", "CSO"):
            reg = sitk.GetArrayFromImage(sitk.ReadImage(str(cohort5 / e["region_masks"][r])))
            k = e["rating_slices"][r]
            _, n = ndimage.label((lab[k] > 0) & (reg[k] > 0), structure=np.ones((3, 3)))
            assert e["true_counts"][r] == n
        assert e["true_counts"]["CSO"] > 0


def test_raters_correlate_with_truth_but_differ(subjects5):
    subs = subjects5["subjects"].values()
    for r in ("BG", "CSO"):
        truth = np.array([e["true_counts"][r] for e in subs])
        r1 = np.array([e["rater_counts"]["rater1"][r] for e in subs])
        r2 = np.array([e["rater_counts"]["rater2"][r] for e in subs])
        # 5 subjects: rs moves in steps of 0.1; the 20-subject calibration is in docs/phantom.md
        assert spearmanr(truth, r1)[0] >= 0.6 and spearmanr(truth, r2)[0] >= 0.6, r
        assert not np.array_equal(truth, r1) and not np.array_equal(truth, r2) and not np.array_equal(r1, r2)


def test_raters_read_the_acquired_image_lower_snr_lower_counts():
    """Issue 11 item 4: the same subject acquired at a much lower SNR gets lower rater counts while its
    truth (label, true counts) is unchanged. The old raters thinned the label's components using
    noise-free contrast, so their counts did not depend on the noise at all."""
    spec = SubjectSpec("PVS_001", "sub-001", 74.0, "M", seed=11, index=0)
    clean = simulate_subject(spec, get_profile("demo", snr=40.0))
    noisy = simulate_subject(spec, get_profile("demo", snr=6.0))
    assert np.array_equal(clean.label, noisy.label) and clean.true_counts == noisy.true_counts
    for rater in ("rater1", "rater2"):
        assert sum(noisy.rater_counts[rater].values()) < sum(clean.rater_counts[rater].values()), rater


def test_rater_misses_faint_pvs_and_ignores_lacunes():
    """A synthetic 0.5 mm slice: 1 x 5 mm lines of rising contrast and one 6 mm CSF blob (lacune)."""
    img = np.full((160, 160), 400.0)
    contrasts = [0.02, 0.04, 0.6, 0.8, 1.0, 1.2]
    for k, c in enumerate(contrasts):
        img[20 + 20 * k: 22 + 20 * k, 30:40] += 400.0 * c
    img[60:72, 100:112] += 800.0
    region = np.zeros(img.shape, bool)
    region[10:150, 10:150] = True
    rng = np.random.default_rng(0)
    acquired = np.hypot(img + rng.normal(0, 10, img.shape), rng.normal(0, 10, img.shape))  # Rician, SNR 40
    for rater in DEFAULT_RATERS:
        # the four bright lines are counted; the two faint ones and the lacune are not
        assert rater_count(np.random.default_rng(1), acquired, region, 0.5, rater) == 4, rater.name
    assert rater_count(np.random.default_rng(1), acquired, np.zeros_like(region), 0.5, DEFAULT_RATERS[0]) == 0


def test_burden_rises_with_age(subjects5):
    subs = list(subjects5["subjects"].values())
    ages = [e["age"] for e in subs]
    total = [e["true_counts"]["CSO"] + e["true_counts"]["BG"] for e in subs]
    assert spearmanr(ages, total)[0] > 0


def test_confounders_never_labelled_and_visible():
    res = simulate_subject(SubjectSpec("PVS_001", "sub-001", 77.0, "F", seed=5, index=0), "demo")
    assert res.label.sum() > 0 and res.conf_frac.max() > 0.9
    assert not np.any((res.label > 0) & (res.conf_frac > 0)), "a confounder voxel is labelled"
    # label only where PVS are: every labelled voxel holds >= threshold of PVS volume
    assert np.all(res.pvs_frac[res.label > 0] >= get_profile("demo").label_threshold)
    kinds = {c.kind for c in res.confounders}
    assert {"sulcus", "hyperintense_focus", "wmh_periventricular", "wmh_deep"} <= kinds
    # confounders are hyperintense on the image (else a model could never fail on them)
    brain_wm = np.median(res.image[(res.conf_frac == 0) & (res.pvs_frac == 0) & (res.regions["CSO"] > 0)])
    assert np.median(res.image[res.conf_frac > 0.9]) > 1.2 * brain_wm
    for c in res.confounders:
        if c.kind == "lacune":
            assert 3.0 <= c.size_mm <= 15.0


def test_pvs_shape_measured_from_label(realistic_small):
    res = realistic_small
    sp = res.grid.spacing
    assert sp == (2.0, 0.5, 0.5)
    widths = inplane_widths(res.label, sp)
    lengths = lengths_3d(res.label, sp)
    assert len(widths) > 100 and len(lengths) > 50
    assert 0.5 <= np.median(widths) <= 2.0, np.median(widths)
    assert np.percentile(widths, 95) < 3.0, np.percentile(widths, 95)
    # 2-20 mm long; the label is quantised to 2 mm through-plane, hence the 2-slice tolerance
    assert 2.0 <= np.median(lengths) <= 20.0
    assert np.percentile(lengths, 95) <= 24.0, np.percentile(lengths, 95)
    # BG PVS are dots on axial slices, CSO PVS lines
    bg = elongation_2d(res.label[res.rating_slices["BG"]] * res.regions["BG"][res.rating_slices["BG"]], sp[1:])
    cso = elongation_2d(res.label[res.rating_slices["CSO"]] * res.regions["CSO"][res.rating_slices["CSO"]], sp[1:])
    assert len(bg) >= 3 and len(cso) >= 10
    assert np.median(cso) > 2.0 > np.median(bg), (np.median(cso), np.median(bg))
    # PVS signal: CSF-like, above the surrounding white matter on the image
    core = res.pvs_frac > 0.8
    wm = (res.pvs_frac == 0) & (res.conf_frac == 0) & (res.regions["CSO"] > 0)
    assert np.median(res.image[core]) > 1.5 * np.median(res.image[wm])


@pytest.fixture(scope="module")
def study_subject():
    return simulate_subject(SubjectSpec("PVS_001", "sub-001", 70.0, "F", seed=0, index=0), "study")


def test_study_profile_geometry(study_subject):
    """Issue 10 item 1: 0.9 mm pixels, a FOV cropped to the deep brain, a slab around the rating slices; a
    typical PVS at least one pixel wide and long CSO PVS lines several pixels long on the CSO rating slice."""
    res = study_subject
    assert res.image.shape == (28, 128, 112) and res.grid.spacing == (2.0, 0.9, 0.9)
    for r in ("BG", "CSO"):
        k = res.rating_slices[r]
        assert 1 <= k <= res.image.shape[0] - 2, (r, k)
        on_slice = res.regions[r][k] > 0
        # the crop keeps the deep brain: a large part of the FOV on a rating slice is rating region
        # (measured: BG 0.23 of the 128 x 112 slice)
        assert on_slice.mean() > 0.15, (r, on_slice.mean())
        assert (res.label[k] * on_slice).any(), f"no PVS in the {r} region on its rating slice"
    widths = inplane_widths(res.label, res.grid.spacing)
    assert np.median(widths) >= 0.9, np.median(widths)
    k = res.rating_slices["CSO"]
    lengths_px = inplane_lengths(res.label[k] * res.regions["CSO"][k], res.grid.spacing[1:]) / 0.9
    assert len(lengths_px) >= 20 and np.percentile(lengths_px, 90) >= 5.0, np.percentile(lengths_px, 90)


def test_measurement_helpers_on_known_shapes():
    lab = np.zeros((10, 60, 60), np.uint8)
    lab[2:7, 10:12, 5:45] = 1  # 1.0 mm wide (2 px of 0.5), 20 mm long, 10 mm tall band
    w = inplane_widths(lab, (2.0, 0.5, 0.5))
    assert np.allclose(w, 1.0, atol=0.05)
    assert lengths_3d(lab, (2.0, 0.5, 0.5))[0] == pytest.approx(20.0, abs=0.1)


def test_demographics_mirror_paper():
    d = make_demographics(20, 0)
    ages = np.array([a for a, _ in d])
    assert ages.min() == 42 and ages.max() == 79 and 60 <= ages.mean() <= 66
    assert [s for _, s in d].count("F") == 10
    assert make_demographics(20, 1) != d


def test_deterministic_bytes_and_seed_dependence(tmp_path):
    a = generate_cohort(tmp_path / "a", n_subjects=2, seed=7, dataset_id=991, progress=False)
    b = generate_cohort(tmp_path / "b", n_subjects=2, seed=7, dataset_id=991, progress=False, n_jobs=2)
    c = generate_cohort(tmp_path / "c", n_subjects=2, seed=8, dataset_id=991, progress=False)
    ha, hb, hc = _hash_tree(a), _hash_tree(b), _hash_tree(c)
    assert ha == hb, "same seed must give identical bytes (also when simulated in parallel processes)"
    for f in ("imagesTr/PVS_001_0000.nii.gz", "labelsTr/PVS_001.nii.gz", "imagesTr/PVS_002_0000.nii.gz"):
        assert ha[f] != hc[f], f"different seeds must give different subjects ({f})"
    # overwrite replaces the folder in place, with the same content for the same arguments
    again = generate_cohort(tmp_path / "a", n_subjects=2, seed=7, dataset_id=991, overwrite=True, progress=False)
    assert _hash_tree(again) == ha


def test_cli_bad_input_one_line_errors(tmp_path, capsys):
    cases = [
        (["--snr", "-3"], "snr"),
        (["--n-subjects", "0"], "--n-subjects"),
        (["--age-min", "80", "--age-max", "40"], "--age-min"),
        (["--seed", "-1"], "--seed"),
    ]
    for extra, word in cases:
        assert make_phantom_main(["-o", str(tmp_path / "x")] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and word in err and "\n" not in err, err
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    assert make_phantom_main(["-o", str(blocker / "sub"), "--n-subjects", "1"]) == 2
    err = capsys.readouterr().err
    assert "output folder" in err and str(blocker) in err
    assert not (tmp_path / "x").exists(), "a refused run must not create anything"


def test_cli_refuses_overwrite_and_failed_run_leaves_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "raw"
    assert make_phantom_main(["-o", str(out), "--n-subjects", "1", "-d", "992"]) == 0
    assert "Dataset992_PVSPhantom" in capsys.readouterr().out
    before = _hash_tree(out / "Dataset992_PVSPhantom")
    assert make_phantom_main(["-o", str(out), "--n-subjects", "1", "-d", "992"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _hash_tree(out / "Dataset992_PVSPhantom") == before

    def boom(args):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(cohort_mod, "_run_subject", boom)
    with pytest.raises(RuntimeError):
        generate_cohort(out, n_subjects=1, dataset_id=993, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["Dataset992_PVSPhantom"]
    with pytest.raises(MfnsInputError, match="profile"):
        generate_cohort(out, n_subjects=1, dataset_id=994, profile="huge", progress=False)


def test_nnunet_verify_dataset_integrity(cohort5, tmp_path):
    before = _hash_tree(cohort5)
    env = dict(os.environ, nnUNet_raw=str(cohort5.parent), nnUNet_preprocessed=str(tmp_path / "pre"),
               nnUNet_results=str(tmp_path / "res"), nnUNet_def_n_proc="1", OMP_NUM_THREADS="1")
    exe = VENV_BIN / "nnUNetv2_plan_and_preprocess"
    proc = subprocess.run([str(exe), "-d", "990", "--verify_dataset_integrity", "-c", "2d", "-np", "1"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    pre = tmp_path / "pre" / "Dataset990_PVSPhantom"
    plans = json.loads((pre / "nnUNetPlans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [2.0, 1.75, 1.75]
    assert len(list((pre / "nnUNetPlans_2d").glob("PVS_[0-9][0-9][0-9].b2nd"))) == N_COHORT
    assert _hash_tree(cohort5) == before, "nnU-Net must not have to change the raw dataset"

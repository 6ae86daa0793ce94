"""The phantom's `hard` profile (issue 23): layout, determinism, and that each added difficulty is really
there (nucleus contrasts, Gibbs ringing, noise level, annotator labels vs exact truth, confounder maps,
PVS touching WMH/lacunes, small lacunes, flow voids); the older profiles stay byte-identical. ~1 min."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

os.environ.setdefault("OMP_NUM_THREADS", "1")
sitk = pytest.importorskip("SimpleITK")

from nnunetv2_mfns.cli.make_phantom import main as make_phantom_main  # noqa: E402
from nnunetv2_mfns.dataset_conversion.phantom import SubjectSpec, generate_cohort, simulate_subject  # noqa: E402
from nnunetv2_mfns.dataset_conversion.phantom.anatomy import load_template  # noqa: E402
from nnunetv2_mfns.dataset_conversion.phantom.hard import (CONFOUNDER_BITS, HARD_PARAMS, annotator_label,  # noqa: E402
                                                           kspace_acquire, nuclei_t2, snr_of_acquired_voxel)


def _hash_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def hard_subject():
    return simulate_subject(SubjectSpec("PVS_004", "sub-004", age=71.0, sex="F", seed=0, index=3), "hard")


def test_demo_profile_unchanged_by_the_hard_profile():
    """Pinned digests of a demo subject computed before the hard profile existed (same files as then)."""
    r = simulate_subject(SubjectSpec("PVS_001", "sub-001", 70.0, "F", 3, 0), "demo")
    assert hashlib.sha256(r.image.tobytes()).hexdigest() == \
        "8fe536d48266e112e141c3bc6e79b3af2dc7c3b4fcac0c7d8f2b27a5af0293b3"
    assert hashlib.sha256(r.label.tobytes()).hexdigest() == \
        "6c95d597abe61a6a3b0c46a1f0e5cbc51b0db82d8cb84f00186c5260b124bf0c"
    assert not r.hard


def test_hard_cohort_layout_metadata_and_determinism(tmp_path):
    a = generate_cohort(tmp_path / "a", n_subjects=2, seed=5, profile="hard", dataset_id=981, progress=False)
    b = generate_cohort(tmp_path / "b", n_subjects=2, seed=5, profile="hard", dataset_id=981, progress=False)
    assert _hash_tree(a) == _hash_tree(b)
    assert make_phantom_main(["-o", str(tmp_path / "c"), "-d", "981", "--n-subjects", "2", "--seed", "6",
                              "--profile", "hard"]) == 0
    hc = _hash_tree(tmp_path / "c" / a.name)
    assert hc["imagesTr/PVS_001_0000.nii.gz"] != _hash_tree(a)["imagesTr/PVS_001_0000.nii.gz"]
    subj = json.loads((a / "subjects.json").read_text())
    hard = subj["created_by"]["args"]["hard"]
    assert hard["acq_inplane_mm"] == 0.9 and hard["confounder_bits"]["flow_void"] == 8 and "pallidum" in hard
    assert subj["created_by"]["args"]["profile"]["name"] == "hard"
    truth = json.loads((a / "phantom_truth.json").read_text())
    for case, e in subj["subjects"].items():
        exact = sitk.GetArrayFromImage(sitk.ReadImage(str(a / e["label_exact"])))
        annot = sitk.GetArrayFromImage(sitk.ReadImage(str(a / "labelsTr" / f"{case}.nii.gz")))
        cmap = sitk.GetArrayFromImage(sitk.ReadImage(str(a / e["confounder_map"])))
        img = sitk.ReadImage(str(a / "imagesTr" / f"{case}_0000.nii.gz"))
        assert exact.shape == annot.shape == cmap.shape == (28, 128, 128)
        assert img.GetSpacing() == pytest.approx((0.65, 0.65, 2.0))
        assert exact.any() and not np.array_equal(exact, annot)  # annotator style differs from the truth
        assert cmap.dtype == np.uint8 and (cmap & CONFOUNDER_BITS["rim"]).any()
        d = truth["subjects"][case]["details"]["hard"]
        assert d["acquisition"]["acquired_matrix_yx"] == [92, 92]  # 83.2 mm at 0.9 mm
        assert "threshold" in d["annotator"]


def test_hard_subject_difficulties_present(hard_subject):
    r = hard_subject
    hp = HARD_PARAMS["hard"]
    exact, cmap, nf = r.hard["label_exact"], r.hard["confounder_map"], r.noise_free
    d = r.details["hard"]
    # PVS touch WMH/lacunes (the study profile: 10 of 9,343 PVS voxels near a confounder)
    assert d["pvs_touching_wmh_or_lacune_fraction"] >= 0.15
    near = (cmap & (CONFOUNDER_BITS["wmh"] | CONFOUNDER_BITS["lacune"])) > 0
    assert (exact.astype(bool) & near).any()
    # lacunes 2-5 mm overlap the enlarged PVS widths 2-4 mm
    lac = [c for c in r.confounders if c.kind == "lacune"]
    assert lac and all(2.0 <= c.size_mm <= 5.0 for c in lac)
    assert any(p.width_mm >= 2.0 for p in r.pvs) and max(p.width_mm for p in r.pvs) <= 4.0
    # flow voids are dark (signal void) and mapped
    fv = (cmap & CONFOUNDER_BITS["flow_void"]) > 0
    shell = ndimage.binary_dilation(fv, np.ones((1, 5, 5), bool)) & ~fv
    clean = r.hard["clean"]
    assert fv.sum() > 20 and clean[fv].mean() < 0.8 * clean[shell].mean()
    # every confounder type except possibly lacunes in a small crop is present in the map
    for kind in ("sulcus", "wmh", "flow_void", "hyperintense", "rim"):
        assert ((cmap & CONFOUNDER_BITS[kind]) > 0).any(), kind
    # the annotator's label is the training label, the exact one is the truth
    assert not np.array_equal(r.label, exact)
    assert d["annotator"]["n_missed"] >= 1
    assert r.true_counts["BG"] + r.true_counts["CSO"] > 0
    assert snr_of_acquired_voxel(hp, 40.0, 2.0) == pytest.approx(40.0)


def test_deep_nuclei_contrast_from_the_literature():
    hp = HARD_PARAMS["hard"]
    tpl = load_template()
    t2 = nuclei_t2(tpl, hp)

    def at(z, y, x):
        i = np.round(np.array([z, y, x]) - tpl.origin).astype(int)
        return float(t2[tuple(i)])

    wm = 395.0
    assert at(-1, -3, 19) < wm < at(12, 12, 13)  # pallidum darker (iron), caudate brighter than WM
    assert at(0, 5, 28) > wm and at(6, -20, 10) >= wm  # putamen brighter, thalamus about WM or above
    assert at(-1, -3, -19) == pytest.approx(at(-1, -3, 19))  # both hemispheres


def test_kspace_acquisition_rings_and_keeps_noise_level():
    hp = dataclasses.replace(HARD_PARAMS["hard"], motion_sd_mm=(0.0, 0.0))
    step = np.zeros((2, 64, 64), np.float32)
    step[:, :, 32:] = 1000.0
    img, nf_step, info = kspace_acquire(step, 0.65, hp, 0.0, np.random.default_rng(0))
    assert info["acquired_matrix_yx"] == [46, 46]
    assert nf_step.max() > 1050.0  # Gibbs overshoot at the edge (> 5 %)
    flat = np.full((4, 64, 64), 1000.0, np.float32)
    img, nf, _ = kspace_acquire(flat, 0.65, hp, 10.0, np.random.default_rng(1))
    assert np.std(img) == pytest.approx(10.0, rel=0.15)  # zero-filling keeps the per-voxel noise SD
    assert np.allclose(nf, 1000.0, atol=1e-2)
    # motion blurs: with shot-wise displacements the step edge is smeared in the noise-free image
    hpm = dataclasses.replace(hp, motion_sd_mm=(1.5, 1.5))
    _, nfm, infom = kspace_acquire(step, 0.65, hpm, 0.0, np.random.default_rng(2))
    assert infom["motion_sd_mm"] == pytest.approx(1.5) and not np.allclose(nfm, nf_step, atol=1.0)


def test_annotator_misses_faint_pvs_and_biases_the_outline():
    hp = dataclasses.replace(HARD_PARAMS["hard"], annotator_miss_faint_prob=1.0, annotator_miss_small_prob=0.0,
                             annotator_dilate_prob=0.0, annotator_threshold_log_sd=0.0)
    frac = np.zeros((1, 20, 20), np.float32)
    ids = np.zeros((1, 20, 20), np.int32)
    frac[0, 2:5, 2:12] = 0.9
    ids[0, 2:5, 2:12] = 1
    frac[0, 10:13, 2:12] = 0.9
    ids[0, 10:13, 2:12] = 2
    lab, info = annotator_label(frac, ids, np.array([False, True]), hp, np.random.default_rng(0))
    assert lab[0, 3, 5] == 1 and lab[0, 11, 5] == 0 and info["n_missed_faint"] == 1
    thick = dataclasses.replace(hp, annotator_dilate_prob=1.0)
    lab2, _ = annotator_label(frac, ids, np.array([False, True]), thick, np.random.default_rng(0))
    assert lab2.sum() > lab.sum() and lab2[0, 11, 5] == 0  # thicker, but the missed PVS stays missed

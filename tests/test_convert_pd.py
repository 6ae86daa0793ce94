"""Tests for mfns-convert-pd (issue 5): conversion of a BIDS tree / CSV manifest, every bad-input case
(specific message, nothing written), atomic writing, and an untouched read-only input tree."""
from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunetv2_mfns.cli.convert_pd import main as convert_main
from nnunetv2_mfns.dataset_conversion import nnunet_raw
from nnunetv2_mfns.dataset_conversion.pd_cohort import convert_pd_cohort
from nnunetv2_mfns.errors import MfnsInputError

SHAPE = (6, 8, 8)  # numpy (z, y, x): 6 axial slices of 8x8
SPACING = (0.5, 0.5, 2.0)  # ITK (x, y, z) order: fine in-plane, 2 mm slices like the paper
AGES = [63, 42, 79, 55, 70, 66]


def _write(array: np.ndarray, path: Path, spacing=SPACING, origin=(0.0, 0.0, 0.0), direction=None) -> None:
    img = sitk.GetImageFromArray(array)
    if array.ndim == 3:
        img.SetSpacing(spacing)
        img.SetOrigin(origin)
        if direction is not None:
            img.SetDirection(direction)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def _t2w(rng: np.random.Generator, shape=SHAPE) -> np.ndarray:
    return rng.normal(400.0, 20.0, shape).astype(np.float32)


def _mask(i: int, shape=SHAPE, value: int = 1) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[2, 2 + i % 4, 3:5] = value  # a small in-plane PVS, different per subject
    return m


def make_bids(root: Path, n: int = 6, seed: int = 0) -> Path:
    """A BIDS-like tree with n subjects, masks in derivatives/pvs, participants.tsv."""
    rng = np.random.default_rng(seed)
    lines = ["participant_id\tage\tsex"]
    for i in range(1, n + 1):
        s = f"sub-{i:03d}"
        _write(_t2w(rng), root / s / "anat" / f"{s}_T2w.nii.gz")
        _write(_mask(i), root / "derivatives" / "pvs" / s / "anat" / f"{s}_desc-PVS_mask.nii.gz")
        lines.append(f"{s}\t{AGES[(i - 1) % len(AGES)]}\t{'F' if i % 2 else 'M'}")
    (root / "participants.tsv").write_text("\n".join(lines) + "\n")
    return root


def t2w_path(root: Path, i: int) -> Path:
    return root / f"sub-{i:03d}" / "anat" / f"sub-{i:03d}_T2w.nii.gz"


def mask_path(root: Path, i: int) -> Path:
    return root / "derivatives" / "pvs" / f"sub-{i:03d}" / "anat" / f"sub-{i:03d}_desc-PVS_mask.nii.gz"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    rc = convert_main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def assert_nothing_written(out_dir: Path) -> None:
    # The output root is only created once validation passed, and never holds a partial dataset.
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


@pytest.fixture
def bids(tmp_path: Path) -> Path:
    return make_bids(tmp_path / "bids")


def test_bids_conversion_writes_nnunet_dataset(bids: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "raters.csv").write_text(
        "subject,rater,region,count\nsub-001,rater1,BG,3\nsub-001,rater1,CSO,7\nsub-001,rater2,bg,4\n")
    (tmp_path / "slices.csv").write_text("subject,BG,CSO\nsub-001,1,4\nsub-002,2,\n")
    tests = tmp_path / "unlabeled"
    _write(_t2w(np.random.default_rng(5)), tests / "sub-101_T2w.nii.gz")
    out = tmp_path / "raw"
    rc, stdout, err = run([str(bids), "--dataset-id", "501", "--dataset-name", "PDTest", "-o", str(out),
                           "--rater-counts", str(tmp_path / "raters.csv"), "--rating-slices",
                           str(tmp_path / "slices.csv"), "--test-scans", str(tests), "--quiet"], capsys)
    assert rc == 0, err
    ds = out / "Dataset501_PDTest"
    assert sorted(p.name for p in out.iterdir()) == ["Dataset501_PDTest"]  # no temp folder left
    assert sorted(p.name for p in (ds / "imagesTr").iterdir()) == [f"PVS_{i:03d}_0000.nii.gz" for i in range(1, 7)]
    assert sorted(p.name for p in (ds / "labelsTr").iterdir()) == [f"PVS_{i:03d}.nii.gz" for i in range(1, 7)]
    assert [p.name for p in (ds / "imagesTs").iterdir()] == ["PVS_007_0000.nii.gz"]

    dj = json.loads((ds / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T2"} and dj["labels"] == {"background": 0, "PVS": 1}
    assert dj["numTraining"] == 6 and dj["file_ending"] == ".nii.gz"

    # Geometry, dtype and content survive the conversion.
    src_img = sitk.ReadImage(str(t2w_path(bids, 3)))
    img = sitk.ReadImage(str(ds / "imagesTr" / "PVS_003_0000.nii.gz"))
    lab = sitk.ReadImage(str(ds / "labelsTr" / "PVS_003.nii.gz"))
    assert img.GetPixelID() == sitk.sitkFloat32 and lab.GetPixelID() == sitk.sitkUInt8
    for a in (img, lab):
        assert a.GetSize() == src_img.GetSize()
        np.testing.assert_allclose(a.GetSpacing(), src_img.GetSpacing())
        np.testing.assert_allclose(a.GetOrigin(), src_img.GetOrigin())
        np.testing.assert_allclose(a.GetDirection(), src_img.GetDirection())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), sitk.GetArrayFromImage(src_img))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lab), _mask(3))

    doc = json.loads((ds / "subjects.json").read_text())
    assert doc["schema"] == "nnunetv2_mfns.subjects/1" and doc["dataset_name"] == "Dataset501_PDTest"
    assert doc["created_by"]["tool"] == "mfns-convert-pd"
    s1, s2, s7 = doc["subjects"]["PVS_001"], doc["subjects"]["PVS_002"], doc["subjects"]["PVS_007"]
    assert (s1["subject"], s1["age"], s1["sex"], s1["set"]) == ("sub-001", 63.0, "F", "train")
    assert s2["age"] == 42.0 and s2["sex"] == "M"
    assert s1["rating_slices"] == {"BG": 1, "CSO": 4} and s2["rating_slices"] == {"BG": 2, "CSO": None}
    assert s1["rater_counts"] == {"rater1": {"BG": 3, "CSO": 7}, "rater2": {"BG": 4}}
    assert s1["source"]["t2w"] == str(t2w_path(bids, 1).absolute())
    assert s1["source"]["mask"] == str(mask_path(bids, 1).absolute())
    assert (s7["subject"], s7["set"], s7["source"]["mask"]) == ("sub-101", "test", None)


def test_manifest_with_pvs_values_and_4d_volume_index(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    rows = ["subject,t2w,mask,age,sex"]
    vols = {}
    for i in range(1, 6):
        data = np.stack([_t2w(rng), _t2w(rng)])  # (t, z, y, x): a 4D series of 2 volumes
        vols[i] = data
        img = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in data])
        img.SetSpacing(SPACING + (1.0,))
        (tmp_path / "in").mkdir(exist_ok=True)
        sitk.WriteImage(img, str(tmp_path / "in" / f"s{i}_t2w.nii.gz"))
        m = _mask(i)
        m[4, 1, 1] = 2  # value 2 is also PVS (e.g. a second PVS class of the user's masks)
        _write(m, tmp_path / "in" / f"s{i}_mask.nii.gz")
        rows.append(f"subj{i},in/s{i}_t2w.nii.gz,in/s{i}_mask.nii.gz,{50 + i},female")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "raw"
    base = ["--manifest", str(tmp_path / "manifest.csv"), "--dataset-id", "7", "-o", str(out), "--quiet"]

    rc, _, err = run(base, capsys)
    assert rc == 2 and "is 4D with 2 volumes; pass --volume-index" in err
    assert "s1_t2w.nii.gz" in err
    assert_nothing_written(out)

    rc, _, err = run(base + ["--volume-index", "1"], capsys)
    assert rc == 2 and "mask is not binary (found values 2 besides 0/1)" in err and "s3_mask.nii.gz" in err
    assert_nothing_written(out)

    rc, _, err = run(base + ["--volume-index", "1", "--pvs-values", "1,2", "--case-prefix", "PD"], capsys)
    assert rc == 0, err
    ds = out / "Dataset007_PDPVS"
    img = sitk.ReadImage(str(ds / "imagesTr" / "PD_002_0000.nii.gz"))
    assert img.GetDimension() == 3
    np.testing.assert_allclose(img.GetSpacing(), SPACING)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), vols[2][1])
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / "PD_002.nii.gz")))
    expected = _mask(2)
    expected[4, 1, 1] = 1
    np.testing.assert_array_equal(lab, expected)
    doc = json.loads((ds / "subjects.json").read_text())
    assert doc["subjects"]["PD_002"]["subject"] == "subj2" and doc["subjects"]["PD_002"]["sex"] == "F"
    assert doc["created_by"]["args"]["pvs_values"] == [1, 2] and doc["created_by"]["args"]["volume_index"] == 1


def _garbage(root: Path) -> None:
    t2w_path(root, 2).write_bytes(b"this is not a nifti file at all")


def _four_d(root: Path) -> None:
    rng = np.random.default_rng(3)
    img = sitk.JoinSeries([sitk.GetImageFromArray(_t2w(rng)) for _ in range(2)])
    sitk.WriteImage(img, str(t2w_path(root, 2)))


def _two_d(root: Path) -> None:
    sitk.WriteImage(sitk.GetImageFromArray(_t2w(np.random.default_rng(3))[0]), str(t2w_path(root, 2)))


def _bad_shape(root: Path) -> None:
    _write(np.zeros((6, 8, 9), np.uint8), mask_path(root, 3))


def _bad_spacing(root: Path) -> None:
    _write(_mask(3), mask_path(root, 3), spacing=(0.5, 0.5, 2.1))


def _bad_origin(root: Path) -> None:
    _write(_mask(3), mask_path(root, 3), origin=(0.0, 1.0, 0.0))


def _bad_direction(root: Path) -> None:
    _write(_mask(3), mask_path(root, 3), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1))


def _nan(root: Path) -> None:
    a = _t2w(np.random.default_rng(4))
    a[1, 1, 1] = np.nan
    a[1, 1, 2] = np.inf
    _write(a, t2w_path(root, 4))


def _non_binary(root: Path) -> None:
    _write(_mask(5, value=2), mask_path(root, 5))


def _non_integer(root: Path) -> None:
    _write(_mask(5).astype(np.float32) * 0.5, mask_path(root, 5))


def _age_na(root: Path) -> None:
    p = root / "participants.tsv"
    p.write_text(p.read_text().replace("sub-004\t55", "sub-004\tn/a"))


def _no_row(root: Path) -> None:
    p = root / "participants.tsv"
    p.write_text("\n".join(line for line in p.read_text().splitlines() if not line.startswith("sub-004")) + "\n")


def _duplicate(root: Path) -> None:
    _write(_t2w(np.random.default_rng(9)), root / "sub-002" / "anat" / "sub-002_run-2_T2w.nii.gz")


def _no_mask(root: Path) -> None:
    mask_path(root, 5).unlink()


def _two_derivatives(root: Path) -> None:
    other = root / "derivatives" / "other" / "sub-001" / "anat" / "sub-001_desc-PVS_mask.nii.gz"
    _write(_mask(1), other)


BAD_CASES = {
    "unreadable": (_garbage, "sub-002_T2w.nii.gz: T2w image is not a readable NIfTI"),
    "4d": (_four_d, "sub-002_T2w.nii.gz: T2w image is 4D with 2 volumes; pass --volume-index"),
    "2d": (_two_d, "sub-002_T2w.nii.gz: T2w image is 2D; a 3D volume is required"),
    "shape": (_bad_shape, "sub-003_desc-PVS_mask.nii.gz: does not match T2w"),
    "spacing": (_bad_spacing, "spacing (0.5, 0.5, 2.1) != image spacing (0.5, 0.5, 2)"),
    "origin": (_bad_origin, "origin (0, 1, 0) != image origin (0, 0, 0)"),
    "direction": (_bad_direction, "direction (-1, 0, 0, 0, 1, 0, 0, 0, 1) != image direction"),
    "nan": (_nan, "sub-004_T2w.nii.gz: T2w image contains 2 NaN/Inf voxel(s)"),
    "non_binary": (_non_binary, "sub-005_desc-PVS_mask.nii.gz: mask is not binary (found values 2 besides 0/1)"),
    "non_integer": (_non_integer, "sub-005_desc-PVS_mask.nii.gz: PVS mask has non-integer values (e.g. 0.5)"),
    "age": (_age_na, "participants.tsv line 5: age of sub-004 is missing or not numeric ('n/a')"),
    "no_row": (_no_row, "participants.tsv: no row for sub-004 (age is required)"),
    "duplicate": (_duplicate, "duplicate subject sub-002: 2 T2w images"),
    "no_mask": (_no_mask, "sub-005_T2w.nii.gz: no PVS mask found for sub-005"),
    "ambiguous_mask": (_two_derivatives, "2 PVS masks match for sub-001"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_reported_and_nothing_written(case: str, bids: Path, tmp_path: Path, capsys) -> None:
    corrupt, message = BAD_CASES[case]
    corrupt(bids)
    out = tmp_path / "raw"
    rc, stdout, err = run([str(bids), "--dataset-id", "501", "-o", str(out), "--quiet"], capsys)
    assert rc == 2
    assert err.startswith("error: 1 problem found in the input; nothing was written:")
    assert message in err
    assert_nothing_written(out)


def test_all_problems_are_collected_in_one_report(bids: Path, tmp_path: Path, capsys) -> None:
    for name in ("unreadable", "spacing", "nan", "non_binary", "age"):
        BAD_CASES[name][0](bids)
    out = tmp_path / "raw"
    rc, _, err = run([str(bids), "--dataset-id", "501", "-o", str(out), "--quiet"], capsys)
    assert rc == 2
    lines = err.strip().splitlines()
    assert lines[0] == "error: 5 problems found in the input; nothing was written:"
    for name in ("unreadable", "spacing", "nan", "non_binary", "age"):
        assert sum(BAD_CASES[name][1] in line for line in lines[1:]) == 1, name
    assert_nothing_written(out)


def test_geometry_within_tolerance_is_accepted(bids: Path, tmp_path: Path) -> None:
    # Header rounding (float32 sform) differs by far less than the tolerances: must not be an error.
    _write(_mask(3), mask_path(bids, 3), spacing=(0.5, 0.5, 2.0 + 1e-5), origin=(0.0, 5e-4, 0.0))
    ds = convert_pd_cohort(tmp_path / "raw", 501, "Tol", bids_root=bids, show_progress=False)
    lab = sitk.ReadImage(str(ds / "labelsTr" / "PVS_003.nii.gz"))
    assert lab.GetSpacing() == sitk.ReadImage(str(t2w_path(bids, 3))).GetSpacing()  # image geometry copied


@pytest.mark.parametrize("extra,files,message", [
    (["--pvs-values", "1"], {"mask5": 3}, "mask has values 3 that are neither 0 nor declared PVS values 1 (--pvs-values)"),
    (["--rater-counts", "{tmp}/r.csv"], {"r.csv": "subject,rater,region,count\nsub-001,r1,WM,3\nsub-999,r1,BG,-1\n"},
     "r.csv line 2: region must be BG or CSO, got 'WM'"),
    (["--rater-counts", "{tmp}/r.csv"], {"r.csv": "subject,rater,region,count\nsub-999,r1,BG,-1\n"},
     "r.csv line 2: unknown subject 'sub-999'"),
    (["--rating-slices", "{tmp}/s.csv"], {"s.csv": "subject,BG,CSO\nsub-001,2,6\n"},
     "s.csv line 2: CSO slice 6 of sub-001 is outside 0..5"),
    (["--test-scans", "{tmp}/nothing_here_*.nii.gz"], {}, "no NIfTI files found"),
    (["--mask-pattern", "derivatives/pvs/sub-001/anat/*.nii.gz"], {}, "must contain the placeholder {subject}"),
    (["--derivatives-name", "missing"], {}, "derivatives folder does not exist (--derivatives-name)"),
])
def test_bad_options_and_side_tables(extra, files, message, bids: Path, tmp_path: Path, capsys) -> None:
    for name, content in files.items():
        if name == "mask5":
            _write(_mask(5, value=content), mask_path(bids, 5))
        else:
            (tmp_path / name).write_text(content)
    out = tmp_path / "raw"
    argv = [str(bids), "--dataset-id", "501", "-o", str(out), "--quiet"] + [e.format(tmp=tmp_path) for e in extra]
    rc, _, err = run(argv, capsys)
    assert rc == 2 and message in err
    assert_nothing_written(out)


def test_too_few_subjects_and_duplicate_manifest_rows(tmp_path: Path, capsys) -> None:
    bids = make_bids(tmp_path / "small", n=4)
    out = tmp_path / "raw"
    rc, _, err = run([str(bids), "--dataset-id", "501", "-o", str(out), "--quiet"], capsys)
    assert rc == 2 and "4 labelled subject(s) found; at least 5 are needed for 5 age-stratified folds" in err
    assert_nothing_written(out)

    big = make_bids(tmp_path / "big", n=6)
    rows = ["subject,t2w,mask,age,sex"] + [f"s{i},{t2w_path(big, i)},{mask_path(big, i)},60,M" for i in range(1, 7)]
    rows.append(f"s2,{t2w_path(big, 2)},{mask_path(big, 2)},61,F")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    rc, _, err = run(["--manifest", str(tmp_path / "m.csv"), "--dataset-id", "501", "-o", str(out), "--quiet"], capsys)
    assert rc == 2 and "m.csv line 8: duplicate subject s2 (also line 3)" in err
    assert_nothing_written(out)


def test_existing_output_needs_overwrite_and_same_id_is_refused(bids: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "raw"
    argv = [str(bids), "--dataset-id", "501", "-o", str(out), "--quiet"]
    assert run(argv, capsys)[0] == 0
    ds = out / "Dataset501_PDPVS"
    marker = ds / "imagesTr" / "PVS_001_0000.nii.gz"
    before = marker.stat().st_mtime_ns
    rc, _, err = run(argv, capsys)
    assert rc == 2 and "output dataset already exists; pass --overwrite" in err
    assert marker.stat().st_mtime_ns == before
    _write(_t2w(np.random.default_rng(7)), tmp_path / "ts" / "extra.nii.gz")
    rc, _, err = run(argv + ["--overwrite", "--test-scans", str(tmp_path / "ts")], capsys)
    assert rc == 0, err
    assert (ds / "imagesTs" / "PVS_007_0000.nii.gz").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["Dataset501_PDPVS"]  # the old copy was removed

    rc, _, err = run([str(bids), "--dataset-id", "501", "--dataset-name", "Other", "-o", str(out), "--quiet"], capsys)
    assert rc == 2 and "another dataset with id 501 exists here" in err
    assert not (out / "Dataset501_Other").exists()

    rc, _, err = run([str(bids), "--dataset-id", "502", "--dataset-name", "bad name", "--case-prefix", "P_1",
                      "-o", str(out), "--quiet"], capsys)
    assert rc == 2 and "--dataset-name: 'bad name' must be letters" in err and "--case-prefix: 'P_1'" in err


def test_output_root_defaults_to_nnunet_raw(bids: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("nnUNet_raw", raising=False)
    rc, _, err = run([str(bids), "--dataset-id", "501", "--quiet"], capsys)
    assert rc == 2 and err == "error: -o/--output: not given and $nnUNet_raw is not set\n"
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "envraw"))
    assert run([str(bids), "--dataset-id", "501", "--quiet"], capsys)[0] == 0
    assert (tmp_path / "envraw" / "Dataset501_PDPVS" / "dataset.json").is_file()


def test_interrupted_write_leaves_no_partial_dataset(bids: Path, tmp_path: Path, monkeypatch) -> None:
    real_write = sitk.WriteImage
    calls = {"n": 0}

    def flaky_write(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # midway through the cases
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(nnunet_raw.sitk, "WriteImage", flaky_write)
    out = tmp_path / "raw"
    with pytest.raises(KeyboardInterrupt):
        convert_pd_cohort(out, 501, "PDPVS", bids_root=bids, show_progress=False)
    assert calls["n"] == 5
    assert list(out.iterdir()) == []  # neither the dataset nor the hidden temp folder


def _tree_state(root: Path) -> dict[str, tuple[str, int, int]]:
    state = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        state[str(p.relative_to(root))] = (digest, stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return state


def test_read_only_input_tree_is_unchanged(bids: Path, tmp_path: Path, capsys) -> None:
    (bids / "raters.csv").write_text("subject,rater,region,count\nsub-001,r1,BG,2\n")
    paths = [bids, *bids.rglob("*")]
    for p in paths:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        before = _tree_state(bids)
        rc, _, err = run([str(bids), "--dataset-id", "501", "-o", str(tmp_path / "raw"), "--quiet",
                          "--rater-counts", str(bids / "raters.csv"), "--pvs-values", "1"], capsys)
        assert rc == 0, err
        # A failing run must not touch the input either.
        rc, _, err = run([str(bids), "--dataset-id", "501", "-o", str(bids / "out"), "--quiet"], capsys)
        assert rc == 2 and "output would be inside the input tree" in err
        assert _tree_state(bids) == before
    finally:
        for p in paths:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_library_refuses_inconsistent_inputs(bids: Path, tmp_path: Path) -> None:
    with pytest.raises(MfnsInputError, match="exactly one"):
        convert_pd_cohort(tmp_path / "raw", 501, "X", bids_root=bids, manifest=tmp_path / "m.csv")
    with pytest.raises(MfnsInputError, match="only apply to a BIDS root"):
        convert_pd_cohort(tmp_path / "raw", 501, "X", manifest=tmp_path / "m.csv", derivatives_name="pvs")
    with pytest.raises(MfnsInputError, match="--dataset-id: must be an integer between 1 and 999"):
        convert_pd_cohort(tmp_path / "raw", 1000, "X", bids_root=bids)
    assert not (tmp_path / "raw").exists()


def test_mask_pattern_and_derivatives_name_select_masks(bids: Path, tmp_path: Path) -> None:
    # A second derivatives folder makes the default search ambiguous; both options resolve it.
    for i in range(1, 7):
        _write(_mask(i + 1), bids / "derivatives" / "other" / f"sub-{i:03d}" / "anat" / f"sub-{i:03d}_PVS_mask.nii.gz")
        _write(_mask(i + 2), bids / "derivatives" / "manual" / f"sub-{i:03d}_pvs.nii.gz")
    ds = convert_pd_cohort(tmp_path / "a", 501, "A", bids_root=bids, derivatives_name="other", show_progress=False)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / "PVS_002.nii.gz")))
    np.testing.assert_array_equal(lab, _mask(3))
    ds = convert_pd_cohort(tmp_path / "b", 501, "B", bids_root=bids, show_progress=False,
                           mask_pattern="derivatives/manual/{subject}_pvs.nii.gz")
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(ds / "labelsTr" / "PVS_002.nii.gz")))
    np.testing.assert_array_equal(lab, _mask(4))
    doc = json.loads((ds / "subjects.json").read_text())
    assert doc["subjects"]["PVS_002"]["source"]["mask"] == str(bids / "derivatives" / "manual" / "sub-002_pvs.nii.gz")


def test_raw_writer_api_regions_and_refusals(tmp_path: Path) -> None:
    """The reusable writer (also for the phantom): regions, lazy images, and refusal of bad cases."""
    rng = np.random.default_rng(2)
    img = sitk.GetImageFromArray(_t2w(rng).astype(np.float64))  # float64 in -> float32 out
    img.SetSpacing(SPACING)
    lab = sitk.GetImageFromArray(_mask(1))
    lab.CopyInformation(img)
    region = sitk.GetImageFromArray((np.arange(np.prod(SHAPE)).reshape(SHAPE) % 2).astype(np.int16))
    region.CopyInformation(img)
    loads = []

    def lazy_image() -> sitk.Image:
        loads.append(1)
        return img

    cases = [nnunet_raw.RawCase("PH_001", lazy_image, lab, metadata={"subject": "p1", "age": 70.0, "sex": "F",
                                                                     "true_counts": {"BG": 1, "CSO": 0}},
                                regions={"BG": region, "CSO": lambda: region})]
    created = {"tool": "mfns-make-phantom", "version": "0.1.0", "seed": 3, "args": {}}
    ds = nnunet_raw.write_nnunet_raw_dataset(tmp_path / "raw", 9, "Ph", cases, created, show_progress=False)
    assert loads == [1]  # callables are materialised once, while writing
    assert sitk.ReadImage(str(ds / "imagesTr" / "PH_001_0000.nii.gz")).GetPixelID() == sitk.sitkFloat32
    bg = sitk.ReadImage(str(ds / "regions" / "PH_001_BG.nii.gz"))
    assert bg.GetPixelID() == sitk.sitkUInt8 and (ds / "regions" / "PH_001_CSO.nii.gz").is_file()
    entry = json.loads((ds / "subjects.json").read_text())["subjects"]["PH_001"]
    assert entry["region_masks"] == {"BG": "regions/PH_001_BG.nii.gz", "CSO": "regions/PH_001_CSO.nii.gz"}
    assert entry["true_counts"] == {"BG": 1, "CSO": 0} and entry["set"] == "train"
    assert json.loads((ds / "subjects.json").read_text())["created_by"]["seed"] == 3

    bad_label = sitk.GetImageFromArray(_mask(1, value=2))
    bad_label.CopyInformation(img)
    shifted = sitk.GetImageFromArray(_mask(1))
    shifted.SetSpacing((0.5, 0.5, 3.0))
    for bad_cases, message in [
        ([nnunet_raw.RawCase("PH_1", img, lab)], "case id must look like PREFIX_NNN"),
        ([nnunet_raw.RawCase("PH_001", img, None)], "training case without a label"),
        ([nnunet_raw.RawCase("PH_001", img, lab), nnunet_raw.RawCase("PH_001", img, lab)], "duplicate case id"),
        ([nnunet_raw.RawCase("PH_001", img, lab, regions={"WM": region})], "unknown region 'WM'"),
        ([nnunet_raw.RawCase("PH_001", img, bad_label)], "label of PH_001: label values must be 0/1"),
        ([nnunet_raw.RawCase("PH_001", img, shifted)], "label of PH_001: spacing (0.5, 0.5, 3) != image spacing"),
    ]:
        with pytest.raises(MfnsInputError) as e:
            nnunet_raw.write_nnunet_raw_dataset(tmp_path / "raw2", 9, "Ph", bad_cases, created, show_progress=False)
        assert message in str(e.value)
        assert not (tmp_path / "raw2").exists() or list((tmp_path / "raw2").iterdir()) == []


# ------------------------------------------------------------------ issue 11 item 7: nobody is lost


def _only_mask_and_row(root: Path) -> None:
    t2w_path(root, 8).unlink()  # the case: mask + participants row, no T2w


def _only_mask(root: Path) -> None:
    t2w_path(root, 8).unlink()
    t2w_path(root, 8).parent.rmdir()
    t2w_path(root, 8).parent.parent.rmdir()
    p = root / "participants.tsv"
    p.write_text("\n".join(line for line in p.read_text().splitlines() if not line.startswith("sub-008")) + "\n")


def _only_row(root: Path) -> None:
    for path in (t2w_path(root, 8), mask_path(root, 8)):
        path.unlink()
        path.parent.rmdir()
        path.parent.parent.rmdir()


@pytest.mark.parametrize("corrupt,message", [
    (_only_mask_and_row, "sub-008: subject folder of sub-008 has no T2w image"),
    (_only_mask, "sub-008_desc-PVS_mask.nii.gz: PVS mask of sub-008 has no T2w image"),
    (_only_row, "participants.tsv line 9: sub-008 has no T2w image"),
], ids=["mask_and_row", "mask_only", "row_only"])
def test_subject_without_t2w_is_named_not_dropped(corrupt, message, tmp_path: Path, capsys) -> None:
    """Issue 11 item 7: before the fix 7 of 8 subjects were converted with exit status 0."""
    bids = make_bids(tmp_path / "bids", n=8)
    corrupt(bids)
    out = tmp_path / "raw"
    rc, _, err = run([str(bids), "--dataset-id", "501", "-o", str(out), "--quiet"], capsys)
    assert rc == 2, "a subject without T2w was dropped silently"
    assert "error: 1 problem found in the input; nothing was written:" in err
    assert message in err and "--exclude-subjects sub-008" in err
    assert_nothing_written(out)


def test_orphan_mask_found_through_mask_pattern(bids: Path, tmp_path: Path) -> None:
    for i in range(1, 8):  # sub-007 has a mask under the pattern but no image
        _write(_mask(i), bids / "derivatives" / "manual" / f"sub-{i:03d}_pvs.nii.gz")
    with pytest.raises(MfnsInputError, match=r"sub-007_pvs.nii.gz: PVS mask of sub-007 has no T2w image"):
        convert_pd_cohort(tmp_path / "raw", 501, "P", bids_root=bids, show_progress=False,
                          mask_pattern="derivatives/manual/{subject}_pvs.nii.gz")


def test_exclude_subjects_leaves_them_out_everywhere_and_is_recorded(tmp_path: Path, capsys) -> None:
    bids = make_bids(tmp_path / "bids", n=8)
    t2w_path(bids, 8).unlink()
    (tmp_path / "raters.csv").write_text("subject,rater,region,count\nsub-001,r1,BG,3\nsub-008,r1,BG,5\n")
    (tmp_path / "slices.csv").write_text("subject,BG,CSO\nsub-008,1,4\n")
    out = tmp_path / "raw"
    side = ["--rater-counts", str(tmp_path / "raters.csv"), "--rating-slices", str(tmp_path / "slices.csv")]
    rc, _, err = run([str(bids), "--dataset-id", "501", "-o", str(out), "--quiet", "--exclude-subjects",
                      "sub-008,sub-003"] + side, capsys)
    assert rc == 0, err
    doc = json.loads((out / "Dataset501_PDPVS" / "subjects.json").read_text())
    assert sorted(e["subject"] for e in doc["subjects"].values()) == \
        ["sub-001", "sub-002", "sub-004", "sub-005", "sub-006", "sub-007"]
    assert doc["created_by"]["args"]["exclude_subjects"] == ["sub-003", "sub-008"]
    # A typo in the exclusion list must not pass unnoticed.
    rc, _, err = run([str(bids), "--dataset-id", "502", "-o", str(out), "--quiet",
                      "--exclude-subjects", "sub-008,sub-080"], capsys)
    assert rc == 2 and "--exclude-subjects: sub-080 appears in no input" in err


def test_manifest_exclusion(tmp_path: Path) -> None:
    big = make_bids(tmp_path / "big", n=6)
    rows = ["subject,t2w,mask,age,sex"] + [f"s{i},{t2w_path(big, i)},{mask_path(big, i)},60,M" for i in range(1, 7)]
    rows.append(f"s7,{tmp_path / 'missing.nii.gz'},{mask_path(big, 1)},61,F")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(MfnsInputError, match="missing.nii.gz"):
        convert_pd_cohort(tmp_path / "raw", 501, "M", manifest=tmp_path / "m.csv", show_progress=False)
    ds = convert_pd_cohort(tmp_path / "raw", 501, "M", manifest=tmp_path / "m.csv", show_progress=False,
                           exclude_subjects=["s7"])
    assert len(list((ds / "imagesTr").iterdir())) == 6

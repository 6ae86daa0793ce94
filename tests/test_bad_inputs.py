"""Issue 25: defective scans and masks, written here byte by byte, are refused by every console script.

Each defect is planted into an otherwise valid input of `mfns-convert-pd`, `mfns-predict`, `mfns-evaluate`,
`mfns-counts` or `mfns-report` (called in-process through `main(argv)`; a few in a subprocess, where a
traceback or the exit code of the real interpreter matter). For every one: exit code 2, exactly one problem
line that names the file, no traceback, and the whole test folder (inputs and the output location)
byte-identical afterwards: nothing written, nothing modified. No model is trained or loaded: `mfns-predict` gets
a model folder with empty checkpoints, so a defect that slipped past the input checks would fail at model
loading with another message (and the subprocess test shows torch is never even imported).
"""
from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest

from nnunetv2_mfns import image_checks, image_header_checks
from nnunetv2_mfns.cli.convert_pd import main as convert_main
from nnunetv2_mfns.cli.counts import main as counts_main
from nnunetv2_mfns.cli.evaluate import main as evaluate_main
from nnunetv2_mfns.cli.predict import main as predict_main
from nnunetv2_mfns.cli.report import main as report_main

SHAPE = (16, 16, 8)                       # nibabel order x, y, z: axial slices of 0.5 x 0.5 mm, 2 mm apart
AFFINE = np.diag([0.5, 0.5, 2.0, 1.0])
AFFINE[:3, 3] = (-4.0, -4.0, -8.0)


# ------------------------------------------------------------------------------------------ valid files


def scan_array(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(100.0, 10.0, SHAPE).astype(np.float32)


def mask_array(seed: int) -> np.ndarray:
    m = np.zeros(SHAPE, np.uint8)
    rng = np.random.default_rng(seed)
    for x, y, z in rng.integers((2, 2, 1), (14, 14, 7), size=(4, 3)):
        m[x - 1:x + 1, y - 1:y + 1, z] = 1
    return m


def write_nifti(path: Path, arr: np.ndarray, affine: np.ndarray = AFFINE, intent: str | None = None) -> Path:
    """A NIfTI with sform and qform both set (code 1, agreeing): the float32 rounding of the quaternion must pass."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_qform(affine, 1)
    img.header.set_sform(affine, 1)
    if intent:
        img.header.set_intent(intent)
    nib.save(img, str(path))
    return path


def edit_header(path: Path, edit: Callable[[nib.Nifti1Header], None]) -> None:
    """Changes header fields in place without nibabel 'repairing' them (it would fix pixdim <= 0 on save)."""
    raw = path.read_bytes()
    gz = path.name.endswith(".gz")
    data = gzip.decompress(raw) if gz else raw
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(data), check=False)
    edit(hdr)
    data = hdr.binaryblock + data[348:]
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)


# ------------------------------------------------------------------------------------------ the defects
# Each maker turns the valid file at `path` (a scan or a mask, `kind`) into a defective one and returns the
# path the tool must name (a few defects need another name, e.g. a wrong extension).


def _truncated_gzip(path, kind):
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])  # an interrupted copy
    return path


def _bad_crc(path, kind):
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF  # first byte of the gzip trailer's CRC32
    path.write_bytes(bytes(raw))
    return path


def _corrupt_deflate(path, kind):
    raw = bytearray(path.read_bytes())
    for i in range(len(raw) // 2, len(raw) // 2 + 16):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))
    return path


def _gzip_of_garbage(path, kind):
    path.write_bytes(gzip.compress(np.random.default_rng(1).bytes(5000), mtime=0))
    return path


def _not_gzip(path, kind):
    path.write_bytes(b"this is not a NIfTI file at all, just text with a .nii.gz name\n")
    return path


def _zero_bytes(path, kind):
    path.write_bytes(b"")
    return path


def _gzip_named_nii(path, kind):
    nii = path.with_name(path.name[:-3])  # x.nii.gz -> x.nii, still gzip-compressed
    path.rename(nii)
    return nii


def _wrong_extension(path, kind):
    mha = path.with_name(path.name.replace(".nii.gz", ".mha"))
    path.rename(mha)
    return mha


def _truncated_nii(path, kind):
    nii = path.with_name(path.name[:-3])
    data = gzip.decompress(path.read_bytes())
    path.unlink()
    nii.write_bytes(data[: len(data) - 300])  # uncompressed, cut inside the voxel data
    return nii


def _directory(path, kind):
    path.unlink()
    path.mkdir()
    (path / "inside.txt").write_text("a folder named like a scan")
    return path


def _symlink_loop(path, kind):
    path.unlink()
    os.symlink(path.name, path)  # points at itself
    return path


def _broken_symlink(path, kind):
    path.unlink()
    os.symlink("moved_away.nii.gz", path)
    return path


def _set(field: str, index: int | slice, value) -> Callable:
    def maker(path, kind):
        def edit(h):
            h[field][index] = value
        edit_header(path, edit)
        return path
    return maker


def _header_dims(dims) -> Callable:
    return _set("dim", slice(1, 4), dims)


def _singular_affine(path, kind):
    def edit(h):
        h["srow_z"] = [0.0, 0.0, 0.0, -8.0]  # slice axis gone: every slice at the same place
        h["qform_code"] = 0
    edit_header(path, edit)
    return path


def _nan_affine(path, kind):
    def edit(h):
        h["srow_x"] = [np.nan, 0.0, 0.0, -4.0]
    edit_header(path, edit)
    return path


def _sform_qform_disagree(path, kind):
    def edit(h):
        h["srow_x"] = [0.5, 0.0, 0.0, 6.0]  # sform 10 mm to the side of the (unchanged) qform
    edit_header(path, edit)
    return path


def _infinite_scaling(path, kind):
    def edit(h):
        h["scl_slope"] = np.inf
    edit_header(path, edit)
    return path


def _rewrite(make: Callable[[np.ndarray], np.ndarray], intent: str | None = None) -> Callable:
    def maker(path, kind):
        arr = np.asanyarray(nib.load(str(path)).dataobj)
        write_nifti(path, make(arr.copy()), intent=intent)
        return path
    return maker


def _with_nan(a):
    a = a.astype(np.float32)
    a[3, 4, 5] = np.nan
    return a


def _with_inf(a):
    a = a.astype(np.float32)
    a[:, :, 2] = np.inf  # one slice of Inf
    return a


def _rgb(a):
    rgb = np.zeros(a.shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    rgb["R"] = np.clip(a, 0, 255).astype(np.uint8)
    return rgb


def _label_values(values) -> Callable:
    def make(a):
        a = a.astype(np.float32)
        a[a == 1] = values[0]
        a[0, 0, 0] = values[1]
        return a
    return make


DEFECTS: dict[str, tuple[Callable, str]] = {
    # file system and container
    "zero_bytes": (_zero_bytes, "is an empty file (0 bytes)"),
    "not_gzip": (_not_gzip, "not gzip-compressed although named .nii.gz"),
    "gzip_of_garbage": (_gzip_of_garbage, "is not a readable NIfTI"),
    "truncated_gzip": (_truncated_gzip, "is truncated: the gzip stream ends before its end-of-stream marker"),
    "bad_crc": (_bad_crc, "CRC check failed"),
    "corrupt_deflate": (_corrupt_deflate, "is corrupt"),
    "gzip_named_nii": (_gzip_named_nii, "is gzip-compressed but named .nii"),
    "wrong_extension": (_wrong_extension, "not a NIfTI file"),
    "truncated_nii": (_truncated_nii, "is truncated: the file has"),
    "directory": (_directory, "is a directory"),
    "symlink_loop": (_symlink_loop, "is a symbolic link loop"),
    "broken_symlink": (_broken_symlink, "is a broken symbolic link"),
    # header
    "huge_dims": (_header_dims([30000, 30000, 30000]), "voxels, more than the"),
    "header_larger_than_data": (_header_dims([16, 16, 16]), "is truncated: the decompressed file has"),
    "data_larger_than_header": (_header_dims([16, 16, 4]), "bytes more than its header"),
    "two_d": (_rewrite(lambda a: a[:, :, 3]), "is 2D; a 3D volume is required"),
    "four_d": (_rewrite(lambda a: np.stack([a, a + 1], axis=-1)), "is 4D with 2 volumes"),
    "vector": (_rewrite(lambda a: np.stack([a, a, a], axis=-1)[:, :, :, None, :], intent="vector"),
               "3 components per voxel"),
    "rgb": (_rewrite(_rgb), "3 components per voxel"),
    "complex": (_rewrite(lambda a: a.astype(np.complex64)), "complex voxels"),
    "negative_spacing": (_set("pixdim", 1, -0.5), "voxel spacing (-0.5, 0.5, 2) mm"),
    "zero_spacing": (_set("pixdim", 3, 0.0), "voxel spacing (0.5, 0.5, 0) mm"),
    "nan_spacing": (_set("pixdim", 2, np.nan), "every spacing must be positive and finite"),
    "singular_affine": (_singular_affine, "has a singular sform"),
    "nan_affine": (_nan_affine, "has a sform with NaN/Inf entries"),
    "sform_qform_disagree": (_sform_qform_disagree, "place voxels up to 10 mm apart"),
    "infinite_scaling": (_infinite_scaling, "has an infinite intensity scaling (scl_slope inf"),
    # values
    "nan": (_rewrite(_with_nan), "contains 1 NaN/Inf voxel(s)"),
    "inf": (_rewrite(_with_inf), "contains 256 NaN/Inf voxel(s)"),
    "constant_zero": (_rewrite(np.zeros_like), "constant image (every voxel is 0)"),
    "constant_value": (_rewrite(lambda a: np.full_like(a, 7)), "constant image (every voxel is 7)"),
    # masks
    "label_0_2": (_rewrite(_label_values((2, 0))), "values"),
    "label_float_half": (_rewrite(_label_values((1, 0.5))), "0.5"),
    "label_nan": (_rewrite(_label_values((1, np.nan))), "contains 1 NaN/Inf voxel(s)"),
    "label_geometry": (_rewrite(lambda a: a[:, :, :6]), ""),  # message per tool, see below
}
MASK_ONLY = {"label_0_2", "label_float_half", "label_nan", "label_geometry"}
SCAN_ONLY = {"constant_zero", "constant_value"}  # an empty mask (all 0) is a valid mask
SCAN_DEFECTS = sorted(set(DEFECTS) - MASK_ONLY)
MASK_DEFECTS = sorted(set(DEFECTS) - SCAN_ONLY)


# ------------------------------------------------------------------------------------------ checks


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root: links by target, files by content (by size and time where unreadable)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                st = p.stat()
                try:
                    out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest(), st.st_mode)
                except PermissionError:
                    out[rel] = ("unreadable", st.st_size, st.st_mtime_ns, st.st_mode)
    return out


def problem_lines(err: str) -> list[str]:
    """The problems a refusal reported: the converter lists them under one header line, the others print one
    `error: <file>: <problem>` line (progress bars may come before it on stderr)."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert len(errors) == 1, err
    first = lines[errors[0]]
    if " found in the input; nothing was written:" in first:
        return [ln.strip() for ln in lines[errors[0] + 1:]]
    assert errors[0] == len(lines) - 1, err  # nothing after the error line
    return [first[len("error: "):]]


def assert_refused(run: Callable[[], int], capfd, root: Path, bad: Path, message: str) -> None:
    before = snapshot(root)
    rc = run()
    out, err = capfd.readouterr()
    assert rc == 2, err
    assert "Traceback" not in err + out, err
    problems = problem_lines(err)
    assert len(problems) == 1, err
    assert problems[0].startswith(f"{bad}: "), err
    assert message in problems[0], err
    assert snapshot(root) == before, "a refused run changed or wrote files"


# ------------------------------------------------------------------------------------------ mfns-convert-pd


def make_cohort(root: Path, n: int = 5) -> dict[str, dict[str, Path]]:
    files = {}
    for i in range(1, n + 1):
        s = f"s{i}"
        files[s] = {"t2w": write_nifti(root / f"{s}_T2w.nii.gz", scan_array(i)),
                    "mask": write_nifti(root / f"{s}_mask.nii.gz", mask_array(i))}
    return files


def write_manifest(root: Path, files: dict[str, dict[str, Path]], extra_rows: list[str] = ()) -> Path:
    rows = ["subject,t2w,mask,age"] + [f"{s},{f['t2w'].name},{f['mask'].name},{50 + i}"
                                        for i, (s, f) in enumerate(sorted(files.items()))] + list(extra_rows)
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


CONVERT_MESSAGES = {"label_0_2": "mask is not binary (found values 2 besides 0/1)",
                    "label_float_half": "PVS mask has non-integer values (e.g. 0.5)",
                    "label_geometry": "does not match T2w",
                    "four_d": "is 4D with 2 volumes; pass --volume-index to select one"}


@pytest.mark.parametrize("target,defect", [("t2w", d) for d in SCAN_DEFECTS] + [("mask", d) for d in MASK_DEFECTS])
def test_convert_refuses(target, defect, tmp_path, capfd):
    files = make_cohort(tmp_path / "cohort")
    maker, message = DEFECTS[defect]
    bad = maker(files["s2"][target], "scan" if target == "t2w" else "mask")
    files["s2"][target] = bad
    manifest = write_manifest(tmp_path / "cohort", files)
    out = tmp_path / "raw"
    assert_refused(lambda: convert_main(["--manifest", str(manifest), "--dataset-id", "501", "-o", str(out), "--quiet"]),
                   capfd, tmp_path, bad, CONVERT_MESSAGES.get(defect, message))


def test_convert_lists_every_bad_file_at_once(tmp_path, capfd):
    """A cohort with a truncated T2w, a NaN T2w, an Inf T2w and a 0/2 mask: one refusal listing all four."""
    files = make_cohort(tmp_path / "cohort")
    bad = [DEFECTS["truncated_gzip"][0](files["s1"]["t2w"], "scan"), DEFECTS["nan"][0](files["s2"]["t2w"], "scan"),
           DEFECTS["inf"][0](files["s3"]["t2w"], "scan"), DEFECTS["label_0_2"][0](files["s4"]["mask"], "mask")]
    manifest = write_manifest(tmp_path / "cohort", files)
    before = snapshot(tmp_path)
    rc = convert_main(["--manifest", str(manifest), "--dataset-id", "501", "-o", str(tmp_path / "raw"), "--quiet"])
    err = capfd.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines[0] == "error: 4 problems found in the input; nothing was written:"
    assert sorted(ln.strip().split(": ")[0] for ln in lines[1:]) == sorted(str(b) for b in bad)
    assert snapshot(tmp_path) == before


def test_convert_refuses_bad_test_scans(tmp_path, capfd):
    """--test-scans FOLDER: a link loop in it is named, not skipped; a NaN scan is refused like a T2w."""
    files = make_cohort(tmp_path / "cohort")
    manifest = write_manifest(tmp_path / "cohort", files)
    write_nifti(tmp_path / "tests" / "t1.nii.gz", scan_array(11))
    loop = _symlink_loop(write_nifti(tmp_path / "tests" / "t2.nii.gz", scan_array(12)), "scan")
    argv = ["--manifest", str(manifest), "--dataset-id", "501", "-o", str(tmp_path / "raw"), "--quiet",
            "--test-scans", str(tmp_path / "tests")]
    assert_refused(lambda: convert_main(argv), capfd, tmp_path, loop, "test scan is a symbolic link loop")
    loop.unlink()
    nan = _rewrite(_with_nan)(write_nifti(tmp_path / "tests" / "t2.nii.gz", scan_array(12)), "scan")
    assert_refused(lambda: convert_main(argv), capfd, tmp_path, nan, "test scan contains 1 NaN/Inf voxel(s)")


def test_convert_duplicate_subject_and_output_file(tmp_path, capfd):
    files = make_cohort(tmp_path / "cohort")
    manifest = write_manifest(tmp_path / "cohort", files, [f"s3,{files['s3']['t2w'].name},{files['s3']['mask'].name},60"])
    out = tmp_path / "raw"
    assert_refused(lambda: convert_main(["--manifest", str(manifest), "--dataset-id", "501", "-o", str(out), "--quiet"]),
                   capfd, tmp_path, Path(f"{manifest} line 7"), "duplicate subject s3 (also line 4)")
    manifest = write_manifest(tmp_path / "cohort", files)
    out.write_text("a file where the output folder should go")
    assert_refused(lambda: convert_main(["--manifest", str(manifest), "--dataset-id", "501", "-o", str(out), "--quiet"]),
                   capfd, tmp_path, out, "output location exists and is not a folder")
    assert_refused(lambda: convert_main(["--manifest", str(manifest), "--dataset-id", "501", "-o", str(out / "sub"),
                                         "--quiet"]),
                   capfd, tmp_path, out / "sub", f"output folder cannot be created: {out} is a file")


# ------------------------------------------------------------------------------------------ mfns-predict


def fake_model(root: Path) -> Path:
    """A training-output folder with an empty checkpoint: loading it would fail, so every refusal below
    happened before the model was touched."""
    m = root / "Dataset993_X" / "nnUNetTrainer__nnUNetPlans__2d"
    (m / "fold_0").mkdir(parents=True)
    (m / "plans.json").write_text("{}")
    (m / "dataset.json").write_text(json.dumps({"channel_names": {"0": "T2"}, "labels": {"background": 0, "PVS": 1},
                                                "file_ending": ".nii.gz"}))
    (m / "fold_0" / "checkpoint_final.pth").write_bytes(b"")
    return m


PREDICT_MESSAGES = {"wrong_extension": "not a NIfTI file (.nii or .nii.gz)",
                    "two_d": "is 2D; a 3D volume is required (2D image"}


@pytest.mark.parametrize("defect", [d for d in SCAN_DEFECTS if d != "directory"])  # a folder is an INPUT folder
def test_predict_refuses(defect, tmp_path, capfd):
    model = fake_model(tmp_path / "model")
    good = write_nifti(tmp_path / "in" / "good.nii.gz", scan_array(1))
    maker, message = DEFECTS[defect]
    bad = maker(write_nifti(tmp_path / "in" / "bad scan.nii.gz", scan_array(2)), "scan")
    out = tmp_path / "out"
    assert_refused(lambda: predict_main([str(good), str(bad), "-o", str(out), "-m", str(model), "-device", "cpu",
                                         "--no-report", "-q"]),
                   capfd, tmp_path, bad, PREDICT_MESSAGES.get(defect, message))


def test_predict_refuses_link_loop_in_input_folder_and_duplicates_and_output_file(tmp_path, capfd):
    model = fake_model(tmp_path / "model")
    write_nifti(tmp_path / "in" / "a.nii.gz", scan_array(1))
    loop = DEFECTS["symlink_loop"][0](write_nifti(tmp_path / "in" / "b.nii.gz", scan_array(2)), "scan")
    argv = ["-o", str(tmp_path / "out"), "-m", str(model), "-device", "cpu", "--no-report", "-q"]
    assert_refused(lambda: predict_main([str(tmp_path / "in")] + argv), capfd, tmp_path, loop, "symbolic link loop")
    loop.unlink()
    dup = write_nifti(tmp_path / "other" / "a_0000.nii.gz", scan_array(3))  # same output name 'a'
    assert_refused(lambda: predict_main([str(tmp_path / "in"), str(dup)] + argv), capfd, tmp_path, dup,
                   "same output name 'a'")
    (tmp_path / "out").write_text("a file where the output folder should go")
    assert_refused(lambda: predict_main([str(tmp_path / "in")] + argv), capfd, tmp_path, tmp_path / "out",
                   "output path exists and is not a folder")
    argv[1] = str(tmp_path / "out" / "sub")
    assert_refused(lambda: predict_main([str(tmp_path / "in")] + argv), capfd, tmp_path, tmp_path / "out" / "sub",
                   f"output folder cannot be created: {tmp_path / 'out'} is a file")


# ------------------------------------------------------------------------------------------ mfns-evaluate


def make_eval_folders(root: Path) -> tuple[Path, Path]:
    gt, pred = root / "labelsTr", root / "pred"
    for i, case in enumerate(("c1", "c2"), start=1):
        write_nifti(gt / f"{case}.nii.gz", mask_array(i))
        m = mask_array(i)
        m[2:4, 2:4, 1] = 1
        write_nifti(pred / f"{case}.nii.gz", m)
    return gt, pred


EVAL_SKIP = {"gzip_named_nii", "wrong_extension", "truncated_nii"}  # folders are listed as <case>.nii.gz only
EVAL_MESSAGES = {"label_0_2": "prediction has values other than 0/1 (e.g. 2)",
                 "label_float_half": "prediction has values other than 0/1 (e.g. 0.5)",
                 "label_geometry": "geometry differs from the label c2.nii.gz (size (16, 16, 6) != (16, 16, 8))"}


@pytest.mark.parametrize("defect", [d for d in MASK_DEFECTS if d not in EVAL_SKIP])
def test_evaluate_refuses(defect, tmp_path, capfd):
    gt, pred = make_eval_folders(tmp_path)
    maker, message = DEFECTS[defect]
    bad = maker(pred / "c2.nii.gz", "mask")
    out = tmp_path / "out"
    assert_refused(lambda: evaluate_main(["--gt", str(gt), "--pred", f"A={pred}", "--out", str(out), "--reference", "A",
                                          "--n-boot", "200"]),
                   capfd, tmp_path, bad, EVAL_MESSAGES.get(defect, message))


def test_evaluate_refuses_in_worker_processes(tmp_path, capfd):
    """--workers 2: the refusal raised in a worker process reaches the user as the same one line."""
    gt, pred = make_eval_folders(tmp_path)
    bad = _truncated_gzip(pred / "c2.nii.gz", "mask")
    assert_refused(lambda: evaluate_main(["--gt", str(gt), "--pred", f"A={pred}", "--out", str(tmp_path / "out"),
                                          "--reference", "A", "--n-boot", "200", "--workers", "2"]),
                   capfd, tmp_path, bad, "prediction is truncated")


def test_evaluate_refuses_bad_label_duplicates_and_output_file(tmp_path, capfd):
    gt, pred = make_eval_folders(tmp_path)
    out = tmp_path / "out"
    argv = ["--out", str(out), "--reference", "A", "--n-boot", "200"]
    bad = DEFECTS["truncated_gzip"][0](gt / "c1.nii.gz", "mask")
    assert_refused(lambda: evaluate_main(["--gt", str(gt), "--pred", f"A={pred}"] + argv), capfd, tmp_path, bad,
                   "label is truncated")
    gt, pred = make_eval_folders(tmp_path / "again")
    write_nifti(tmp_path / "again" / "pred2" / "c1.nii.gz", mask_array(1))  # c1 predicted twice by method A
    assert_refused(lambda: evaluate_main(["--gt", str(gt), "--pred", f"A={pred}", f"A={tmp_path / 'again' / 'pred2'}"]
                                         + argv),
                   capfd, tmp_path, tmp_path / "again" / "pred2" / "c1.nii.gz", "case c1 of method 'A' is also in")
    out.write_text("a file where the output folder should go")
    assert_refused(lambda: evaluate_main(["--gt", str(gt), "--pred", f"A={pred}"] + argv), capfd, tmp_path, out,
                   "output path exists and is not a folder")
    argv[1] = str(out / "sub")
    assert_refused(lambda: evaluate_main(["--gt", str(gt), "--pred", f"A={pred}"] + argv), capfd, tmp_path,
                   out / "sub", f"output folder cannot be created: {out} is a file")


# ------------------------------------------------------------------------------------------ mfns-counts, mfns-report


def make_counts_dataset(root: Path) -> tuple[Path, Path, Path]:
    gt, pred = make_eval_folders(root)
    subjects = {}
    for i, case in enumerate(("c1", "c2"), start=1):
        region = np.zeros(SHAPE, np.uint8)
        region[2:14, 2:14, :] = 1
        write_nifti(root / "regions" / f"{case}_BG.nii.gz", region)
        subjects[case] = {"rating_slices": {"BG": 3, "CSO": 5}, "region_masks": {"BG": f"regions/{case}_BG.nii.gz"}}
    sj = root / "subjects.json"
    sj.write_text(json.dumps({"schema": "nnunetv2_mfns.subjects/1", "subjects": subjects}))
    return gt, pred, sj


@pytest.mark.parametrize("defect,message", [
    ("truncated_gzip", "region mask BG is truncated"),
    ("nan", "region mask BG contains 1 NaN/Inf voxel(s)"),
    ("negative_region", "region mask BG has negative values (e.g. -1)"),
    ("sform_qform_disagree", "place voxels up to 10 mm apart"),
    ("output_is_file", "output path exists and is not a folder"),
])
def test_counts_refuses(defect, message, tmp_path, capfd):
    gt, pred, sj = make_counts_dataset(tmp_path)
    out = tmp_path / "out"
    region = tmp_path / "regions" / "c2_BG.nii.gz"
    if defect == "negative_region":
        bad = _rewrite(lambda a: np.where(a > 0, 1, -1).astype(np.int16))(region, "mask")
    elif defect == "output_is_file":
        out.write_text("a file where the output folder should go")
        bad = out
    else:
        bad = DEFECTS[defect][0](region, "mask")
    assert_refused(lambda: counts_main(["--subjects", str(sj), "--gt", str(gt), "--pred", f"A={pred}", "--out", str(out),
                                        "--no-auto-slices"]),
                   capfd, tmp_path, bad, message)


@pytest.mark.parametrize("defect", ["truncated_gzip", "nan", "constant_zero", "output_is_file"])
def test_report_refuses(defect, tmp_path, capfd):
    """The report's figures read each case's T2w (imagesTr/<case>_0000) after --out exists: those scans are
    checked with the inputs, so a bad one leaves no half-written report."""
    gt, pred = make_eval_folders(tmp_path)
    for i, case in enumerate(("c1", "c2"), start=1):
        write_nifti(tmp_path / "imagesTr" / f"{case}_0000.nii.gz", scan_array(i))
    out = tmp_path / "out"
    if defect == "output_is_file":
        out.write_text("a file where the output folder should go")
        bad, message = out, "output path exists and is not a folder"
    else:
        maker, message = DEFECTS[defect]
        bad = maker(tmp_path / "imagesTr" / "c2_0000.nii.gz", "scan")
    assert_refused(lambda: report_main(["--gt", str(gt), "--pred", f"A={pred}", "--out", str(out), "--reference", "A",
                                        "--dataset-dir", str(tmp_path), "--n-boot", "200"]),
                   capfd, tmp_path, bad, message)


# ------------------------------------------------------------------------------------------ permission denied


def test_unreadable_file_is_refused(tmp_path, capfd, monkeypatch):
    """chmod 000. Root (CI containers) reads such files anyway, so there the refusal path is exercised by
    making the reader's open() fail with the kernel's EACCES, as it does for any other user."""
    gt, pred = make_eval_folders(tmp_path)
    bad = pred / "c2.nii.gz"
    bad.chmod(0)
    if os.geteuid() == 0:
        real_open = open

        def denied(file, *args, **kwargs):
            if Path(file) == bad:
                raise PermissionError(errno.EACCES, "Permission denied", str(file))
            return real_open(file, *args, **kwargs)
        monkeypatch.setattr(image_header_checks, "open", denied, raising=False)
    try:
        assert_refused(lambda: evaluate_main(["--gt", str(gt), "--pred", f"A={pred}", "--out", str(tmp_path / "out"),
                                              "--reference", "A", "--n-boot", "200"]),
                       capfd, tmp_path, bad, "prediction cannot be read (permission denied)")
    finally:
        bad.chmod(0o644)


# ------------------------------------------------------------------------------------------ real processes


def test_console_scripts_refuse_truncated_nan_inf_in_subprocesses(tmp_path):
    """The issue's three cases through real interpreters: exit code 2, one stderr line, no traceback, and for
    mfns-predict torch is never imported (the refusal comes before any model code)."""
    model = fake_model(tmp_path / "model")
    files = make_cohort(tmp_path / "cohort")
    bad = {"truncated": _truncated_gzip(files["s1"]["t2w"], "scan"), "nan": _rewrite(_with_nan)(files["s2"]["t2w"], "scan"),
           "inf": _rewrite(_with_inf)(files["s3"]["t2w"], "scan")}
    manifest = write_manifest(tmp_path / "cohort", files)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = snapshot(tmp_path)
    conv = subprocess.run([sys.executable, "-m", "nnunetv2_mfns.cli.convert_pd", "--manifest", str(manifest),
                           "--dataset-id", "501", "-o", str(tmp_path / "raw"), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert conv.returncode == 2 and "Traceback" not in conv.stderr, conv.stderr
    assert conv.stderr.splitlines()[0] == "error: 3 problems found in the input; nothing was written:"
    for kind, path in bad.items():
        script = ("import sys; from nnunetv2_mfns.cli.predict import main; rc = main(sys.argv[1:]); "
                  "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(rc)")
        run = subprocess.run([sys.executable, "-c", script, str(files["s4"]["t2w"]), str(path), "-o",
                              str(tmp_path / "out"), "-m", str(model), "-device", "cpu", "--no-report", "-q"],
                             capture_output=True, text=True, env=env, timeout=300)
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().count("\n") == 0 and run.stderr.startswith(f"error: {path}: "), run.stderr
        assert {"truncated": "is truncated", "nan": "contains 1 NaN/Inf", "inf": "contains 256 NaN/Inf"}[kind] in run.stderr
        assert run.stdout.strip() == "torch not imported"
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------------ the reader itself


def test_valid_files_pass_and_4d_volume_selection(tmp_path):
    scan = write_nifti(tmp_path / "s.nii.gz", scan_array(1))
    checked = image_checks.read_checked(scan, "T2w image")
    assert checked.image.GetSize() == SHAPE and checked.image.GetSpacing() == (0.5, 0.5, 2.0)
    assert image_checks.read_checked(write_nifti(tmp_path / "m.nii", mask_array(1)), "mask", "binary_mask").array.max() == 1
    assert image_checks.read_checked(write_nifti(tmp_path / "e.nii.gz", np.zeros(SHAPE, np.uint8)), "mask",
                                     "binary_mask").array.max() == 0  # an empty mask is a valid mask
    four = write_nifti(tmp_path / "4d.nii.gz", np.stack([scan_array(1), scan_array(2)], axis=-1))
    vol = image_checks.read_checked(four, "T2w image", volume_index=1).array
    assert np.allclose(vol, scan_array(2).transpose(2, 1, 0))
    with pytest.raises(image_checks.ImageCheckError, match="--volume-index 2 is out of range"):
        image_checks.read_checked(four, "T2w image", volume_index=2)
    # NaN/Inf are counted in the selected volume only (the stream is counted chunk by chunk: 4 MiB chunks
    # would never split this small file, so a 7-byte chunk size makes voxels straddle chunk borders)
    nan_first = write_nifti(tmp_path / "4dnan.nii", np.stack([_with_nan(scan_array(1)), _with_inf(scan_array(2))], -1))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(image_header_checks, "GZIP_CHUNK_BYTES", 7)
        with pytest.raises(image_checks.ImageCheckError, match=r"contains 1 NaN/Inf voxel\(s\)"):
            image_checks.read_checked(nan_first, "T2w image", volume_index=0)
        with pytest.raises(image_checks.ImageCheckError, match=r"contains 256 NaN/Inf voxel\(s\)"):
            image_checks.read_checked(nan_first, "T2w image", volume_index=1)


def test_huge_header_is_refused_without_reading_the_data(tmp_path, monkeypatch):
    """The refusal comes from the header alone: the gzip stream and the voxels are never read."""
    path = write_nifti(tmp_path / "h.nii.gz", scan_array(1))
    _header_dims([30000, 30000, 30000])(path, "scan")
    monkeypatch.setattr(image_checks, "check_data_stream", lambda *a: pytest.fail("data stream read"))
    with pytest.raises(image_checks.ImageCheckError, match=r"size \(30000, 30000, 30000\) = 2.7e\+13 voxels"):
        image_checks.read_checked(path, "T2w image")

"""FAKE result sets for tests, the benchmark and the example report: NOT data, NOT results of any model.

Test-fixture code: it lives under tests/ and is not installed with the package (issue 11). The benchmark
and the example report put this folder on sys.path to use it.

`make_fake_result_set` writes, into one folder, what the evaluation reads from a real run: an nnU-Net raw
dataset (imagesTr, labelsTr, regions/, subjects.json with rating slices and simulated rater counts, an
mfns_splits.json) and one prediction folder per fake "method". Truth masks hold small PVS-like objects
(BG: short tubes along the slice axis, CSO: short radial in-plane segments) inside an ellipsoidal
"brain"; a fake method's prediction drops a fraction of the true objects, dilates some, and adds false
positive blobs, with per-method rates so that methods differ. Everything is drawn from one seeded
numpy Generator; the seed is stored in subjects.json (`created_by`). This is a geometric stand-in only;
the realistic phantom is `mfns-make-phantom` (dataset_conversion/phantom).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from nnunetv2_mfns.dataset_conversion.splits import make_age_stratified_splits
from nnunetv2_mfns.evaluation.counts import count_rating_slices
from nnunetv2_mfns.jsonio import write_json_atomic

# miss rate of true objects, probability to dilate a kept object in-plane, false-positive blobs per
# 100 true objects: the fake "methods" differ in these only
DEFAULT_METHODS = {
    "MfNS_De": (0.12, 0.15, 6.0),
    "nnUNet_3d": (0.08, 0.45, 14.0),
    "UNet2D": (0.20, 0.30, 12.0),
}


@dataclass
class FakeResultSet:
    dataset_dir: Path
    gt_dir: Path
    pred_dirs: dict[str, Path]
    subjects_json: Path
    splits_json: Path
    cases: list[str]


def _write(arr: np.ndarray, spacing_zyx: tuple[float, ...], path: Path) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    sitk.WriteImage(img, str(path), useCompression=True)


def _brain(shape: tuple[int, int, int]) -> np.ndarray:
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    cz, cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2
    return ((z - cz) / (0.48 * shape[0])) ** 2 + ((y - cy) / (0.45 * shape[1])) ** 2 + ((x - cx) / (0.42 * shape[2])) ** 2 <= 1


def _regions(shape: tuple[int, int, int], brain: np.ndarray) -> dict[str, np.ndarray]:
    """BG: central deep-grey box in the lower half; CSO: white matter (brain minus a central core) in the upper half."""
    nz, ny, nx = shape
    bg = np.zeros(shape, bool)
    bg[int(0.2 * nz):int(0.55 * nz), int(0.3 * ny):int(0.7 * ny), int(0.22 * nx):int(0.78 * nx)] = True
    bg &= brain
    z, y, x = np.ogrid[:nz, :ny, :nx]
    core = ((y - (ny - 1) / 2) / (0.15 * ny)) ** 2 + ((x - (nx - 1) / 2) / (0.12 * nx)) ** 2 <= 1
    cso = ndimage.binary_erosion(brain, iterations=3) & ~core & (z >= int(0.55 * nz)) & (z < int(0.9 * nz))
    return {"BG": bg.astype(np.uint8), "CSO": cso.astype(np.uint8)}


def _draw_pvs(rng: np.random.Generator, shape: tuple[int, int, int], region: np.ndarray, n: int, kind: str) -> np.ndarray:
    out = np.zeros(shape, bool)
    cand = np.argwhere(region)
    if n == 0 or cand.size == 0:
        return out
    centres = cand[rng.integers(0, len(cand), size=n)]
    cy, cx = (shape[1] - 1) / 2, (shape[2] - 1) / 2
    for z, y, x in centres:
        if kind == "BG":  # runs along the slice axis: a few slices, 1-2 voxels wide in-plane
            length = int(rng.integers(1, 4))
            w = int(rng.integers(1, 3))
            out[z:z + length, y:y + w, x:x + w] = True
        else:  # CSO: radial in-plane segment, one slice thick
            d = np.array([y - cy, x - cx], float)
            d /= max(np.linalg.norm(d), 1e-6)
            t = np.linspace(0, rng.uniform(3, 12), 25)
            yy = np.clip(np.round(y + t * d[0]).astype(int), 0, shape[1] - 1)
            xx = np.clip(np.round(x + t * d[1]).astype(int), 0, shape[2] - 1)
            out[z, yy, xx] = True
    return out & (ndimage.binary_dilation(region, iterations=2) > 0)


def fake_prediction(rng: np.random.Generator, gt: np.ndarray, brain: np.ndarray, miss: float, p_dilate: float,
                    fp_per_100: float) -> np.ndarray:
    """A plausible imperfect segmentation of gt: objects dropped, some dilated in-plane, blobs added."""
    lab, n = ndimage.label(gt, structure=np.ones((3, 3, 3), bool))
    case_miss = float(np.clip(miss * rng.uniform(0.5, 1.5), 0, 0.95))
    keep = rng.random(n + 1) >= case_miss
    dil = rng.random(n + 1) < p_dilate
    keep[0] = dil[0] = False
    pred = keep[lab]
    grow = ndimage.binary_dilation((keep & dil)[lab], structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool))
    pred |= grow & brain
    n_fp = int(rng.poisson(fp_per_100 * max(n, 1) / 100.0))
    cand = np.argwhere(brain)
    for z, y, x in cand[rng.integers(0, len(cand), size=n_fp)]:
        pred[z, y:y + int(rng.integers(1, 3)), x:x + int(rng.integers(1, 3))] = True
    return pred.astype(np.uint8)


def make_fake_result_set(root: Path, n_cases: int = 6, shape: tuple[int, int, int] = (24, 96, 80),
                         spacing_zyx: tuple[float, float, float] = (2.0, 0.5, 0.5),
                         methods: dict[str, tuple[float, float, float]] | None = None, n_raters: int = 2,
                         pvs_per_case: tuple[int, int] = (30, 120), seed: int = 0, write_images: bool = True,
                         n_groups: int = 5) -> FakeResultSet:
    """Writes a FAKE dataset + prediction folders under root (see module docstring) and returns their paths.

    n_cases must be >= 3 (the splitter needs test, validation and training groups)."""
    methods = DEFAULT_METHODS if methods is None else methods
    rng = np.random.default_rng(seed)
    root = Path(root)
    ds = root / "Dataset999_FakePVS"
    gt_dir, img_dir, reg_dir = ds / "labelsTr", ds / "imagesTr", ds / "regions"
    for d in (gt_dir, reg_dir) + ((img_dir,) if write_images else ()):
        d.mkdir(parents=True, exist_ok=True)
    pred_dirs = {m: root / "predictions" / m for m in methods}
    for d in pred_dirs.values():
        d.mkdir(parents=True, exist_ok=True)

    brain = _brain(shape)
    regions = _regions(shape, brain)
    nz = shape[0]
    rating = {"BG": int(round(0.4 * nz)), "CSO": int(round(0.7 * nz))}
    subjects = {}
    cases = [f"FAKE_{i + 1:03d}" for i in range(n_cases)]
    ages = rng.uniform(42, 79, size=n_cases).round(1)
    for case, age in zip(cases, ages):
        # burden grows with age, as in the cohort; spread so that high/medium/low subjects exist
        n_pvs = int(pvs_per_case[0] + (pvs_per_case[1] - pvs_per_case[0]) * (age - 42) / 37 * rng.uniform(0.6, 1.2))
        gt = _draw_pvs(rng, shape, regions["BG"].astype(bool), n_pvs // 3, "BG")
        gt |= _draw_pvs(rng, shape, regions["CSO"].astype(bool), n_pvs - n_pvs // 3, "CSO")
        gt &= brain
        _write(gt.astype(np.uint8), spacing_zyx, gt_dir / f"{case}.nii.gz")
        for name, arr in regions.items():
            _write(arr, spacing_zyx, reg_dir / f"{case}_{name}.nii.gz")
        if write_images:
            img = np.where(brain, 395.0, 0.0) + rng.normal(0, 12, shape)
            img[regions["BG"].astype(bool)] = 420.0 + rng.normal(0, 12, int(regions["BG"].sum()))
            img[gt] = rng.normal(560, 30, int(gt.sum()))
            z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
            vent = (((y - shape[1] / 2) / (0.08 * shape[1])) ** 2 + ((x - shape[2] / 2) / (0.05 * shape[2])) ** 2 <= 1) \
                & (z > 0.35 * nz) & (z < 0.65 * nz)
            img[vent] = 1150.0
            _write(ndimage.gaussian_filter(img, (0, 0.7, 0.7)).astype(np.float32), spacing_zyx,
                   img_dir / f"{case}_0000.nii.gz")
        for m, (miss, p_dil, fp) in methods.items():
            _write(fake_prediction(rng, gt, brain, miss, p_dil, fp), spacing_zyx, pred_dirs[m] / f"{case}.nii.gz")
        true = count_rating_slices(gt, {"rating_slices": rating}, ds, rating_slices=rating,
                                   region_arrays={k: v.astype(bool) for k, v in regions.items()}, case=case)
        raters = {}
        for r in range(n_raters):
            # raters miss some faint PVS (10-25%) and disagree by a few counts
            raters[f"rater{r + 1}"] = {k: int(max(0, round(v["total"] * rng.uniform(0.75, 0.9) + rng.normal(0, 2))))
                                       for k, v in true.items()}
        subjects[case] = {
            "subject": f"sub-fake{case[-3:]}", "age": float(age), "sex": "F" if rng.random() < 0.5 else "M",
            "set": "train", "rating_slices": rating,
            "region_masks": {k: f"regions/{case}_{k}.nii.gz" for k in regions},
            "true_counts": {k: v["total"] for k, v in true.items()}, "rater_counts": raters, "source": None,
        }
    subjects_json = ds / "subjects.json"
    write_json_atomic({
        "schema": "nnunetv2_mfns.subjects/1", "dataset_name": ds.name,
        "created_by": {"tool": "tests/synthetic_results.py (FAKE result set)", "version": "0.1.0",
                       "seed": seed, "args": {"n_cases": n_cases, "shape": list(shape)}},
        "slice_axis": "ITK index axis 2 (numpy axis 0 of sitk.GetArrayFromImage)", "subjects": subjects},
        subjects_json)
    write_json_atomic({"channel_names": {"0": "T2"}, "labels": {"background": 0, "PVS": 1},
                       "numTraining": n_cases, "file_ending": ".nii.gz"}, ds / "dataset.json")
    # the project's own splitter, so the fake folds have the real mfns_splits.json shape (group_stats too)
    splits = make_age_stratified_splits({c: float(a) for c, a in zip(cases, ages)}, seed=seed,
                                        n_groups=max(3, min(n_groups, n_cases)),
                                        sexes={c: subjects[c]["sex"] for c in cases})
    splits_json = ds / "mfns_splits.json"
    write_json_atomic(splits, splits_json)
    return FakeResultSet(ds, gt_dir, pred_dirs, subjects_json, splits_json, cases)


def write_fake_training_logs(root: Path, curves: dict[str, list[float]], budget: str = "FAKE",
                             iterations_per_epoch: int = 50, seed: int = 0) -> dict:
    """FAKE nnU-Net model folders holding only a training_log_*.txt in nnU-Net's format, one per method, with the
    given per-epoch pseudo-Dice plus seeded noise; returns the matching provenance["training"] section."""
    rng = np.random.default_rng(seed)
    training = {}
    for method, curve in curves.items():
        folder = Path(root) / "fake_models" / method / "fold_0"
        folder.mkdir(parents=True, exist_ok=True)
        ts = "2026-01-01 00:00:00.000000: "
        lines = [ts + "FAKE training log written by tests/synthetic_results.py (no network was trained)"]
        for e, d in enumerate(curve):
            noisy = float(np.clip(d + rng.normal(0, 0.01), 0, 1))
            lines += [ts + f"Epoch {e} ", ts + f"Pseudo dice [np.float32({noisy:.4f})] ", ts + "Epoch time: 1.0 s "]
        (folder / "training_log_2026_1_1_00_00_00.txt").write_text("\n".join(lines) + "\n")
        training[method] = {"trainer": f"FAKE ({method} is not a trained network)", "configuration": "none",
                            "budget": budget, "epochs": len(curve), "iterations_per_epoch": iterations_per_epoch,
                            "checkpoint": "none (FAKE predictions)", "model_folders": [str(folder)]}
    return training


def make_example_report(out: Path, work: Path) -> Path:
    """docs/example_report: the full report of a FAKE result set (10 cases, seed 2026), with FAKE training logs
    (one method's curve flat, one still rising) so that the budget header and its warning are shown."""
    from nnunetv2_mfns.evaluation.report import build_report

    fs = make_fake_result_set(Path(work), n_cases=10, shape=(28, 112, 96), pvs_per_case=(60, 300), seed=2026)
    plateau = [min(0.7, 0.1 + 0.1 * e) for e in range(20)]
    rising = [0.03 * e for e in range(20)]
    training = write_fake_training_logs(Path(work), {"MfNS_De": plateau, "nnUNet_3d": rising, "UNet2D": plateau}, seed=2026)
    provenance = {"data": "FAKE result set from tests/synthetic_results.py: not a model, not the paper's data",
                  "command": f"python tests/synthetic_results.py --example-report {out} --work {work}",
                  "training": training}
    return build_report(Path(out), fs.gt_dir, fs.pred_dirs, fs.subjects_json, fs.splits_json, provenance=provenance,
                        compute_hd95=True, seed=0, overwrite=True)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Regenerate the FAKE example report (docs/example_report).")
    ap.add_argument("--example-report", type=Path, required=True, help="output folder, e.g. docs/example_report")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mfns_example_fake"), help="where the FAKE inputs go")
    a = ap.parse_args()
    print(make_example_report(a.example_report, a.work))

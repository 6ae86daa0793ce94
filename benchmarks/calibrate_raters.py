"""Agreement of the simulated raters with each other and with the truth on a generated phantom cohort.

Reads a dataset written by `mfns-make-phantom` (images, labels, regions, subjects.json), re-runs the
raters of `dataset_conversion/phantom/raters.py` on the acquired rating slices with the same random
stream the generator uses (so the counts equal what the generator writes into subjects.json), and
prints Spearman rs rater vs rater and rater vs truth per region, plus the count ratios. Used to
calibrate the rater parameters (docs/phantom.md):

    mfns-make-phantom -o /tmp/mfns_realistic20 -d 501 --n-subjects 20 --seed 0 --profile realistic
    python benchmarks/calibrate_raters.py /tmp/mfns_realistic20/Dataset501_PVSPhantom

`--set rater2.k_noise=3.4` overrides a parameter for a what-if run; `--snr-scale` is not offered: to
see the effect of the noise level, generate the cohort with another `--snr`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from nnunetv2_mfns.dataset_conversion.phantom.cohort import subject_rngs
from nnunetv2_mfns.dataset_conversion.phantom.raters import DEFAULT_RATERS, RaterModel, rate_subject, true_count

REGIONS = ("BG", "CSO")


def load_rating_slices(dataset: Path, cache: Path | None = None) -> dict:
    """case -> {'index', 'seed', 'pixel_mm', 'rating', 'image', 'label', 'regions'} holding only the two
    rating slices (in the generator's array orientation), cached in an .npz next to the dataset."""
    import SimpleITK as sitk

    from nnunetv2_mfns.image_checks import read_checked, read_checked_image

    doc = json.loads((dataset / "subjects.json").read_text())
    seed = int(doc["created_by"]["seed"])
    out = {}
    for case, entry in sorted(doc["subjects"].items()):
        def arr(path: Path, role: str, expect: str) -> np.ndarray:
            a = read_checked(path, role, expect).array  # the project's checked reader (docs/input_checks.md)
            return a[:, ::-1, ::-1]  # undo cohort.to_sitk's RAS -> LPS flip
        img = read_checked_image(dataset / "imagesTr" / f"{case}_0000.nii.gz", "T2w image")
        image = sitk.GetArrayFromImage(img)[:, ::-1, ::-1]
        label = arr(dataset / "labelsTr" / f"{case}.nii.gz", "label", "binary_mask")
        regions = {r: arr(dataset / entry["region_masks"][r], f"region mask {r}", "region") for r in REGIONS}
        z = sorted(set(entry["rating_slices"].values()))
        keep = {zi: i for i, zi in enumerate(z)}
        out[case] = {"index": int(case.split("_")[-1]) - 1, "seed": seed, "pixel_mm": float(img.GetSpacing()[0]),
                     "rating": {r: keep[entry["rating_slices"][r]] for r in REGIONS},
                     "image": np.ascontiguousarray(image[z]), "label": np.ascontiguousarray(label[z]),
                     "regions": {r: np.ascontiguousarray(regions[r][z]) for r in REGIONS},
                     "true_written": entry["true_counts"]}
    return out


def rate_cohort(slices: dict, raters: tuple[RaterModel, ...]) -> dict[str, dict]:
    """case -> {'truth': {region: n}, rater: {region: n}} with the generator's rater stream."""
    rows = {}
    for case, s in slices.items():
        r_rate = subject_rngs(s["seed"], s["index"])[5]
        counts = rate_subject(r_rate, s["image"], s["regions"], s["rating"], s["pixel_mm"], raters)
        truth = {r: true_count(s["label"], s["regions"][r], s["rating"][r]) for r in REGIONS}
        if truth != s["true_written"]:
            raise RuntimeError(f"{case}: true counts {truth} differ from subjects.json {s['true_written']}")
        rows[case] = {"truth": truth, **counts}
    return rows


def agreement(rows: dict[str, dict], raters: tuple[RaterModel, ...]) -> dict:
    names = [r.name for r in raters]
    out = {}
    for region in REGIONS:
        truth = np.array([v["truth"][region] for v in rows.values()])
        c = {n: np.array([v[n][region] for v in rows.values()]) for n in names}
        out[region] = {
            "truth_range": [int(truth.min()), int(truth.max())], "truth_median": float(np.median(truth)),
            "rs_rater1_rater2": float(spearmanr(c[names[0]], c[names[1]])[0]),
            **{f"rs_truth_{n}": float(spearmanr(truth, c[n])[0]) for n in names},
            **{f"ratio_{n}": float(c[n].sum() / max(truth.sum(), 1)) for n in names},
        }
    return out


def _override(raters: tuple[RaterModel, ...], settings: list[str]) -> tuple[RaterModel, ...]:
    by_name = {r.name: r for r in raters}
    for item in settings:
        key, value = item.split("=", 1)
        name, field = key.split(".", 1)
        by_name[name] = dataclasses.replace(by_name[name], **{field: float(value)})
    return tuple(by_name[r.name] for r in raters)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path, help="DatasetXXX_Name folder written by mfns-make-phantom")
    p.add_argument("--set", action="append", default=[], help="rater parameter override, e.g. rater2.k_noise=3.4")
    p.add_argument("--per-case", action="store_true", help="print every case's counts")
    args = p.parse_args(argv)
    raters = _override(DEFAULT_RATERS, args.set)
    rows = rate_cohort(load_rating_slices(args.dataset), raters)
    if args.per_case:
        for case, v in rows.items():
            print(case, json.dumps(v))
    print(json.dumps({"dataset": str(args.dataset), "raters": [dataclasses.asdict(r) for r in raters],
                      "agreement": agreement(rows, raters)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

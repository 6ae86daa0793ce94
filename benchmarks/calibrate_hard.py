"""Calibration of the phantom's difficulty (issue 23): thresholding ceilings and non-learned detectors,
`hard` profile against `study`, on the same subjects (ages/sexes and seeds of `mfns-make-phantom`).

Per subject (truth = the exact PVS label; for `hard` labels_exact, not the annotator-style labelsTr):
- oracle (noise-free): best threshold of the noise-free acquired image, chosen per subject against its own
  truth, inside the image's brain mask -- raw intensity and local relative contrast (raters' reading);
- oracle (acquired): the same on the noisy image's local contrast (the ceiling of the local-contrast detector);
- local-contrast and Frangi detectors with parameters tuned on the OTHER half of the subjects (2-fold:
  even vs odd subject index), i.e. measured on subjects they were not tuned on;
- hard only: Dice of the annotator-style label against the exact truth (the training labels' own error).

Usage:
    python benchmarks/calibrate_hard.py --n-subjects 8 --seed 0 --out docs/results/phantom_hard_calibration
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from nnunetv2_mfns.dataset_conversion.phantom import SubjectSpec, make_demographics, simulate_subject  # noqa: E402
from nnunetv2_mfns.evaluation.detectors import (brain_mask, dice, local_contrast, oracle_threshold,  # noqa: E402
                                                tune)

logger = logging.getLogger("calibrate_hard")


def simulate(profile: str, n: int, seed: int, n_cohort: int) -> list[dict]:
    demo = make_demographics(n_cohort, seed)
    rows = []
    for i in range(n):
        t0 = time.process_time()
        res = simulate_subject(SubjectSpec(f"PVS_{i + 1:03d}", f"sub-{i + 1:03d}", demo[i][0], demo[i][1], seed, i),
                               profile)
        truth = res.hard["label_exact"] if res.hard else res.label
        rows.append({"case": res.spec.case_id, "image": res.image, "noise_free": res.noise_free, "truth": truth,
                     "annotator": res.label if res.hard else None, "spacing": res.grid.spacing,
                     "cpu_s": time.process_time() - t0, "details": res.details})
        logger.info("%s %s simulated (%.1f s CPU)", profile, res.spec.case_id, rows[-1]["cpu_s"])
    return rows


def per_subject(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        sp = r["spacing"]
        mask = brain_mask(r["image"], sp)
        mask_nf = brain_mask(r["noise_free"], sp)
        rec = {"case": r["case"], "truth_voxels": int(r["truth"].sum()),
               "oracle_noise_free_raw": oracle_threshold(r["noise_free"], r["truth"], mask_nf)[0],
               "oracle_noise_free_local_contrast": oracle_threshold(local_contrast(r["noise_free"], sp), r["truth"],
                                                                    mask_nf)[0],
               "oracle_acquired_local_contrast": oracle_threshold(local_contrast(r["image"], sp), r["truth"], mask)[0],
               "truth_in_brain_mask": float(r["truth"][mask].sum() / max(r["truth"].sum(), 1))}
        if r["annotator"] is not None:
            rec["annotator_vs_exact"] = dice(r["annotator"], r["truth"])
        out.append(rec)
    return out


def cross_validated(rows: list[dict], kind: str) -> tuple[list[dict], list[dict]]:
    """2-fold: tune on even-index subjects, test on odd ones, and the other way round."""
    halves = [rows[0::2], rows[1::2]]
    results, tuned = [], []
    for k in (0, 1):
        train, test = halves[k], halves[1 - k]
        det = tune(kind, [r["image"] for r in train], [r["truth"] for r in train], train[0]["spacing"])
        tuned.append({"tuned_on": [r["case"] for r in train], **det.as_dict()})
        for r in test:
            results.append({"case": r["case"], "dice": dice(det.predict(r["image"], r["spacing"]), r["truth"])})
    return sorted(results, key=lambda x: x["case"]), tuned


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-subjects", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--profiles", default="study,hard")
    p.add_argument("--out", type=Path, required=True, help="writes <out>/calibration.json and README.md")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    t0 = time.time()
    res = {"command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]), "seed": a.seed,
           "n_subjects": a.n_subjects, "machine": f"{platform.processor() or platform.machine()}, "
                                                   f"{os.cpu_count()} CPUs (shared), OMP_NUM_THREADS="
                                                   f"{os.environ.get('OMP_NUM_THREADS')}", "profiles": {}}
    for prof in a.profiles.split(","):
        rows = simulate(prof, a.n_subjects, a.seed, max(20, a.n_subjects))
        subj = per_subject(rows)
        lc, lc_tuned = cross_validated(rows, "local_contrast")
        fr, fr_tuned = cross_validated(rows, "frangi")
        for s, x, y in zip(subj, lc, fr):
            s["local_contrast_cv"], s["frangi_cv"] = x["dice"], y["dice"]
        keys = [k for k in subj[0] if k not in ("case", "truth_voxels")]
        summary = {k: round(float(np.mean([s[k] for s in subj])), 4) for k in keys}
        extra = {}
        if rows[0]["details"].get("hard"):
            extra["pvs_touching_wmh_or_lacune_fraction"] = round(float(np.mean(
                [r["details"]["hard"]["pvs_touching_wmh_or_lacune_fraction"] for r in rows])), 4)
        res["profiles"][prof] = {"mean": summary, "subjects": subj, "tuned": {"local_contrast": lc_tuned,
                                                                             "frangi": fr_tuned},
                                 "simulate_cpu_s_mean": round(float(np.mean([r["cpu_s"] for r in rows])), 1), **extra}
        logger.info("%s: %s", prof, summary)
    res["wall_s"] = round(time.time() - t0, 1)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "calibration.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# Phantom difficulty calibration ({', '.join(res['profiles'])})", "",
             f"Command: `python benchmarks/{res['command']}`; seed {a.seed}; {a.n_subjects} subjects per profile "
             f"(the first {a.n_subjects} of the default 20-subject cohort); machine: {res['machine']}; "
             f"wall {res['wall_s']} s.", "",
             "Mean per-subject Dice against the exact truth. Oracles pick the threshold per subject on its own truth "
             "(a ceiling, tuned on the data it is scored on, by definition); the detectors (`_cv`) were tuned on the "
             "other half of the subjects (2-fold, even vs odd index).", "",
             "| measure | " + " | ".join(res["profiles"]) + " |", "|---|" + "---|" * len(res["profiles"])]
    allkeys = list(dict.fromkeys(k for v in res["profiles"].values() for k in v["mean"]))
    for k in allkeys:
        lines.append(f"| {k} | " + " | ".join(str(v["mean"].get(k, "-")) for v in res["profiles"].values()) + " |")
    (a.out / "README.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

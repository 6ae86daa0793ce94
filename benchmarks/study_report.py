"""One head-to-head report from the per-job workdirs of `benchmarks/run_study.sh` (issue 10).

The CPU study runs one `mfns-compare` call per method x fold (each in its own workdir, so that two queues can
share the two cores); each call predicts its fold's test group with the tested checkpoint and writes a
provenance.json. This merges them: the methods' prediction folders (one per finished fold), one provenance
whose `training` entry per method lists every fold's model folder and split digest, and then `mfns-report`
with the study's labels, subjects.json and splits. Folds differ between methods while the study is
incomplete; paired tests then use the cases both methods have (the report lists the missing cases).

    python benchmarks/study_report.py --study /work/study --out docs/results/study_head_to_head \\
        --methods MfNS_De,UNet2D,nnUNet_2d,nnUNetTrainerMfNSDe_ResCBAM
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

DATASET = "Dataset613_PVSStudy"


def finished_jobs(study: Path, methods: list[str], folds: list[int] | None = None) -> dict[str, list[tuple[int, Path]]]:
    """method -> [(fold, job workdir)] for every job (of `folds`, default all) whose workdir has predictions
    and a provenance.json."""
    out: dict[str, list[tuple[int, Path]]] = {}
    for m in methods:
        for wd in sorted(study.glob(f"w_{m}_f*")):
            fold = int(wd.name.rsplit("_f", 1)[1])
            if folds is not None and fold not in folds:
                continue
            pred = wd / "predictions_best" / m / f"fold_{fold}"
            if (wd / "provenance.json").is_file() and pred.is_dir() and any(pred.glob("*.nii.gz")):
                out.setdefault(m, []).append((fold, wd))
    return out


def merged_provenance(jobs: dict[str, list[tuple[int, Path]]]) -> dict:
    training: dict[str, dict] = {}
    calls = []
    first = None
    for m, runs in jobs.items():
        for fold, wd in runs:
            prov = json.loads((wd / "provenance.json").read_text())
            first = first or prov
            entry = prov["training"][m]
            if m not in training:
                training[m] = dict(entry, model_folders=[], split_digests={})
            training[m]["model_folders"] += entry["model_folders"]
            training[m]["split_digests"].update(entry.get("split_digests", {}))
            calls.append({"method": m, "fold": fold, "workdir": str(wd),
                          "mfns-compare command": prov.get("mfns-compare command"),
                          "training wall time (s)": prov.get("training wall time per method x fold (s)"),
                          "device": prov.get("device"), "versions": prov.get("versions")})
    return {"merged by": "benchmarks/study_report.py (one mfns-compare call per method x fold, run_study.sh)",
            "dataset": first.get("dataset"), "training budget": first.get("training budget"),
            "training": training, "folds": {m: [f for f, _ in runs] for m, runs in jobs.items()},
            "seeds": first.get("seeds"), "test-time augmentation": first.get("test-time augmentation"),
            "checkpoint used for testing": first.get("checkpoint used for testing"), "jobs": calls}


def fold_list(text: str) -> list[int]:
    """argparse type for --folds here and in study_status.py: "0,1,4" -> [0, 1, 4], folds 0-4 only."""
    try:
        folds = [int(f) for f in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated fold numbers, got {text!r}") from None
    if any(not 0 <= f <= 4 for f in folds):
        raise argparse.ArgumentTypeError(f"folds are 0-4, got {text!r}")
    return folds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, required=True, help="the folder given to run_study.sh")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--methods", required=True, help="comma-separated, the first is the reference of the tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=fold_list, help="comma-separated folds to report (default: every finished one)")
    args = p.parse_args(argv)
    study = args.study.resolve()
    methods = args.methods.split(",")
    if not study.is_dir():
        raise SystemExit(f"--study {study}: no such folder")
    jobs = finished_jobs(study, methods, args.folds)
    missing = [m for m in methods if m not in jobs]
    if missing:
        raise SystemExit(f"no finished job for {', '.join(missing)} under {study}")
    # written beside the output first (mfns-report --overwrite replaces the output folder), copied in after
    args.out.parent.mkdir(parents=True, exist_ok=True)
    prov_path = args.out.parent / f".{args.out.name}.provenance.json"
    prov_path.write_text(json.dumps(merged_provenance(jobs), indent=1))
    raw = study / "raw" / DATASET
    cmd = [str(Path(sys.executable).parent / "mfns-report"), "--gt", str(raw / "labelsTr"), "--pred"]
    cmd += [f"{m}={wd / 'predictions_best' / m / f'fold_{f}'}" for m in methods for f, wd in jobs[m]]
    cmd += ["--subjects", str(raw / "subjects.json"), "--splits", str(raw / "mfns_splits.json"), "--out",
            str(args.out), "--reference", methods[0], "--seed", str(args.seed), "--provenance", str(prov_path),
            "--allow-missing", "--overwrite"]
    print(" ".join(cmd), flush=True)
    rc = subprocess.run(cmd).returncode
    if rc == 0:
        prov_path.replace(args.out / "provenance.json")
    return rc


if __name__ == "__main__":
    sys.exit(main())

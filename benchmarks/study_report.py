"""One head-to-head report from the per-job workdirs of `benchmarks/run_study.sh` (issue 10).

The CPU study runs one `mfns-compare` call per method x fold (each in its own workdir, so that two queues can
share the two cores); each call predicts its fold's test group with the tested checkpoint and writes a
provenance.json. This merges them: the methods' prediction folders (one per finished fold), one provenance
whose `training` entry per method lists every fold's model folder and split digest, and then `mfns-report`
with the study's labels, subjects.json and splits. Folds differ between methods while the study is
incomplete; paired tests then use the cases both methods have (the report lists the missing cases).

    python benchmarks/study_report.py --study /work/study --out docs/results/study_head_to_head \\
        --methods MfNS_De,UNet2D,nnUNet_2d,nnUNetTrainerMfNSDe_ResCBAM

`--restat DIR` recomputes, without the study folder, everything of a committed report that is a function of
its per-case `metrics.csv` (issue 22): stats.csv and summary.md (fold-level tests, Holm), the paired tests of
the detection-by-size section, and the budget note; report.md keeps every other section (figures, data,
provenance) as the original run wrote it and says which sections were regenerated:

    python benchmarks/study_report.py --restat docs/results/study_head_to_head
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
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


RESTAT_MARK = "> **Statistics recomputed:** "


def replace_section(text: str, heading: str, body: list[str]) -> str:
    """report.md with the section whose heading line starts with `heading` (up to the next `## `) replaced by
    that heading line and `body`; a missing section is an error (the report is not what we think it is)."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith(heading)]
    if len(starts) != 1:
        raise SystemExit(f"report.md: expected one section starting with {heading!r}, found {len(starts)}")
    i = starts[0]
    j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("## ")), len(lines))
    return "\n".join(lines[:i + 1] + body + lines[j:])


def _report_setting(text: str, name: str) -> str:
    for line in text.split("\n"):
        if line.startswith(f"- {name}: "):
            return line[len(f"- {name}: "):].strip()
    raise SystemExit(f"report.md: no setting line '- {name}: ...'")


def restat(out: Path) -> int:
    """Recomputes the statistics of a committed report from its metrics.csv (module docstring)."""
    import pandas as pd

    from nnunetv2_mfns.evaluation.budget import budget_note
    from nnunetv2_mfns.evaluation.fold_stats import fold_stats_explanation, fold_stats_markdown
    from nnunetv2_mfns.evaluation.report import write_metric_tables, write_size_detection
    for f in ("metrics.csv", "provenance.json", "report.md"):
        if not (out / f).is_file():
            raise SystemExit(f"--restat {out}: no {f}")
    report = (out / "report.md").read_text()
    prov = json.loads((out / "provenance.json").read_text())
    reference = _report_setting(report, "reference method")
    n_boot = int(_report_setting(report, "bootstrap resamples"))
    seed = int(_report_setting(report, "bootstrap seed"))
    metrics = pd.read_csv(out / "metrics.csv")
    metrics.attrs["methods"] = list(prov["training"])
    metrics.attrs["lesion_rule"] = {"connectivity": int(_report_setting(report, "connectivity (3D lesions)")),
                                    "lesion_rule": _report_setting(report, "lesion rule"),
                                    "min_iou": float(_report_setting(report, "lesion min IoU"))}
    methods = [m for m in prov["training"] if m in set(metrics["method"])]
    # written into a scratch folder; only stats.csv and summary.md are taken: the other tables would differ from
    # the committed ones in the 10th digit (recomputed from metrics.csv's rounded values) and say nothing new
    with tempfile.TemporaryDirectory() as tmp:
        _, tests = write_metric_tables(Path(tmp), metrics, reference, n_boot, seed)
        size_section = write_size_detection(Path(tmp), metrics, methods, reference, n_boot, seed)
        for f in ("stats.csv", "summary.md"):
            shutil.copyfile(Path(tmp) / f, out / f)
    report = replace_section(report, "## Paired comparison with", [
        "", fold_stats_explanation(tests, n_boot, seed), "", fold_stats_markdown(tests), ""])
    report = replace_section(report, "## Detection by PVS size", size_section[1:])
    # the budget table's rows came from the model folders of the original run: only its note is rewritten
    lines = report.split("\n")
    i = lines.index("## Training budget")
    j = next(k for k in range(i + 1, len(lines)) if lines[k].startswith("## "))
    note = [k for k in range(i, j) if lines[k].startswith("Read from the model folders")]
    if len(note) != 1:
        raise SystemExit("report.md: no budget note under '## Training budget'")
    lines[note[0]] = budget_note([e.get("budget") for e in prov["training"].values()])
    marks = [k for k, line in enumerate(lines) if line.startswith(RESTAT_MARK)]
    for k in reversed(marks):  # a second --restat replaces the line (and its blank line) instead of adding one
        del lines[k:k + 2]
    stamp = next(k for k, line in enumerate(lines) if line.startswith("Generated "))
    lines[stamp + 2:stamp + 2] = [
        f"{RESTAT_MARK}the sections 'Paired comparison', the tests of 'Detection by PVS size' and the note under the "
        "budget table were recomputed from metrics.csv by `python benchmarks/study_report.py --restat "
        f"{out}` (issue 22: tests at the level of folds, Holm); every other section is from the original run.", ""]
    (out / "report.md").write_text("\n".join(lines))
    print(f"{out}: stats.csv, summary.md and report.md recomputed from metrics.csv")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--restat", type=Path, metavar="DIR",
                   help="recompute the statistics of the committed report in DIR from its metrics.csv, then exit")
    p.add_argument("--study", type=Path, help="the folder given to run_study.sh")
    p.add_argument("--out", type=Path)
    p.add_argument("--methods", help="comma-separated, the first is the reference of the tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--folds", type=fold_list, help="comma-separated folds to report (default: every finished one)")
    args = p.parse_args(argv)
    if args.restat is not None:
        return restat(args.restat)
    if args.study is None or args.out is None or args.methods is None:
        p.error("--study, --out and --methods are required (or --restat DIR)")
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

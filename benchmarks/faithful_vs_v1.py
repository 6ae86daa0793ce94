"""The faithful MfNS_De build (default since issue 22) against the v1 build on the `study` phantom, same folds.

The v1 numbers are the committed study (docs/results/learning_curves_study/raw, docs/results/study_head_to_head:
trained as `nnUNetTrainerMfNSDe_study` before issue 22). The faithful numbers come from new trainings of the same
trainer name on the same data, splits and budget (`benchmarks/run_study.sh STUDY "MfNS_De:0 MfNS_De:1"`), read
from their nnU-Net results folder (learning curve) and their mfns-compare workdirs (test-subject metrics).
Writes a Markdown table: validation DSC along the curve (mean over the fold's validation subjects, both builds,
each fold), CPU seconds per iteration, and test DSC / SEN / PPV / lesion F1 per fold with the difference on
the same subjects. One or two folds: descriptive, no test (issue 22: the unit of replication is the training).

    python benchmarks/faithful_vs_v1.py --study /work/study --folds 0,1 --out docs/results/faithful_vs_v1_study
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
V1_CURVES = ROOT / "docs/results/learning_curves_study/raw/nnUNetTrainerMfNSDe_study__nnUNetPlans__2d"
V1_METRICS = ROOT / "docs/results/study_head_to_head/metrics.csv"
RESULTS = "results/Dataset613_PVSStudy/nnUNetTrainerMfNSDe_study__nnUNetPlans__2d"
METRICS = ("dsc", "sen", "ppv", "lesion_f1")


def _fmt(value: float, digits: int) -> str:
    return "-" if pd.isna(value) else f"{value:.{digits}f}"


def curve_means(csv: Path) -> pd.DataFrame:
    """Mean validation DSC and CPU s per iteration at every curve point of one fold's learning_curve.csv."""
    df = pd.read_csv(csv)
    df = df[df["group"] == "val"]
    out = df.groupby("iterations").agg(val_dsc=("dsc", "mean"), cpu_s=("cpu_s", "first")).reset_index()
    out["cpu_s_per_it"] = out["cpu_s"] / out["iterations"]
    return out


def new_test_metrics(study: Path, fold: int) -> pd.DataFrame:
    """Per-case metrics of the new training's test subjects (the mfns-compare report of its workdir)."""
    candidates = sorted((study / f"w_MfNS_De_f{fold}").glob("**/metrics.csv"))
    if not candidates:
        raise SystemExit(f"{study}/w_MfNS_De_f{fold}: no metrics.csv yet (the fold has not been tested)")
    df = pd.read_csv(candidates[0])
    if "metric" not in df.columns:  # wide table -> long
        df = df.melt(id_vars=[c for c in df.columns if c not in METRICS], value_vars=list(METRICS),
                     var_name="metric", value_name="value")
    return df[df["method"] == "MfNS_De"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--study", required=True, type=Path, help="the run_study.sh folder (raw, results, w_*)")
    p.add_argument("--folds", default="0,1")
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    folds = [int(f) for f in args.folds.split(",")]
    v1_all = pd.read_csv(V1_METRICS)
    v1_all = v1_all[v1_all["method"] == "MfNS_De"]
    lines = ["# Faithful MfNS_De vs the v1 build on the `study` phantom (annealed 500-iteration budget)", "",
             f"Command: `python benchmarks/faithful_vs_v1.py --study STUDY --folds {args.folds} --out {args.out}`; "
             "data, splits (seed 0), budget `study` and evaluation as in docs/results/study_head_to_head. v1 = the "
             "committed study (trained before issue 22), faithful = new trainings of `nnUNetTrainerMfNSDe_study`. "
             "Validation DSC = our evaluation on whole volumes of the fold's 4 validation subjects. Descriptive "
             "(one training per build and fold): no test.", ""]
    rows, curve_rows = [], []
    for fold in folds:
        new_curve_csv = args.study / RESULTS / f"fold_{fold}" / "learning_curve.csv"
        if not new_curve_csv.is_file():
            lines.append(f"- fold {fold}: not trained yet ({new_curve_csv} missing)")
            continue
        new_c, old_c = curve_means(new_curve_csv), curve_means(V1_CURVES / f"fold_{fold}.csv")
        merged = old_c.merge(new_c, on="iterations", how="outer", suffixes=("_v1", "_faithful"))
        for _, r in merged.iterrows():  # "-": that training has not reached this point (stopped or running)
            curve_rows.append([str(fold), str(int(r["iterations"])), _fmt(r["val_dsc_v1"], 3),
                               _fmt(r["val_dsc_faithful"], 3), _fmt(r["cpu_s_per_it_v1"], 1),
                               _fmt(r["cpu_s_per_it_faithful"], 1)])
        try:
            new_m = new_test_metrics(args.study, fold)
        except SystemExit as e:
            lines.append(f"- fold {fold}: {e}")
            continue
        old_m = v1_all[v1_all["fold"] == fold]
        for metric in METRICS:
            a = old_m[old_m["metric"] == metric].set_index("case")["value"]
            b = new_m[new_m["metric"] == metric].set_index("case")["value"]
            cases = sorted(set(a.index) & set(b.index))
            if not cases:
                continue
            rows.append([str(fold), metric, str(len(cases)), f"{a[cases].mean():.3f}", f"{b[cases].mean():.3f}",
                         f"{(b[cases] - a[cases]).mean():+.3f}"])
    lines += ["## Validation DSC along the learning curve", "",
              "| fold | iterations | v1 | faithful | v1 CPU s/it | faithful CPU s/it |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in curve_rows]
    lines += ["", "## Test subjects of the fold (checkpoint_best, no TTA)", "",
              "| fold | metric | subjects | v1 | faithful | faithful - v1 |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

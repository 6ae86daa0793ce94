"""Issue 22's longer-budget check: does the study's ordering hold after 4x more training (2000 vs 500 iterations)?

Two steps, so that the committed report is rebuilt from committed files only:

    python benchmarks/long_budget.py collect --study /work/study --folds 0,1 --out docs/results/long_budget_study
    python benchmarks/long_budget.py report --out docs/results/long_budget_study

`collect` copies, per method x fold and budget, the trainer's learning_curve.csv, the learning rate of every epoch
(parsed from nnU-Net's training logs) and the fold's test-subject metrics (the mfns-compare report of the job's
workdir, `w_METHOD_fF` for `study`, `w_long_METHOD_fF` for `long`) into OUT/raw/BUDGET/METHOD/. Study-budget runs
whose files are no longer in STUDY come from the committed study instead (docs/results/learning_curves_study/raw,
docs/results/study_head_to_head/metrics.csv), except MfNS_De: the committed study is the v1 build, so the
faithful build's study-budget numbers must come from STUDY (benchmarks/run_study.sh STUDY "MfNS_De:F").
`report` writes OUT/README.md (tables) and OUT/long_vs_study_curves.png. One training per method, fold and
budget: descriptive, no test (the unit of replication is the training, and 2 folds are too few for one).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from nnunetv2_mfns.evaluation.stats import markdown_table

ROOT = Path(__file__).resolve().parents[1]
DATASET = "Dataset613_PVSStudy"
# mfns-compare method name -> (trainer base name, configuration)
METHODS = {"MfNS_De": ("nnUNetTrainerMfNSDe", "2d"), "UNet2D": ("nnUNetTrainerUNet2D_PaperRecipe", "2d"),
           "nnUNet_3d": ("nnUNetTrainer", "3d_fullres")}
BUDGET_ITERATIONS = {"study": 500, "long": 2000}
LONG_POINTS = (500, 1000, 1500, 2000)  # the long curve's points shown in the validation table (its last = the end)
COMMITTED_CURVES = ROOT / "docs/results/learning_curves_study/raw"
COMMITTED_METRICS = ROOT / "docs/results/study_head_to_head/metrics.csv"
METRICS = ("dsc", "sen", "ppv", "lesion_f1")
LR_LINE = re.compile(r"^(\S+ \S+): Current learning rate: ([0-9.eE+-]+)")


def _results_folder(study: Path, method: str, budget: str) -> Path:
    trainer, configuration = METHODS[method]
    return study / "results" / DATASET / f"{trainer}_{budget}__nnUNetPlans__{configuration}"


def learning_rates(fold_dir: Path) -> pd.DataFrame:
    """LR of every epoch from nnU-Net's training logs (a resumed run has several logs; the last value wins)."""
    rates: dict[int, float] = {}
    for log in sorted(fold_dir.glob("training_log_*.txt")):
        epoch = None
        for line in log.read_text().splitlines():
            m = re.search(r": Epoch (\d+)\s*$", line)
            if m:
                epoch = int(m.group(1))
            m = LR_LINE.match(line)
            if m and epoch is not None:
                rates[epoch] = float(m.group(2))
    return pd.DataFrame(sorted(rates.items()), columns=["epoch", "lr"])


def collect(study: Path, folds: list[int], out: Path, budgets: list[str]) -> None:
    for budget in budgets:
        for method in METHODS:
            dest = out / "raw" / budget / method
            for fold in folds:
                fold_dir = _results_folder(study, method, budget) / f"fold_{fold}"
                curve = fold_dir / "learning_curve.csv"
                # run_study.sh's workdir names: w_METHOD_fF for `study`, w_BUDGET_METHOD_fF otherwise
                workdir = study / (f"w_{method}_f{fold}" if budget == "study" else f"w_{budget}_{method}_f{fold}")
                metrics = workdir / "report" / "metrics.csv"
                if curve.is_file():
                    dest.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(curve, dest / f"fold_{fold}_curve.csv")
                    learning_rates(fold_dir).to_csv(dest / f"fold_{fold}_lr.csv", index=False)
                    print(f"{budget} {method} fold {fold}: curve copied ({curve})")
                if metrics.is_file():
                    dest.mkdir(parents=True, exist_ok=True)
                    df = pd.read_csv(metrics)
                    df[df["method"] == method].to_csv(dest / f"fold_{fold}_metrics.csv", index=False)
                    print(f"{budget} {method} fold {fold}: test metrics copied ({metrics})")


def _curve(out: Path, budget: str, method: str, fold: int) -> pd.DataFrame | None:
    """Mean validation DSC per curve point (and the LR fraction of its epoch where known), or None."""
    own = out / "raw" / budget / method / f"fold_{fold}_curve.csv"
    trainer, configuration = METHODS[method]
    committed = COMMITTED_CURVES / f"{trainer}_study__nnUNetPlans__{configuration}" / f"fold_{fold}.csv"
    if own.is_file():
        df = pd.read_csv(own)
    elif budget == "study" and method != "MfNS_De" and committed.is_file():
        df = pd.read_csv(committed)
    else:
        return None
    df = df[df["group"] == "val"]
    curve = df.groupby(["epoch", "iterations"]).agg(val_dsc=("dsc", "mean"), cases=("case", "nunique"),
                                                    cpu_s=("cpu_s", "first")).reset_index()
    lr_csv = out / "raw" / budget / method / f"fold_{fold}_lr.csv"
    if lr_csv.is_file():
        lr = pd.read_csv(lr_csv)
        if len(lr):
            # a curve point at epoch e follows e finished epochs (e x iterations): the last LR those iterations
            # used is the LR of epoch e - 1
            curve = curve.merge(lr.assign(epoch=lr["epoch"] + 1), on="epoch", how="left")
            curve["lr_fraction"] = curve["lr"] / lr["lr"].iloc[0]
    return curve


def _test_metrics(out: Path, budget: str, method: str, fold: int) -> pd.DataFrame | None:
    own = out / "raw" / budget / method / f"fold_{fold}_metrics.csv"
    if own.is_file():
        df = pd.read_csv(own)
    elif budget == "study" and method != "MfNS_De" and COMMITTED_METRICS.is_file():
        df = pd.read_csv(COMMITTED_METRICS)
        df = df[(df["method"] == method) & (df["fold"] == fold)]
    else:
        return None
    return df if len(df) else None


def _paired(a: pd.DataFrame, b: pd.DataFrame, metric: str) -> tuple[float, float, float, int]:
    """Means of `metric` on the subjects both long tables have (paired by case name, never by row order):
    (mean of a, mean of b, mean of b - a, number of subjects)."""
    a = a[a["metric"] == metric].set_index("case")["value"]
    b = b[b["metric"] == metric].set_index("case")["value"]
    cases = sorted(set(a.index) & set(b.index))
    return a[cases].mean(), b[cases].mean(), (b[cases] - a[cases]).mean(), len(cases)


def _fmt(x: float, digits: int = 3, sign: bool = False) -> str:
    return "-" if x is None or pd.isna(x) else (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}")


def report(out: Path, folds: list[int]) -> str:
    shown_out = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    lines = ["# Issue 22's longer budget: 2000 vs 500 annealed iterations on the `study` phantom", "",
             "Commands: `STUDY_BUDGET=long benchmarks/run_study.sh STUDY \"MfNS_De:0 UNet2D:1\"` and "
             "`... \"UNet2D:0\"` (one queue per core, resumable), then `python benchmarks/long_budget.py collect "
             f"--study STUDY --folds {','.join(map(str, folds))} --out {shown_out}` "
             "and `python benchmarks/long_budget.py report --out ... --notes-file .../NOTES.md`. Data, splits "
             "(seed 0), evaluation: as in "
             "docs/results/study_head_to_head. Budgets: `study` = 20 x 25 = 500 iterations, `long` = 80 x 25 = 2000 "
             "(nnunetv2_mfns/budget_table.py); both compress each trainer's own LR schedule into the budget, so the "
             "LR is near 0 at the end of either. MfNS_De = the faithful network (issue 22) in both budgets; its "
             "study-budget numbers are new trainings (the committed study's MfNS_De is the v1 build). Machine: the "
             "project's 2-core CPU box, one torch thread per training, no GPU. One training per method, fold and "
             "budget: descriptive, no test.", ""]
    # ---- curves ----
    rows, have = [], {}
    for method in METHODS:
        for fold in folds:
            s, l = _curve(out, "study", method, fold), _curve(out, "long", method, fold)
            have[(method, fold)] = (s, l)
            study_complete = s is not None and s["iterations"].iloc[-1] >= BUDGET_ITERATIONS["study"]
            study_end = "-" if s is None else _fmt(s["val_dsc"].iloc[-1]) + (
                "" if study_complete else f" (stopped at {int(s['iterations'].iloc[-1])})")
            if l is None:
                rows.append([method, str(fold), study_end, "not run", "-", "-", "-", "-"])
                continue
            at = l.set_index("iterations")
            last = int(at.index.max())

            def val(it: int) -> str:
                return _fmt(at["val_dsc"].get(it)) + (f" ({at['lr_fraction'].get(it):.2f})"
                                                      if "lr_fraction" in at and it in at.index else "")
            long_complete = last >= BUDGET_ITERATIONS["long"]
            rows.append([method, str(fold), study_end, *(val(it) for it in LONG_POINTS[:-1]),
                         val(last) if long_complete else f"(at {last} so far) {val(last)}",
                         _fmt(at["val_dsc"].iloc[-1] - s["val_dsc"].iloc[-1], sign=True)
                         if study_complete and long_complete else "-"])
    lines += ["## Validation DSC (mean over the fold's 4 validation subjects), LR as a fraction of its peak in "
              "brackets",
              "", markdown_table(["method", "fold", "study, at 500 (end)", "long, at 500", "long, at 1000",
                                  "long, at 1500", "long, at 2000 (end)", "long end - study end"], rows)]
    # ---- test subjects ----
    test_rows, tests = [], {}
    for method in METHODS:
        for fold in folds:
            s, l = _test_metrics(out, "study", method, fold), _test_metrics(out, "long", method, fold)
            tests[(method, fold)] = (s, l)
            if s is None or l is None:
                status = f"study {'ok' if s is not None else 'missing'}, long {'ok' if l is not None else 'not run'}"
                test_rows.append([method, str(fold), "-", status, "-", "-", "-"])
                continue
            paired = [_paired(s, l, metric) for metric in METRICS]
            test_rows.append([method, str(fold), str(paired[0][3]),
                              *(f"{m_s:.3f} -> {m_l:.3f} ({d:+.3f})" for m_s, m_l, d, _ in paired)])
    lines += ["", "## Test subjects of the fold (checkpoint_best, no TTA): study -> long (difference)", "",
              markdown_table(["method", "fold", "subjects", "DSC", "SEN", "PPV", "lesion F1"], test_rows)]
    # ---- ordering: MfNS_De minus each other method, same subjects, both budgets ----
    order_rows = []
    for method in [m for m in METHODS if m != "MfNS_De"]:
        for fold in folds:
            ref, other = tests[("MfNS_De", fold)], tests[(method, fold)]
            cells = []
            for a, b in zip(ref, other):  # (study, long)
                if a is None or b is None:
                    cells.append("-")
                    continue
                *_, mfns_minus_method, n = _paired(b, a, "dsc")  # mean of a - b: MfNS_De minus the method
                cells.append(f"{mfns_minus_method:+.3f} ({n} subjects)")
            order_rows.append([method, str(fold), *cells])
    lines += ["", "## Ordering: test DSC of MfNS_De minus the method, same subjects", "",
              markdown_table(["method", "fold", "study (500)", "long (2000)"], order_rows)]
    _figure(have, folds, out / "long_vs_study_curves.png")
    lines += ["", "![curves](long_vs_study_curves.png)", "",
              "*Validation DSC against iterations: solid = `long` (2000), dashed = `study` (500).*", ""]
    return "\n".join(lines) + "\n"


def _figure(curves: dict, folds: list[int], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(folds), figsize=(5 * len(folds), 3.6), squeeze=False, sharey=True)
    for ax, fold in zip(axes[0], folds):
        for color, method in zip(("tab:red", "tab:blue", "tab:green"), METHODS):
            s, l = curves[(method, fold)]
            if l is not None:
                ax.plot(l["iterations"], l["val_dsc"], "-o", ms=3, color=color, label=f"{method} long")
            if s is not None:
                ax.plot(s["iterations"], s["val_dsc"], "--", color=color, alpha=0.7, label=f"{method} study")
        ax.set_title(f"fold {fold}")
        ax.set_xlabel("training iterations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation DSC")
    axes[0][0].legend(fontsize=7, loc="lower right")  # fold 0 has every line drawn
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect", help="copy curves, LRs and test metrics from a run_study.sh folder")
    c.add_argument("--study", required=True, type=Path)
    c.add_argument("--folds", default="0,1")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--budgets", default="study,long", help="budgets to collect (comma-separated; the report "
                   "reads study and long)")
    r = sub.add_parser("report", help="write OUT/README.md and the figure from OUT/raw")
    r.add_argument("--folds", default="0,1")
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--notes-file", type=Path, help="Markdown appended under 'Reading' (the session's reading)")
    args = p.parse_args(argv)
    folds = [int(f) for f in args.folds.split(",")]
    out = args.out.resolve()
    if args.cmd == "collect":
        collect(args.study, folds, out, args.budgets.split(","))
        return 0
    text = report(out, folds)
    if args.notes_file:
        text += "\n## Reading\n\n" + args.notes_file.read_text()
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text(text)
    print(f"wrote {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Where the resumable CPU study of `benchmarks/run_study.sh` stands: per method x fold, tested / trained so far /
not started, and the training CPU time the rest needs at each method's measured price (issue 10).

Read-only. "tested" = the job's workdir holds predictions and a provenance.json (what study_report.py merges);
the iterations come from the trainer's `learning_curve_state.json` (cumulative CPU seconds per finished epoch,
written after every epoch), so a job stopped mid-training shows how far its checkpoint got. The estimate is
training CPU only (one thread; prediction and the curve evaluations add a few minutes per job) at the mean
CPU seconds per iteration of that method's listed folds so far; a method with no finished epoch anywhere has none.

    python benchmarks/study_status.py --study /work/study \\
        --methods MfNS_De,UNet2D,nnUNet_2d,nnUNet_3d,nnUNetTrainerMfNSDe_NoAttention --folds 0,1,2,3,4
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script study_report.py
from study_report import DATASET, fold_list, finished_jobs  # noqa: E402

from nnunetv2_mfns.budget_table import BUDGETS  # noqa: E402
from nnunetv2_mfns.errors import MfnsInputError  # noqa: E402
from nnunetv2_mfns.evaluation.convergence import CURVE_STATE_FILE  # noqa: E402
from nnunetv2_mfns.orchestration.methods import budgeted_trainer, parse_method_spec  # noqa: E402

STUDY_BUDGET = "study"


def model_folder(study: Path, method: str, fold: int) -> Path:
    """nnU-Net's output folder of one study job (`<trainer>_study__nnUNetPlans__<configuration>/fold_k`)."""
    _, configuration, base = parse_method_spec(method)
    trainer = budgeted_trainer(base, STUDY_BUDGET)
    return study / "results" / DATASET / f"{trainer}__nnUNetPlans__{configuration}" / f"fold_{fold}"


def trained_so_far(folder: Path) -> tuple[int, float]:
    """(finished epochs, their cumulative training CPU seconds) from the curve state; (0, 0.0) without one."""
    state_path = folder / CURVE_STATE_FILE
    if not state_path.is_file():
        return 0, 0.0
    epochs = json.loads(state_path.read_text()).get("epochs", {})
    if not epochs:
        return 0, 0.0
    last = max(epochs, key=int)
    return int(last), float(epochs[last]["cpu_s"])


def study_status(study: Path, methods: list[str], folds: list[int]) -> list[dict]:
    """One row per method x fold: state, iterations trained, CPU s per iteration, remaining CPU s estimate."""
    budget = BUDGETS[STUDY_BUDGET]
    total_its = budget.epochs * budget.iterations
    tested = {(m, f) for m, runs in finished_jobs(study, methods, folds).items() for f, _ in runs}
    rows = []
    for m in methods:
        progress = {f: trained_so_far(model_folder(study, m, f)) for f in folds}
        its_cpu = [(e * budget.iterations, cpu) for e, cpu in progress.values() if e > 0]
        price = sum(c for _, c in its_cpu) / sum(i for i, _ in its_cpu) if its_cpu else None
        for f in folds:
            epochs, _ = progress[f]
            its = epochs * budget.iterations
            if (m, f) in tested:
                state = "tested"
            elif its >= total_its:
                state = "trained, not yet tested"
            elif its > 0:
                state = f"{its} of {total_its} iterations trained (stopped or running)"
            elif any(model_folder(study, m, f).glob("training_log_*.txt")):
                state = "started, no epoch finished"
            else:
                state = "not started"
            left = 0.0 if its >= total_its else (None if price is None else (total_its - its) * price)
            rows.append({"method": m, "fold": f, "state": state, "iterations": its, "cpu_s_per_iteration": price,
                         "training_cpu_s_left": left})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| method | fold | state | training CPU s / iteration (this method, so far) | training CPU left |",
             "|---|---|---|---|---|"]
    for r in rows:
        price = "n/a" if r["cpu_s_per_iteration"] is None else f"{r['cpu_s_per_iteration']:.2f}"
        left = r["training_cpu_s_left"]
        left_txt = "unknown (no epoch measured)" if left is None else ("-" if left == 0 else f"{left / 60:.0f} min")
        lines.append(f"| {r['method']} | {r['fold']} | {r['state']} | {price} | {left_txt} |")
    known = [r["training_cpu_s_left"] for r in rows if r["training_cpu_s_left"]]
    unknown = sum(r["training_cpu_s_left"] is None for r in rows)
    lines += ["", f"Training CPU time left: {sum(known) / 3600:.1f} single-thread hours"
              + (f", plus {unknown} job(s) of methods not measured yet" if unknown else "") + "."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--study", type=Path, required=True, help="the folder given to run_study.sh")
    p.add_argument("--methods", required=True, help="comma-separated, as given to run_study.sh")
    p.add_argument("--folds", type=fold_list, default=[0, 1, 2, 3, 4], help="comma-separated (default 0,1,2,3,4)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON instead of a Markdown table")
    args = p.parse_args(argv)
    study = args.study.resolve()
    if not (study / "results" / DATASET).is_dir():
        raise SystemExit(f"--study {study}: no results/{DATASET} there (not a run_study.sh folder)")
    try:
        rows = study_status(study, args.methods.split(","), args.folds)
    except MfnsInputError as e:  # a method name that is neither a named method nor a trainer class name
        raise SystemExit(str(e)) from None
    print(json.dumps(rows, indent=1) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

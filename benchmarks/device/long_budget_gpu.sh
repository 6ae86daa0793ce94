#!/usr/bin/env bash
# Issue 22's 2000-iteration runs that the 2-core CPU box cannot afford (stock 3d_fullres: ~16 CPU s per iteration,
# ~9 CPU hours per fold) as one device command. Installs the offline kit (benchmarks/device/prepare.sh), generates
# the `study` phantom, splits and preprocessing exactly as on the CPU (seed 0: same data, same folds), trains the
# JOBS side by side on the one GPU at BUDGET (default `long`), tests each on its fold's test subjects, and packs
# the learning curves, per-epoch learning rates and test metrics (benchmarks/long_budget.py collect) into
# OUT/long_budget_raw.tar.gz; unpack it into docs/results/long_budget_study and run long_budget.py report.
#
#   bash benchmarks/device/long_budget_gpu.sh [--jobs "nnUNet_3d:0 nnUNet_3d:1"] [--budget long] [--device cuda]
#                                            [--study DIR] [--wheels DIR]
#
# Device call: run(command="bash benchmarks/device/long_budget_gpu.sh", carry=[".whl"], timeout_s=590); a rerun
# with the same --study on a still-warm machine resumes every job (run_study.sh / mfns-compare are resumable).
# CPU dry run of the same path (tiny budget, one job, an already prepared study folder):
#   PYTHON=.venv/bin/python bash benchmarks/device/long_budget_gpu.sh --device cpu --budget ci \
#       --jobs "nnUNet_3d:0" --study /work/study --wheels /nonexistent
# Writes OUT (default ./device_out): long_budget_raw.tar.gz, long_budget_gpu.log, one log per job. Exit 0 when
# every job ended with its test metrics, 1 otherwise, 2 on bad arguments or a broken install.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
WHL="$REPO/.whl"
JOBS="nnUNet_3d:0 nnUNet_3d:1"
BUDGET=long
DEVICE=cuda
STUDY="${TMPDIR:-/tmp}/mfns_long_study"
while [ $# -gt 0 ]; do
  [ $# -ge 2 ] || [ "$1" = -h ] || [ "$1" = --help ] || { echo "error: long_budget_gpu.sh: $1 needs a value" >&2; exit 2; }
  case "$1" in
    --jobs) JOBS="$2"; shift 2 ;;
    --budget) BUDGET="$2"; shift 2 ;;
    --device) DEVICE="$2"; shift 2 ;;
    --study) STUDY="$2"; shift 2 ;;
    --wheels) WHL="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "error: long_budget_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "error: long_budget_gpu.sh: --device must be cpu or cuda, not '$DEVICE'" >&2; exit 2 ;; esac
for job in $JOBS; do
  [[ "$job" =~ ^[A-Za-z0-9_]+:[0-4]$ ]] || { echo "error: long_budget_gpu.sh: job '$job' is not METHOD:FOLD (fold 0-4)" >&2; exit 2; }
done
OUTDIR="${OUT:-$REPO/device_out}"
mkdir -p "$OUTDIR" "$STUDY" || { echo "error: long_budget_gpu.sh: cannot create $OUTDIR or $STUDY" >&2; exit 2; }
[ -n "${OUT:-}" ] || [ -f "$OUTDIR/.gitignore" ] || echo '*' > "$OUTDIR/.gitignore"
OUTDIR="$(cd "$OUTDIR" && pwd)"
STUDY="$(cd "$STUDY" && pwd)"
LOG="$OUTDIR/long_budget_gpu.log"
: > "$LOG"
say() { echo "$(date -u +%FT%TZ) long_budget_gpu.sh $*" | tee -a "$LOG"; }
# outside the repository, so that `import nnunetv2_mfns` finds the installed package (see check.sh)
cd "${TMPDIR:-/tmp}" || exit 2
# shellcheck source=benchmarks/device/kit_env.sh
source "$REPO/benchmarks/device/kit_env.sh"
install_kit long_budget_gpu.sh || exit 2
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >>"$LOG" 2>&1
"$PY" -c "import torch, sys; sys.exit(0 if '$DEVICE' == 'cpu' or torch.cuda.is_available() else 1)" || {
  echo "error: long_budget_gpu.sh: --device cuda but torch sees no GPU (use --device cpu for the dry run)" | tee -a "$LOG" >&2; exit 2; }
# run_study.sh uses the console scripts on PATH: the kit's bin/, else the running Python's
export PATH="$PATH:$(dirname "$(command -v "$PY")")"
N_JOBS=$(echo "$JOBS" | wc -w)
CORES=$(nproc)
export nnUNet_def_n_proc=$(( CORES > 8 ? 8 : CORES ))
[ "$DEVICE" = cuda ] && export nnUNet_n_proc_DA=$(( CORES / N_JOBS > 1 ? CORES / N_JOBS : 1 ))
say "study folder $STUDY, budget $BUDGET, device $DEVICE, jobs: $JOBS ($CORES cores)"
STUDY_DEVICE=$DEVICE bash "$REPO/benchmarks/run_study.sh" "$STUDY" prepare >>"$LOG" 2>&1 || {
  echo "error: long_budget_gpu.sh: preparing the study phantom failed (see $LOG)" | tee -a "$LOG" >&2; exit 1; }
say "prepared; training the jobs side by side"
PIDS=()
for job in $JOBS; do
  STUDY_DEVICE=$DEVICE STUDY_BUDGET=$BUDGET bash "$REPO/benchmarks/run_study.sh" "$STUDY" "$job" \
      > "$OUTDIR/job_${job/:/_f}.log" 2>&1 &
  PIDS+=($!)
done
RC=0
for pid in "${PIDS[@]}"; do wait "$pid" || RC=1; done
say "jobs ended; collecting"
FOLDS=$(for job in $JOBS; do echo "${job##*:}"; done | sort -u | paste -sd, -)
RAW="$(mktemp -d "${TMPDIR:-/tmp}/mfns_long_raw.XXXXXX")"
"$PY" "$REPO/benchmarks/long_budget.py" collect --study "$STUDY" --folds "$FOLDS" --budgets "$BUDGET" --out "$RAW" \
    >>"$LOG" 2>&1 || RC=1
tar -czf "$OUTDIR/long_budget_raw.tar.gz" -C "$RAW" . || RC=1
for job in $JOBS; do
  method=${job%%:*} fold=${job##*:}
  ls "$RAW/raw/$BUDGET/$method/fold_${fold}_metrics.csv" >/dev/null 2>&1 || { say "$job: no test metrics"; RC=1; }
done
say "done (exit $RC): $OUTDIR/long_budget_raw.tar.gz"
exit "$RC"

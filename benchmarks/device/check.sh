#!/usr/bin/env bash
# The device check (issue 24): installs the offline kit that prepare.sh built, then measures MfNS_De 2d, stock
# nnU-Net 2d and stock 3d_fullres on the realistic 0.5 mm phantom (generated here): s per training iteration
# with AMP, GPU peak memory, inference s per volume, nnUNet_compile on vs off (benchmarks/device/device_check.py).
#
#   bash benchmarks/device/check.sh [--cpu] [--quick] [--budget-s 420] [--wheels DIR]
#
# Writes device_check.json and device_check.log into $OUT (default ./device_out, which ignores itself in git).
# On a GPU node (nothing reachable, PyTorch installed): the kit in .whl/ is decompressed and pip-installed with
# --no-index --no-deps into a temporary --target folder; the project itself is installed from this tree.
# Without a kit folder the running Python's own packages are used (e.g. the project's .venv). --cpu: the
# same path on the CPU, GPU fields null with a reason; --quick: small phantom, few iterations.
# PYTHON selects the interpreter (default: python3). Exit 0: every compile-off figure measured (compile-on may
# time out on a slow compilation, recorded); 1: otherwise; 2: bad
# arguments or a broken install. Run time on the GPU: the install plus --budget-s (default 420 s) < 8 min.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
WHL="$REPO/.whl"
ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu|--quick) ARGS+=("$1"); shift ;;
    --budget-s) [ $# -ge 2 ] || { echo "error: check.sh: --budget-s needs a value" >&2; exit 2; }
                ARGS+=("$1" "$2"); shift 2 ;;
    --wheels) [ $# -ge 2 ] || { echo "error: check.sh: --wheels needs a folder" >&2; exit 2; }
              WHL="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "error: check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "${OUT:-}" ]; then
  OUTDIR="$OUT"
else
  OUTDIR="$REPO/device_out"
  mkdir -p "$OUTDIR" && { [ -f "$OUTDIR/.gitignore" ] || echo '*' > "$OUTDIR/.gitignore"; }
fi
mkdir -p "$OUTDIR" || { echo "error: check.sh: cannot create the output folder $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
LOG="$OUTDIR/device_check.log"
# run Python outside the repository: from its root, `import nnunetv2_mfns` would find the source folder, which
# lacks the installed package's nnunetv2_mfns.dataset_conversion / .evaluation (setup.py's package_dir)
cd "${TMPDIR:-/tmp}" || exit 2
: > "$LOG"
say() { echo "$(date -u +%FT%TZ) check.sh $*" | tee -a "$LOG"; }
command -v "$PY" >/dev/null 2>&1 || { echo "error: check.sh: no Python '$PY' (set PYTHON=...)" | tee -a "$LOG" >&2; exit 2; }

T0=$(date +%s.%N)
# shellcheck source=benchmarks/device/kit_env.sh
source "$REPO/benchmarks/device/kit_env.sh"
install_kit check.sh || exit 2
INSTALL_S=$("$PY" -c "print(round($(date +%s.%N) - $T0, 1))")
say "install/import check took ${INSTALL_S} s; running the device check"
PYTHONUNBUFFERED=1 "$PY" "$REPO/benchmarks/device/device_check.py" --out "$OUTDIR" --install-s "$INSTALL_S" \
    "${ARGS[@]}" 2>&1 | tee -a "$LOG"
RC=${PIPESTATUS[0]}
say "done (exit $RC): $OUTDIR/device_check.json, $LOG"
exit "$RC"

#!/usr/bin/env bash
# The issue-10 convergence study on CPU as a queue of resumable jobs, one `mfns-compare` call per method x fold
# (the `study` budget: each training also records its learning curve). Start one queue per core; rerun the
# same line after an interruption and every job continues where it stopped (nnU-Net's checkpoint_latest,
# finished jobs are skipped by mfns-compare). On a GPU the same study is one command:
#   mfns-compare --phantom --profile study --n-subjects 20 --phantom-id 613 --phantom-name PVSStudy --seed 0 \
#       --budget study --device cuda \
#       --methods MfNS_De,UNet2D,nnUNet_2d,nnUNet_3d,nnUNetTrainerMfNSDe_ResCBAM,nnUNetTrainerMfNSDe_NoAttention,nnUNetTrainerMfNSDe_NoHF,nnUNetTrainerMfNSDe_NoDS
#
# usage: benchmarks/run_study.sh STUDY_DIR "METHOD:FOLD METHOD:FOLD ..."
#   STUDY_DIR holds nnU-Net's three folders (raw, preprocessed, results) and one workdir per job (w_METHOD_fFOLD).
#   Example (two cores, two queues; prepare first so that the queues do not both generate the phantom):
#     benchmarks/run_study.sh /work/study prepare
#     benchmarks/run_study.sh /work/study "MfNS_De:0 nnUNetTrainerMfNSDe_ResCBAM:0" > queue_A.log 2>&1 &
#     benchmarks/run_study.sh /work/study "UNet2D:0 nnUNet_2d:0" > queue_B.log 2>&1 &
#   Where it stands (tested / iterations trained / CPU time left): benchmarks/study_status.py --study /work/study ...
#   STUDY_BUDGET=long: the 2000-iteration budget of issue 22; STUDY_DEVICE=cuda: on a GPU.
set -u
if [ $# -ne 2 ] || [ -z "$2" ]; then
  echo "usage: $0 STUDY_DIR prepare | \"METHOD:FOLD METHOD:FOLD ...\"" >&2
  exit 2
fi
study=$(realpath -m "$1")
jobs=$2
export nnUNet_raw=$study/raw nnUNet_preprocessed=$study/preprocessed nnUNet_results=$study/results
# STUDY_DEVICE=cuda trains on the GPU (benchmarks/device/long_budget_gpu.sh); default cpu
device=${STUDY_DEVICE:-cpu}
if [ "$device" = cpu ]; then
  # one torch thread per queue; augmentation inside the training process so that the curve's CPU seconds include it
  export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 nnUNet_def_n_proc=1 nnUNet_n_proc_DA=0 \
         nnUNet_compile=false
else
  # a GPU is fed by nnU-Net's augmentation worker processes (nnUNet_n_proc_DA, set by the caller or nnU-Net's default)
  export nnUNet_compile=${nnUNet_compile:-false}
fi
# the installed console script, else the checkout's .venv
mfns_compare=$(command -v mfns-compare || echo "$(dirname "$(realpath "$0")")/../.venv/bin/mfns-compare")
# STUDY_BUDGET=long runs the same jobs at the 4x budget of issue 22 (workdirs w_long_METHOD_fFOLD)
budget=${STUDY_BUDGET:-study}
common=(--phantom --profile study --n-subjects 20 --phantom-id 613 --phantom-name PVSStudy --seed 0 --budget "$budget"
        --device "$device")
if [ "$jobs" = prepare ]; then
  exec "$mfns_compare" "${common[@]}" --methods MfNS_De,UNet2D,nnUNet_2d,nnUNet_3d --stage prepare \
      --workdir "$study/w_prepare"
fi
for job in $jobs; do
  method=${job%%:*}
  fold=${job##*:}
  workdir=$study/w_${method}_f${fold}
  [ "$budget" = study ] || workdir=$study/w_${budget}_${method}_f${fold}
  echo "=== $(date -u +%FT%TZ) start $method fold $fold (workdir $workdir)"
  "$mfns_compare" "${common[@]}" --methods "$method" --folds "$fold" --workdir "$workdir"
  echo "=== $(date -u +%FT%TZ) end $method fold $fold rc $?"
done

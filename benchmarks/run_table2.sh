#!/usr/bin/env bash
# Issue 23: the paper's Table 2 in full on the `hard` phantom -- eight methods x five folds of 20 subjects,
# identical folds, one resumable mfns-compare call (rerun the same line after an interruption: finished
# trainings/predictions are skipped, interrupted trainings continue from checkpoint_latest.pth).
#
#   benchmarks/run_table2.sh /work/table2            # CPU (default), or: DEVICE=cuda benchmarks/run_table2.sh DIR
#
# Methods: MfNS_De (the paper's network; the lead adjusts the name to the faithful trainer of issue 22),
# UNet2D (paper recipe), IAANet, TriSegNet, stock nnU-Net 2d and 3d_fullres, ResEnc-M 3d_fullres
# (nnUNetPlannerResEncM / nnUNetResEncUNetMPlans) and the non-learned Frangi baseline (tuned on each fold's
# training cases only). Truth for scoring: the phantom's exact labels (labels_exact/); training labels: the
# annotator-style labelsTr. The report has the fold-level statistics, the confounder false-positive table and
# ICC / relative count error next to Spearman.
#
# Budget (TABLE2_BUDGET, default `study`: 500 annealed iterations per training, 20 x 25). Estimated CPU cost
# on one core of the 2-core box, from the study profile's measured seconds per iteration (docs/phantom.md:
# MfNS_De 2d 2.9 s, stock 2d 6.2 s, stock 3d_fullres 16.7 s at 28 x 128 x 112) scaled by the hard profile's
# 1.14x larger slices, not measured on `hard`: per fold MfNS_De ~0.5 h, UNet2D/IAANet/TriSegNet ~0.3-0.5 h
# each, stock 2d ~1 h, stock 3d_fullres ~2.7 h, Frangi ~0.1 h: ~6 h per fold, ~30 CPU hours for five folds
# without ResEnc-M. ResEnc-M is NOT CPU-affordable: nnU-Net's planner sizes its batch for an 8 GB GPU (batch 5
# of 28 x 128 x 128 already on a 5-subject hard set, the dataset-coverage cap; more with 20 subjects) and on this
# box 2 `ci` iterations had not finished after 13 min wall (3.5 min CPU at load ~20) with 8.7 GB resident.
# So: DEVICE=cuda for the whole table (about an hour on one GPU), or on CPU
#   TABLE2_METHODS=MfNS_De,UNet2D,IAANet,TriSegNet,nnUNet_2d,nnUNet_3d,Frangi benchmarks/run_table2.sh DIR
# and ResEnc-M later on a GPU into the same DIR (same folds, the report then covers all eight).
# TABLE2_FOLDS (default 0,1,2,3,4) runs a subset first, e.g. the CNN pilot of docs/phantom.md:
#   TABLE2_METHODS=UNet2D,Frangi TABLE2_FOLDS=0 benchmarks/run_table2.sh DIR   (the full run later reuses it)
set -u
if [ $# -ne 1 ]; then
  echo "usage: $0 TABLE2_DIR   (holds raw/, preprocessed/, results/ and the workdir)" >&2
  exit 2
fi
dir=$(realpath -m "$1")
export nnUNet_raw=$dir/raw nnUNet_preprocessed=$dir/preprocessed nnUNet_results=$dir/results
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1} \
       nnUNet_def_n_proc=${nnUNet_def_n_proc:-1} nnUNet_compile=false
# on a CPU, augmentation inside the training process (nnU-Net's default of many worker processes would crowd 2 cores)
[ "${DEVICE:-cpu}" = cpu ] && export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-0}
mfns_compare=$(command -v mfns-compare || echo "$(dirname "$(realpath "$0")")/../.venv/bin/mfns-compare")
methods=${TABLE2_METHODS:-MfNS_De,UNet2D,IAANet,TriSegNet,nnUNet_2d,nnUNet_3d,ResEncM_3d,Frangi}
exec "$mfns_compare" --phantom --profile hard --n-subjects 20 --phantom-id 623 --phantom-name PVSHard --seed 0 \
    --budget "${TABLE2_BUDGET:-study}" --device "${DEVICE:-cpu}" --methods "$methods" --folds "${TABLE2_FOLDS:-0,1,2,3,4}" \
    --workdir "$dir/work"

#!/usr/bin/env bash
# The real-teacher experiment: does DCKD beat its baselines at CPU scale?
#
#   bash profiles/pan_x2.sh                 # the CPU profile (see docs/pan_x2/stage_times.md for the time on 2 cores)
#   SCALE=10 bash profiles/pan_x2.sh        # the same profile with 10x the iterations and schedule (a GPU)
#   SHARED=/data/dckd-shared bash profiles/pan_x2.sh -S 'ablation.seeds=[0]'   # other data root, extra -S
#
# Teacher: the pretrained PAN x2 (261K parameters) from $SHARED/weights/PANx2_DF2K.pth; training images:
# $SHARED/data/Kodak24 (24 whole 500x500 images); validation: Set5 HR (LR made by MATLAB bicubic); test: Set5 with
# its own LR files. Student: SwinIR, pixelshuffledirect, embed 24, depths [2, 2] (40K parameters, params.yaml's
# `distill.student`). Feature space: the compact VQ autoencoder the vqgan stage trains on the training images.
# Every variant of dckd.pipeline.VARIANTS x 3 seeds, the same data order, budget and schedule.
# Nothing from $SHARED is copied: its paths are parameters. The run is a DVC experiment in this workspace
# (`dvc exp show`); afterwards its table, figures and stage times are copied to docs/pan_x2/ (DOCS=... to change, DOCS=
# to skip). The runs of one seed share their teacher outputs through params.yaml's distill.teacher_cache (an exact
# cache of teacher outputs and their DMM logits, about 1.5 GB for this profile; delete .teacher_cache/ whenever you like).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SHARED:-../shared}
K=${SCALE:-1}
DOCS=${DOCS-docs/pan_x2}
for f in "$S/weights/PANx2_DF2K.pth" "$S/data/Kodak24" "$S/data/Set5/HR" "$S/data/Set5/LR_bicubic/X2"; do
  [ -e "$f" ] || { echo "pan_x2.sh: $f not found (SHARED=$S: expected weights/PANx2_DF2K.pth, data/Kodak24, data/Set5)" >&2; exit 2; }
done
n=$((400 * K))
start=$(date +%s)
dvc exp run -n "${EXP_NAME:-pan-x2-k$K}" \
  -S "prepare.train_dir=$S/data/Kodak24" -S "prepare.val_dir=$S/data/Set5/HR" -S prepare.crop_size=0 \
  -S "teacher.weights=$S/weights/PANx2_DF2K.pth" \
  -S 'teacher.arch.sr={type: PAN, in_nc: 3, out_nc: 3, nf: 40, unf: 24, nb: 16}' \
  -S vqgan.iters=1000 -S vqgan.batch=8 -S vqgan.patch=64 -S vqgan.log_every=50 \
  -S distill.iters=$n -S distill.batch=8 -S distill.gt_size=64 \
  -S "distill.milestones=[$((280 * K)), $((360 * K))]" \
  -S "distill.history_steps=[$((25 * K)), $((50 * K)), $((75 * K))]" -S distill.history_period=$((100 * K)) \
  -S distill.val_every=$((100 * K)) -S distill.ckpt_every=$((100 * K)) -S distill.log_every=$((10 * K)) \
  -S 'ablation.variants=[scratch, kd, kd_lcr, kd_dcr, kd_dmm, dckd, dckd_official_ce]' -S 'ablation.seeds=[0, 1, 2]' \
  -S "++ablation.budget={iters: $n, milestones: [$((280 * K)), $((360 * K))], val_every: 0, ckpt_every: $((100 * K))}" \
  -S "++evaluate.sets.Set5=$S/data/Set5" "$@"
echo "pan_x2.sh: the experiment took $(( ($(date +%s) - start) / 60 )) min"
if [ -n "$DOCS" ]; then
  mkdir -p "$DOCS"
  cp results/report/table.md results/report/table.json results/report/*.png results/report/code_stats.json \
     results/evaluate/metrics.json results/evaluate/rows.json results/evaluate/per_image.json "$DOCS"/
  python -c "from dckd.pipeline import duration_table; print(duration_table(), end='')" > "$DOCS/stage_times.md"
  echo "pan_x2.sh: table, figures and stage times in $DOCS"; cat "$DOCS/table.md" "$DOCS/stage_times.md"
fi

#!/usr/bin/env bash
# When does DCKD help? The study of nbs/11_study.ipynb as a DVC experiment of the main pipeline.
#
#   bash profiles/study.sh                       # the hypothesis runs at 400 iterations (hours on 2 cores)
#   BUDGET=1600 VARIANTS='[scratch, kd, dckd, dckd_budget]' bash profiles/study.sh   # a point of the budget curve
#   SHARED=/data/dckd-shared bash profiles/study.sh -S 'ablation.seeds=[0]'          # other data root, extra -S
#
# The PAN x2 profile (profiles/pan_x2.sh: pretrained PAN x2 teacher, SwinIR 40K student, compact VQ feature space)
# with a validation split that is not a test set: every fourth Kodak24 image (kodim04, 08, ..., 24) is held out
# for validation and the student trains on the other 18; Set5 is the test set, and no choice looks at it.
# Budget B iterations: the schedule scales with B as in pan_x2.sh (milestones at 0.7B and 0.9B, history refreshes
# every B/16, B/8, 3B/16 per B/4). Every run also keeps an EMA-0.99 copy (scored as `<variant>@ema0.99`) and logs
# the gradient share of each loss term every B/20 iterations. Afterwards the table, the scores and every run's
# training log are copied to docs/study/b$B/ (DOCS=... to change, DOCS= to skip).
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SHARED:-../shared}
B=${BUDGET:-400}
V=${VARIANTS:-'[scratch, kd, kd_dcr, dckd, kd_dcr_w0, kd_dcr_w003, kd_dcr_w001, kd_dcr_tneg, kd_dcr_once, kd_dcr_rare, kd_lowlr, kd_dcr_lowlr, kd_dcr_shallow, kd_dcr_deep]'}
DOCS=${DOCS-docs/study/b$B}
for f in "$S/weights/PANx2_DF2K.pth" "$S/data/Kodak24" "$S/data/Set5/HR" "$S/data/Set5/LR_bicubic/X2"; do
  [ -e "$f" ] || { echo "study.sh: $f not found (SHARED=$S: expected weights/PANx2_DF2K.pth, data/Kodak24, data/Set5)" >&2; exit 2; }
done
. profiles/_study_budget.sh
study_schedule "$B" study.sh
start=$(date +%s)
dvc exp run -n "${EXP_NAME:-study-b$B}" \
  -S "prepare.train_dir=$S/data/Kodak24" -S "prepare.val_dir=$S/data/Kodak24" -S prepare.holdout_every=4 -S prepare.crop_size=0 \
  -S "teacher.weights=$S/weights/PANx2_DF2K.pth" \
  -S 'teacher.arch.sr={type: PAN, in_nc: 3, out_nc: 3, nf: 40, unf: 24, nb: 16}' \
  "${SCHEDULE[@]}" -S "ablation.variants=$V" \
  -S "++evaluate.sets.Set5=$S/data/Set5" "$@"
echo "study.sh: the experiment took $(( ($(date +%s) - start) / 60 )) min"
if [ -n "$DOCS" ]; then
  copy_docs "$DOCS"
  echo "study.sh: table, scores and run logs in $DOCS"; cat "$DOCS/table.md"
fi

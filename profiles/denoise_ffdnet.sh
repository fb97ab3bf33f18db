#!/usr/bin/env bash
# A second real teacher: distilling the pretrained colour FFDNet (sigma 25) into a small NAFNet, the study of
# nbs/11a_study_denoise.ipynb as a DVC experiment of the main pipeline.
#
#   bash profiles/denoise_ffdnet.sh                      # every variant, 3 seeds, 400 iterations
#   BUDGET=1600 bash profiles/denoise_ffdnet.sh          # the same at 1,600 iterations
#   VARIANTS='[kd, dckd]' bash profiles/denoise_ffdnet.sh -S 'ablation.seeds=[0]'   # fewer runs, extra -S
#   SHARED=/data/dckd-shared bash profiles/denoise_ffdnet.sh                       # other data root
#   VARIANTS='[kd, dckd, kd_dcr, kd_dcr_shallow, kd_dcr_deep]' EXP_NAME=denoise-ffdnet-b400-levels \
#     DOCS=docs/denoise_ffdnet/b400_levels bash profiles/denoise_ffdnet.sh       # the VQ-level runs (D3); the report
#                                                                                # needs dckd in every variant list
#
# Task: colour Gaussian denoising, sigma 25 (training noise fresh per patch; evaluation by KAIR's protocol).
# Teacher: FFDNet colour (KAIR's port, 852K parameters), frozen, called at the task's sigma.
# Student: NAFNet width 8, one block per level (enc [1,1,1], middle 1, dec [1,1,1]): 75K parameters.
# Data: Kodak24, every fourth image (kodim04, 08, ..., 24) held out for validation, the student trains on the other
# 18; CBSD68 is the test set and no choice looks at it. Schedule, VQ feature space, history refreshes, EMA copies
# and gradient logs are those of profiles/study.sh (the SR study), scaled with the budget B in the same way.
# Afterwards the table, the scores and every run's training log are copied to docs/denoise_ffdnet/b$B/.
set -euo pipefail
cd "$(dirname "$0")/.."
S=${SHARED:-../shared}
B=${BUDGET:-400}
V=${VARIANTS:-'[scratch, kd, kd_lcr, dckd, dckd_budget, dckd_tneg]'}
DOCS=${DOCS-docs/denoise_ffdnet/b$B}
for f in "$S/weights/FFDNet_color.pth" "$S/data/Kodak24" "$S/data/CBSD68"; do
  [ -e "$f" ] || { echo "denoise_ffdnet.sh: $f not found (SHARED=$S: expected weights/FFDNet_color.pth, data/Kodak24, data/CBSD68)" >&2; exit 2; }
done
. profiles/_study_budget.sh
study_schedule "$B" denoise_ffdnet.sh
start=$(date +%s)
dvc exp run -n "${EXP_NAME:-denoise-ffdnet-b$B}" \
  -S task.type=denoise -S task.denoise.sigma=25 \
  -S "prepare.train_dir=$S/data/Kodak24" -S "prepare.val_dir=$S/data/Kodak24" -S prepare.holdout_every=4 -S prepare.crop_size=0 \
  -S "teacher.weights=$S/weights/FFDNet_color.pth" \
  -S '++teacher.arch.denoise={type: ffdnet_color, sigma: 25}' \
  -S '++distill.student.denoise={type: NAFNet, img_channel: 3, width: 8, middle_blk_num: 1, enc_blk_nums: [1, 1, 1], dec_blk_nums: [1, 1, 1]}' \
  "${SCHEDULE[@]}" -S "ablation.variants=$V" \
  -S "++evaluate.sets.CBSD68=$S/data/CBSD68" "$@"
echo "denoise_ffdnet.sh: the experiment took $(( ($(date +%s) - start) / 60 )) min"
if [ -n "$DOCS" ]; then
  copy_docs "$DOCS"
  cp results/evaluate/task.json results/report/*.png "$DOCS"/   # the task and its convention; the report's figures
  echo "denoise_ffdnet.sh: table, scores, figures and run logs in $DOCS"; cat "$DOCS/table.md"
fi

# Sourced by profiles/study.sh and profiles/denoise_ffdnet.sh: what the two studies share.
#   study_schedule B   sets the array SCHEDULE to the -S overrides of the study's schedule at budget B (a multiple of
#                      400): compact VQ, batch 8 of 64-pixel patches, lr halved at 0.7B and 0.9B, history refreshes
#                      every B/16, B/8, 3B/16 per B/4, EMA-0.99 copies, gradient logs every B/20, seeds 0, 1, 2
#   copy_docs DIR      copies the experiment's table, scores, prepare summary and every run's records to DIR
study_schedule() {
  local B=$1 name=${2:-study}
  (( B % 400 == 0 )) || { echo "$name: BUDGET=$B: expected a multiple of 400 (the schedule is scaled from 400)" >&2; exit 2; }
  local K=$((B / 400))
  SCHEDULE=(-S vqgan.iters=1000 -S vqgan.batch=8 -S vqgan.patch=64 -S vqgan.log_every=50
            -S distill.batch=8 -S distill.gt_size=64
            -S "distill.history_steps=[$((25 * K)), $((50 * K)), $((75 * K))]" -S distill.history_period=$((100 * K))
            -S distill.log_every=$((10 * K)) -S 'ablation.seeds=[0, 1, 2]'
            -S "++ablation.budget={iters: $B, milestones: [$((280 * K)), $((360 * K))], val_every: 0, ckpt_every: $((100 * K)), ema_extra: [0.99], grad_every: $((20 * K))}")
}

copy_docs() {
  local DOCS=$1
  mkdir -p "$DOCS/runs"
  cp results/report/table.md results/report/table.json results/evaluate/metrics.json results/evaluate/rows.json \
     results/evaluate/per_image.json "$DOCS"/
  # the prepare stage's counts, and each run's configuration, summary, refreshes and DVCLive curves (small text files)
  python -c "import shutil, sys, dckd.artifacts as A
shutil.copy(f'results/prepare/{A.PREPARE_SUMMARY}', sys.argv[1])
A.copy_run_records('results/ablation', sys.argv[1] + '/runs', also=('history_refresh.json', 'live/plots/metrics'))" "$DOCS"
}

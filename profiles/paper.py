#!/usr/bin/env python
"""One of the paper's settings as a DVC experiment (`dckd.pipeline.paper_setting`): GoPro with NAFNet or Restormer,
Rain13K with Restormer, each with its teacher's own recipe and the paper's DCKD constants.

    python profiles/paper.py gopro_nafnet --teacher NAFNet-GoPro-width32.pth --train GoPro/train --test GoPro/test
    python profiles/paper.py gopro_restormer --teacher motion_deblurring.pth --train GoPro/train --test GoPro/test
    python profiles/paper.py rain13k_restormer --teacher deraining.pth --train Rain13K/train --test Test100
    ... --dry-run            # print the command only;   ... --set distill.iters=1000   # any further override

The teachers are the authors' released checkpoints (BasicSR layout, `params`); the data folders are GoPro's own layout
(GOPRxxxx_xx_xx/blur + sharp) or Restormer's prepared input/ + target/. Written for a GPU server (`dvc exp run` on
the workspace; `torchrun` users run `dckd_distill` on the prepared folders with the same keys)."""
import argparse, shlex, subprocess, sys
from dckd.pipeline import PAPER_SETTINGS, paper_setting

p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument('setting', choices=list(PAPER_SETTINGS))
p.add_argument('--teacher', required=True, help="the teacher's official checkpoint")
p.add_argument('--train', required=True, help='the training pairs')
p.add_argument('--test', required=True, help='the test pairs (scored by the evaluate stage)')
p.add_argument('--val', help='a validation folder (default: --test; only logged, nothing is chosen on it)')
p.add_argument('--vqgan', default='', help='a taming VQGAN f16/n1024 checkpoint (default: train the compact VQ autoencoder)')
p.add_argument('--set', action='append', default=[], metavar='KEY=VALUE', help='a further -S override (repeatable)')
p.add_argument('--name', help='the experiment name (default: the setting)')
p.add_argument('--dry-run', action='store_true', help='print the command, run nothing')
a = p.parse_args()
cmd = ['dvc', 'exp', 'run', '-n', a.name or a.setting]
for s in paper_setting(a.setting, a.teacher, a.train, a.test, a.val, a.vqgan) + a.set: cmd += ['-S', s]
print(' '.join(map(shlex.quote, cmd)), flush=True)
sys.exit(0 if a.dry_run else subprocess.call(cmd))

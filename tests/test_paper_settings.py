"""The paper's settings (GoPro with NAFNet and Restormer, Rain13K with Restormer), one command each, on tiny synthetic
folders in the official layouts: every setting passes the check stage (its networks built and run), and the NAFNet
one runs end to end through `profiles/paper.py` with a checkpoint in the official layout and a tiny budget."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
from dckd.archs import build_net
from dckd.data import imwrite
from dckd.pipeline import PAPER_SETTINGS, apply_sets, check_params, paper_setting
from test_pipeline_data import fresh_copy, run

ROOT = Path(__file__).resolve().parents[1]


def gopro(root: Path, n=2, size=(64, 80)):
    "GoPro's layout: GOPRxxxx_xx_xx/blur + sharp, frames named 000000.png ..."
    g = np.random.default_rng(0)
    for sc in ('GOPR0372_07_00', 'GOPR0374_11_00'):
        for k in range(n):
            sharp = g.random((*size, 3)); imwrite(root/sc/'sharp'/f'{k:06d}.png', sharp)
            imwrite(root/sc/'blur'/f'{k:06d}.png', (sharp + np.roll(sharp, 3, 1)) / 2)
    return root


def rain(root: Path, n=3, size=(48, 56)):
    "Restormer's prepared layout: input/ + target/, same names."
    g = np.random.default_rng(1)
    for k in range(n):
        t = g.random((*size, 3)); imwrite(root/'target'/f'{k}.png', t); imwrite(root/'input'/f'{k}.png', np.clip(t + 0.3*(g.random(size)[..., None] > 0.95), 0, 1))
    return root


@pytest.mark.parametrize('name', list(PAPER_SETTINGS))
def test_every_setting_passes_the_check_stage(tmp_path, name):
    s = PAPER_SETTINGS[name]
    data = gopro if s['task'] == 'deblur' else rain
    train, test = data(tmp_path/'train'), data(tmp_path/'test')
    ck = tmp_path/'teacher.pth'; ck.write_bytes(b'x')   # the check stage only asks that it exists
    params = apply_sets(yaml.safe_load((ROOT/'params.yaml').read_text()), paper_setting(name, str(ck), str(train), str(test)))
    assert check_params(params, root=ROOT)['ok']       # (every network built and run on a 16x16 input)
    assert params['task']['type'] == s['task'] and params['distill']['student'][s['task']] == {'type': s['student']}


def test_gopro_nafnet_end_to_end(tmp_path_factory):
    if shutil.which('dvc') is None: pytest.fail('dvc is not installed: `pip install -e ".[dev]"` installs it')
    r = fresh_copy(tmp_path_factory.mktemp('paper'))
    d = tmp_path_factory.mktemp('gopro')
    gopro(d/'train'); gopro(d/'test', n=1)
    torch.manual_seed(0)   # a teacher checkpoint in NAFNet's official layout (BasicSR `params`), random weights
    torch.save({'params': build_net({'type': 'nafnet_gopro_teacher'}).state_dict()}, d/'NAFNet-GoPro-width32.pth')
    tiny = ['++distill.iters=2', 'distill.batch=2', 'distill.gt_size=32', 'distill.val_every=0', 'distill.ckpt_every=1',
            'distill.log_every=1', 'prepare.crop_size=0', 'vqgan.iters=2', 'vqgan.batch=2', 'vqgan.patch=32',
            '++ablation.variants=[kd, dckd]']
    cmd = [sys.executable, 'profiles/paper.py', 'gopro_nafnet', '--teacher', str(d/'NAFNet-GoPro-width32.pth'),
           '--train', str(d/'train'), '--test', str(d/'test')] + [x for t in tiny for x in ('--set', t)]
    env = {**os.environ, 'PYTHONPATH': str(r), 'DVC_NO_ANALYTICS': '1'}
    p = subprocess.run(cmd, cwd=r, capture_output=True, text=True, env=env)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    m = json.loads((r/'results/evaluate/metrics.json').read_text())
    assert set(m) == {'val', 'GoPro'} and {'input', 'teacher', 'ablation/kd_s0', 'ablation/dckd_s0'} <= set(m['GoPro'])
    task = json.loads((r/'results/evaluate/task.json').read_text())
    assert task['task']['type'] == 'deblur' and task['convention'] == 'RGB, border 0, 8-bit'
    cfg = yaml.safe_load((r/'results/ablation/dckd_s0/config.yaml').read_text())
    assert cfg['optim']['type'] == 'AdamW' and cfg['scheduler']['type'] == 'TrueCosineAnnealingLR' and cfg['pixel_loss']['type'] == 'PSNRLoss'
    assert cfg['student'] == {'type': 'nafnet_gopro_student'} and cfg['grad_clip'] == 0.01
    # the GoPro pairs were copied, not degraded again: the prepared input is the blurred frame, bit for bit
    from dckd.data import imread
    assert np.array_equal(imread(r/'results/prepare/train/input/GOPR0372_07_00_000000.png'), imread(d/'train'/'GOPR0372_07_00'/'blur'/'000000.png'))

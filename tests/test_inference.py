"Tiled inference with the real PAN, the dckd_upscale command end to end, and the MAC counter of benchmarks/complexity.py."
import copy, importlib.util, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from dckd.archs import PAN, build_net
from dckd.checkpoint import load_weights
from dckd.data import imread, imwrite
from dckd.inference import upscale, receptive_field, upscale_cli

torch.set_num_threads(2)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def pan2(shared):
    return load_weights(PAN(scale=2), shared/'weights'/'PANx2_DF2K.pth').eval()


@pytest.fixture(scope='module')
def pan_radius(pan2):
    return receptive_field(pan2, size=80, n=1)


def test_pan_receptive_field(pan_radius):
    # conv_first + 16 SCPA blocks (2 3x3 convs in series each) + trunk_conv at LR, upconv/HRconv/conv_last at HR
    print(f'PAN x2 receptive-field radius: {pan_radius} LR pixels')
    assert 34 <= pan_radius <= 38


def test_tiled_equals_untiled_pan(shared, pan2, pan_radius):
    lr = imread(shared/'data'/'Set5'/'LR_bicubic'/'X2'/'babyx2.png')[64:192, 48:208]  # 128x160 natural crop
    full = upscale(pan2, lr)
    assert full.shape == (256, 320, 3) and full.dtype == np.float32
    tiled = upscale(pan2, lr, tile=48, overlap=pan_radius, batch_tiles=3)  # 3x4 windows of 120x120: both axes cut
    np.testing.assert_allclose(tiled, full, atol=1e-5, rtol=0)
    # too little context shows at the seams: the test can fail
    short = upscale(pan2, lr, tile=48, overlap=4)
    assert np.abs(short - full).max() > 1e-4


def test_tensor_batch_and_grad_state(pan2):
    x = torch.rand(2, 3, 20, 28) * 0.2 + 0.4  # smooth-ish mid-grey: PAN stays finite
    y = upscale(pan2, x, tile=10, overlap=40)
    assert y.shape == (2, 3, 40, 56) and not y.requires_grad and y.dtype == torch.float32
    with torch.inference_mode(): ref = pan2(x).clamp(0, 1)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=0)


def _write_pngs(d: Path, shared: Path):
    d.mkdir()
    src = imread(shared/'data'/'Set5'/'LR_bicubic'/'X2'/'birdx2.png')
    imwrite(d/'a.png', src[:24, :32]); imwrite(d/'b.png', src[30:50, 40:76])
    (d/'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')


def test_cli_end_to_end(tmp_path, shared, capsys):
    _write_pngs(tmp_path/'in', shared)
    w = shared/'weights'/'PANx2_DF2K.pth'
    argv = [str(tmp_path/'in'), '-o', str(tmp_path/'out'), '--arch-config', '{"type": "PAN", "scale": 2}',
            '--weights', str(w), '--tile', '16', '--overlap', '8', '--device', 'cpu']
    code = upscale_cli(argv)
    err = capsys.readouterr().err
    assert code == 1 and 'broken.png' in err and '1 failed' in err, err
    assert sorted(p.name for p in (tmp_path/'out').iterdir()) == ['a_x2.png', 'b_x2.png']
    assert imread(tmp_path/'out'/'a_x2.png').shape == (48, 64, 3)
    assert imread(tmp_path/'out'/'b_x2.png').shape == (40, 72, 3)
    # a single good file, a YAML config file, a custom suffix: exit 0
    (tmp_path/'pan.yml').write_text('network_g:\n  type: PAN\n  scale: 2\n')
    assert upscale_cli([str(tmp_path/'in'/'a.png'), '-o', str(tmp_path/'o2'), '--arch-config', str(tmp_path/'pan.yml'),
                        '--weights', str(w), '--suffix', '', '--device', 'cpu']) == 0
    assert (tmp_path/'o2'/'a.png').is_file()
    # wrong weights for the config: exit 2 naming the file, nothing written
    assert upscale_cli([str(tmp_path/'in'), '-o', str(tmp_path/'o3'), '--arch-config', '{"type": "PAN", "scale": 4}',
                        '--weights', str(w)]) == 2
    assert 'PANx2_DF2K.pth' in capsys.readouterr().err and not (tmp_path/'o3').exists()


@pytest.mark.skipif(shutil.which('dckd_upscale') is None, reason='console script not installed (pip install -e .)')
def test_console_script(tmp_path, shared):
    _write_pngs(tmp_path/'in', shared)
    r = subprocess.run(['dckd_upscale', str(tmp_path/'in'), '-o', str(tmp_path/'out'), '--arch-config',
                        '{"type": "PAN", "scale": 2, "nb": 16}', '--weights', str(shared/'weights'/'PANx2_DF2K.pth'),
                        '--device', 'cpu'], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert r.returncode == 1 and 'broken.png' in r.stderr, r.stderr
    assert len(list((tmp_path/'out').glob('*_x2.png'))) == 2


# MAC counter (benchmarks/complexity.py) against closed forms

def _complexity():
    spec = importlib.util.spec_from_file_location('complexity', ROOT/'benchmarks'/'complexity.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    return mod


def test_mac_counter_closed_form():
    cm = _complexity()
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=2)
    m = cm.count_macs(conv, torch.empty(2, 8, 20, 30))
    assert m['conv'] == 2 * 16 * 10 * 15 * (8 // 2) * 3 * 3 and m['total'] == m['conv']
    lin = nn.Linear(24, 40)
    assert cm.count_macs(lin, torch.empty(5, 7, 24))['linear'] == 5 * 7 * 24 * 40
    # one SwinIR window-attention call: qkv + proj linears and the two matmuls
    from dckd.archs import WindowAttention
    att = WindowAttention(dim=24, window_size=4, num_heads=3)
    b, n, c = 6, 16, 24
    m = cm.count_macs(att, torch.empty(b, n, c))
    assert m['attn'] == 2 * b * 3 * n * n * (c // 3) and m['linear'] == b * n * c * 3 * c + b * n * c * c
    # meta device gives the same count as a real run, and agrees with torch's own counter (FLOPs = 2 MACs)
    net = build_net(dict(type='SwinIR', img_size=16, window_size=8, depths=[2], num_heads=[2], embed_dim=24,
                         mlp_ratio=2, upsampler='pixelshuffledirect', upscale=2)).eval()
    x = torch.rand(1, 3, 16, 24)
    real = cm.count_macs(net, x)
    assert cm.count_macs(copy.deepcopy(net).to('meta'), x.to('meta')) == real
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as fc, torch.no_grad(): net(x)
    assert fc.get_total_flops() == 2 * real['total']

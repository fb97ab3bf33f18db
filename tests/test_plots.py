"dckd.plots: figures render (and write readable PNGs only when asked), synthetic runs and refreshes read back, table numbers, code-map stats (the run log itself: test_runlog.py)."
import json, math, os, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
import torch
import torch.nn as nn
from matplotlib.figure import Figure

from dckd.data import imread, img2tensor, imresize
from dckd.losses import dmm_loss
from dckd.vqgan import VQGAN
from dckd.plots import (read_live, read_refreshes, synthetic_run, contrastive_state, training_curves, code_stats,
                        code_maps, ablation_table, format_table, ablation_chart, pick_box, panel_psnr, sr_panels,
                        visual_crops)

torch.set_num_threads(1)

TINY_DD = dict(ch=32, ch_mult=[1, 1, 2, 1, 1], num_res_blocks=1, attn_resolutions=[], z_channels=16, resolution=64,
               in_channels=3, out_ch=3, double_z=False, dropout=0.)


def _png_ok(p: Path, min_side: int = 100):
    assert p.is_file() and p.stat().st_size > 1000, p
    im = imread(p)
    assert im.ndim == 3 and min(im.shape[:2]) >= min_side and im.std() > 0.01, im.shape
    assert not [q for q in p.parent.iterdir() if q.name.endswith('.tmp')], 'temporary file left behind'
    return im


def _sr_net(scale=2, seed=0):
    "A stand-in SR network: conv + PixelShuffle, plus the nearest upsampling so it resembles its input."
    torch.manual_seed(seed)
    body = nn.Sequential(nn.Conv2d(3, 3*scale**2, 3, padding=1), nn.PixelShuffle(scale))
    class Net(nn.Module):
        def __init__(self): super().__init__(); self.body = body
        def forward(self, x): return nn.functional.interpolate(x, scale_factor=scale, mode='nearest') + 0.1*self.body(x)
    return Net().eval()


def _image(h=64, w=64, seed=0):
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]/max(h, w)
    im = np.stack([0.5 + 0.4*np.sin(6*x + 2*y), 0.5 + 0.4*np.cos(5*y), 0.3 + 0.3*x], -1)
    return np.clip(im + 0.02*g.standard_normal(im.shape), 0, 1).astype(np.float32)


# ---------------------------------------------------------------- reading runs

def test_import_is_light():
    code = ("import sys, dckd.plots; bad = [m for m in ('matplotlib', 'seaborn', 'dvclive', 'dckd.distill') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, '-c', code], check=True)


def test_read_live_is_runlogs():
    "The reader lives in dckd.runlog; dckd.plots re-exports it (nbs/11_study, nbs/12_explorer and users call plots.read_live)."
    import dckd.plots, dckd.runlog
    assert read_live is dckd.runlog.read_live and 'read_live' in dckd.plots.__all__


def test_read_refreshes(tmp_path):
    "The logged history/refresh flags (written by the trainer's RunLog), plus history_refresh.json, sorted."
    from dckd.runlog import RunLog
    with RunLog(tmp_path) as log:
        for it in (1, 2, 5, 10): log.log(it, {'train/pix': 0.5/it, 'history/refresh': float(it in (2, 10))})
    assert read_refreshes(tmp_path).tolist() == [2, 10] and read_refreshes(tmp_path/'live').tolist() == [2, 10]
    # the checkpoint file adds refreshes the logs do not have (and the union is sorted)
    (tmp_path/'history_refresh.json').write_text(json.dumps(dict(iterations=[2, 4], steps=[2], period=100, upto=4)))
    assert read_refreshes(tmp_path).tolist() == [2, 4, 10]
    assert read_refreshes(tmp_path/'no'/'run').tolist() == []   # no run there: no refreshes
    (tmp_path/'history_refresh.json').write_text('{"iters": [1]}')
    with pytest.raises(ValueError, match="'iterations'"): read_refreshes(tmp_path)


@pytest.mark.parametrize('writer', ['auto', 'tsv', 'jsonl'])
def test_synthetic_run_layouts(tmp_path, writer):
    "synthetic_run's three writers ('auto' is the trainer's RunLog) log alike, as dckd.distill does, and read back."
    run = synthetic_run(tmp_path/writer, iters=300, log_every=20, val_every=100, refresh_every=70, writer=writer)
    live = read_live(run)
    assert {'train/total', 'lr', 'val/psnr', 'dcr/l4/ratio', 'history/refresh'} <= set(live)
    assert live['val/psnr'][0].tolist() == [100, 200, 300]
    # logged every 20 iterations and at every refresh, as dckd.distill does
    assert live['train/pix'][0].tolist() == sorted(set(range(20, 301, 20)) | {70, 140, 210, 280})
    np.testing.assert_allclose(live['dcr/l2/ratio'][1], live['dcr/l2/d_ap'][1]/(live['dcr/l2/d_an'][1] + 1e-7), rtol=1e-9)
    assert read_refreshes(run).tolist() == [70, 140, 210, 280]
    with pytest.raises(ValueError, match="writer must be"): synthetic_run(tmp_path/'x', iters=10, writer='csv')


def test_synthetic_run_auto_writes_what_the_trainer_writes(tmp_path):
    "writer='auto' goes through dckd.runlog.RunLog (DVCLive here), and never imports the trainer."
    pytest.importorskip('dvclive')
    code = (f"import sys; from dckd.plots import synthetic_run; synthetic_run({str(tmp_path/'r')!r}, iters=40, log_every=10, "
            "val_every=20, refresh_every=20); assert 'dckd.distill' not in sys.modules")
    subprocess.run([sys.executable, '-c', code], check=True)
    lines = (tmp_path/'r'/'live'/'plots'/'metrics'/'train'/'pix.tsv').read_text().splitlines()
    assert lines[0] == 'step\tpix' and [int(l.split('\t')[0]) for l in lines[1:]] == [10, 20, 30, 40]
    assert not (tmp_path/'r'/'live'/'metrics.jsonl').exists()


# ---------------------------------------------------------------- curves

def test_contrastive_state_and_curves(tmp_path):
    runs = {v: synthetic_run(tmp_path/v, iters=300, val_every=100, gain=g, seed=i, terms=t, writer='tsv')
            for i, (v, g, t) in enumerate([('scratch', 0., ('pix',)), ('dckd', .3, ('pix', 'kd', 'lcr', 'dcr', 'dmm'))])}
    fig = contrastive_state(runs['dckd'])
    assert isinstance(fig, Figure) and len(fig.axes) == 10
    assert not list(tmp_path.glob('*.png'))   # nothing written without a path
    # the refresh lines are drawn (one collection per panel)
    assert all(len(ax.collections) == 1 for ax in fig.axes)
    p = contrastive_state(read_live(runs['dckd']), refreshes=[150], path=tmp_path/'figs'/'dcr.png')
    _png_ok(tmp_path/'figs'/'dcr.png')
    um = os.umask(0); os.umask(um)
    assert (tmp_path/'figs'/'dcr.png').stat().st_mode & 0o777 == 0o666 & ~um
    with pytest.raises(ValueError, match='use_dcr'): contrastive_state(runs['scratch'])
    fig = training_curves(runs, smooth=0.5, path=tmp_path/'curves.png')
    assert isinstance(fig, Figure)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ['train/total', 'train/pix', 'train/kd', 'train/dcr', 'train/dmm', 'val/psnr']
    assert [ax.get_ylabel() for ax in fig.axes if ax.get_title() == 'val/psnr'] == ['PSNR (dB)']
    _png_ok(tmp_path/'curves.png')
    with pytest.raises(ValueError, match='logged:'): training_curves(runs, keys=('train/zzz',))


# ---------------------------------------------------------------- DMM code maps

def test_code_maps_identical_is_entropy(tmp_path):
    torch.manual_seed(0)
    vq = VQGAN(embed_dim=16, n_embed=32, ddconfig=TINY_DD)
    with torch.no_grad(): vq.quant_conv.weight.mul_(20)   # sharper distributions than a random init's
    lq = img2tensor(_image(32, 32))[None]
    sr = _sr_net()(lq).clamp(0, 1).detach()
    fig, st = code_maps(vq, sr, sr, path=tmp_path/'same.png')
    assert isinstance(fig, Figure)
    _png_ok(tmp_path/'same.png')
    assert st['agreement'] == 1.0 and st['n_codes_t'] == st['n_codes_s'] and st['grid'] == (4, 4) and st['n_embed'] == 32
    # the entropy of p_t, computed independently in float64 numpy
    with torch.no_grad(): lt = vq.code_logits(sr).double().numpy()[0]
    p = np.exp(lt - lt.max(-1, keepdims=True)); p /= p.sum(-1, keepdims=True)
    ent = float(np.mean(-(p*np.log(p)).sum(-1)))
    assert 0.05 < ent < math.log(32) - 0.05   # neither one-hot nor uniform: the check has teeth
    assert st['ce'] == pytest.approx(ent, abs=1e-9) and st['entropy_t'] == pytest.approx(ent, abs=1e-9)
    assert st['kl'] == pytest.approx(0., abs=1e-9)
    assert st['n_codes_t'] == len(np.unique(lt.argmax(-1)))


def test_code_maps_student_differs(tmp_path):
    torch.manual_seed(0)
    vq = VQGAN(embed_dim=16, n_embed=32, ddconfig=TINY_DD)
    with torch.no_grad(): vq.quant_conv.weight.mul_(20)
    hr = _image(64, 64)
    t = img2tensor(imresize(imresize(hr, 0.5), 2.)).clamp(0, 1)[None]
    s = (t + 0.05*torch.randn(t.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    fig, st = code_maps(vq, t, s, img=hr)
    with torch.no_grad(): ref = dmm_loss(vq.code_logits(s), vq.code_logits(t)).item()
    assert st['ce'] == pytest.approx(ref, rel=1e-5)   # the same quantity as the DMM loss
    assert st['ce'] > st['entropy_t'] and st['kl'] == pytest.approx(st['ce'] - st['entropy_t'], abs=1e-12)
    full = code_stats(vq, t, s)
    assert st['agreement'] == pytest.approx(float((full['codes_t'] == full['codes_s']).mean()))
    assert full['ce_map'].shape == (4, 4) and np.all(full['ce_map'] >= full['entropy_map'] - 1e-9)
    # HWC arrays work as inputs too
    _, st2 = code_maps(vq, t[0].permute(1, 2, 0).numpy(), s[0].permute(1, 2, 0).numpy())
    assert st2['ce'] == pytest.approx(st['ce'], rel=1e-6)
    with pytest.raises(ValueError, match='differ in shape'): code_maps(vq, t, s[..., :32])


def test_code_maps_uniform_standin():
    class Uniform:
        def code_logits(self, x): return torch.zeros(x.shape[0], 2, 3, 5)
    _, st = code_maps(Uniform(), torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48))
    assert st['ce'] == pytest.approx(math.log(5), abs=1e-12) and st['agreement'] == 1.0 and st['n_codes_t'] == 1


# ---------------------------------------------------------------- ablation

ROWS = {('Set5', 'scratch'): [37.10, 37.16, 37.05], ('Set5', 'kd'): [37.20, 37.22, 37.18],
        ('Set5', 'dckd'): [37.31, 37.36, 37.28], ('Kodak24', 'scratch'): [31.0, 31.2], ('Kodak24', 'kd'): [31.3, 31.2],
        ('Kodak24', 'dckd'): [31.5]}


def _rows():
    return [dict(set=st, variant=v, seed=s, psnr=p, ssim=0.9 + 0.001*s + 0.0001*p)
            for (st, v), ps in ROWS.items() for s, p in enumerate(ps)]


def test_ablation_table_numbers():
    fixed = [dict(variant='teacher', set='Set5', psnr=38.0, ssim=0.96), dict(variant='bicubic', set='Set5', psnr=33.66, ssim=0.93),
             dict(variant='bicubic', set='Kodak24', psnr=28.0, ssim=0.8)]
    tab = ablation_table(_rows(), fixed)
    assert [(r['set'], r['variant']) for r in tab] == [
        ('Set5', 'bicubic'), ('Set5', 'scratch'), ('Set5', 'kd'), ('Set5', 'dckd'), ('Set5', 'teacher'),
        ('Kodak24', 'bicubic'), ('Kodak24', 'scratch'), ('Kodak24', 'kd'), ('Kodak24', 'dckd')]
    get = {(r['set'], r['variant']): r for r in tab}
    for (st, v), ps in ROWS.items():
        r = get[st, v]
        assert r['n'] == len(ps) and r['psnr'] == pytest.approx(np.mean(ps), abs=1e-12)
        assert r['psnr_std'] == pytest.approx(np.std(ps, ddof=1) if len(ps) > 1 else 0., abs=1e-12)
        ss = [0.9 + 0.001*s + 0.0001*p for s, p in enumerate(ps)]
        assert r['ssim'] == pytest.approx(np.mean(ss), abs=1e-12)
        # gains paired by seed
        for tag, ref in (('gain', 'scratch'), ('gain_kd', 'kd')):
            d = np.subtract(ps, ROWS[st, ref][:len(ps)])
            assert r[tag] == pytest.approx(d.mean(), abs=1e-12), (st, v, tag)
            assert r[f'{tag}_std'] == pytest.approx(d.std(ddof=1) if len(d) > 1 else 0., abs=1e-12)
    t = get['Set5', 'teacher']
    assert t['fixed'] and t['gain'] == pytest.approx(38.0 - np.mean(ROWS['Set5', 'scratch'])) and t['gain_std'] is None
    md = format_table(tab)
    assert md.splitlines()[0] == '| set | variant | n | PSNR (dB) | SSIM | Δ vs scratch (dB) | Δ vs kd (dB) |'
    assert f"| Set5 | dckd | 3 | {np.mean(ROWS['Set5', 'dckd']):.2f} ± {np.std(ROWS['Set5', 'dckd'], ddof=1):.2f} |" in md
    assert '| Kodak24 | dckd | 1 | 31.50 ± 0.00 |' in md and '| Set5 | teacher | – | 38.00 | 0.9600 |' in md
    assert len(md.splitlines()) == 2 + len(tab)


def test_ablation_table_unpaired_and_errors():
    rows = [dict(variant='scratch', seed=0, psnr=30., ssim=.9), dict(variant='scratch', seed=1, psnr=31., ssim=.9),
            dict(variant='kd', seed=5, psnr=31., ssim=.9), dict(variant='kd', seed=6, psnr=32., ssim=.9)]
    tab = ablation_table(rows, [dict(variant='bicubic', psnr=28., ssim=.8)])
    kd = tab[2]
    assert [r['variant'] for r in tab] == ['bicubic', 'scratch', 'kd'] and tab[0]['set'] is None
    assert kd['gain_seeds'] == [0.5, 1.5] and kd['gain'] == 1.0 and kd['gain_std'] == pytest.approx(np.std([0.5, 1.5], ddof=1))
    assert '| set |' not in format_table(tab)
    with pytest.raises(ValueError, match='lacks seed'): ablation_table([dict(variant='a', psnr=1., ssim=1.)])
    with pytest.raises(ValueError, match='appears twice'): ablation_table(rows + rows[:1])
    with pytest.raises(ValueError, match="needs a 'set'"): ablation_table(_rows(), [dict(variant='b', psnr=1., ssim=1.)])
    with pytest.raises(ValueError, match='not among'): ablation_table(_rows(), [dict(variant='b', set='Urban', psnr=1., ssim=1.)])
    # no reference in the table: gains are None, shown as a dash
    tab = ablation_table([dict(variant='x', seed=0, psnr=30., ssim=.9)])
    assert tab[0]['gain'] is None and '| x | 1 | 30.00 ± 0.00 | 0.9000 ± 0.0000 | – | – |' in format_table(tab)


def test_ablation_chart(tmp_path):
    tab = ablation_table(_rows(), [dict(variant='teacher', set='Set5', psnr=38.0, ssim=0.96),
                                   dict(variant='teacher', set='Kodak24', psnr=33.0, ssim=0.9)])
    fig = ablation_chart(tab, path=tmp_path/'abl.png')
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    _png_ok(tmp_path/'abl.png')
    ax = fig.axes[0]
    assert 'dB' in ax.get_ylabel() and 'scratch' in ax.get_ylabel()
    heights = [b.get_height() for b in ax.patches]
    want = [np.mean(np.subtract(ROWS['Set5', v], ROWS['Set5', 'scratch'])) for v in ('kd', 'dckd')]
    np.testing.assert_allclose(heights, want, atol=1e-12)
    # a different reference re-pairs the per-seed scores; fixed rows on request
    fig = ablation_chart(tab, ref='kd', fixed=True)
    h = [b.get_height() for b in fig.axes[0].patches]
    np.testing.assert_allclose(h, [np.mean(np.subtract(ROWS['Set5', v], ROWS['Set5', 'kd'])) for v in ('scratch', 'dckd')]
                               + [38.0 - np.mean(ROWS['Set5', 'kd'])], atol=1e-12)
    with pytest.raises(ValueError, match="no variant 'zzz'"): ablation_chart(tab, ref='zzz')


# ---------------------------------------------------------------- crops

def test_visual_crops(tmp_path):
    hr = _image(64, 64)
    lq = imresize(hr, 0.5)
    nets = {'scratch': _sr_net(seed=1), 'KD': _sr_net(seed=2), 'DCKD': _sr_net(seed=3), 'teacher': _sr_net(seed=4)}
    panels = sr_panels(img2tensor(lq)[None], hr, nets, scale=2)
    assert list(panels) == ['LR', 'bicubic', 'scratch', 'KD', 'DCKD', 'teacher', 'HR']
    assert panels['LR'].shape == (32, 32, 3) and all(v.shape == (64, 64, 3) for k, v in panels.items() if k != 'LR')
    fig = visual_crops(panels, box=(8, 16, 24), path=tmp_path/'crops.png')
    assert isinstance(fig, Figure) and len(fig.axes) == 1 + len(panels)
    _png_ok(tmp_path/'crops.png')
    ps = panel_psnr(panels, border=2)
    assert set(ps) == {'bicubic', 'scratch', 'KD', 'DCKD', 'teacher'}
    titles = [ax.get_title() for ax in fig.axes]
    for k, v in ps.items(): assert f'{k}\n{v:.2f} dB' in titles, (k, titles)
    assert 'LR (nearest x2)' in titles and 'HR' in titles
    # the PSNR is the metrics module's: Y channel, border = scale, 8-bit levels
    from dckd.metrics import calculate_psnr
    to8 = lambda x: np.round(np.clip(x, 0, 1)*255)
    assert ps['bicubic'] == pytest.approx(calculate_psnr(to8(panels['bicubic']), to8(hr), crop_border=2, test_y_channel=True))


def test_visual_crops_auto_box(tmp_path):
    hr = np.full((64, 96, 3), 0.5, np.float32)
    hr[40:56, 60:76] = np.random.default_rng(0).random((16, 16, 3))   # the only detail
    blur = np.full_like(hr, 0.5)
    fig = visual_crops({'LR': hr[::2, ::2], 'model': blur, 'HR': hr}, size=16)
    assert 'box 16x16 at (40, 60)' in fig.axes[0].get_title()
    # 'difference': where two models disagree
    a, b = hr.copy(), hr.copy(); b[4:12, 8:16] = 0.
    fig = visual_crops({'a': a, 'b': b, 'HR': hr}, size=8, pick='difference')
    assert 'box 8x8 at (4, 8)' in fig.axes[0].get_title()
    assert pick_box(np.eye(5), 2) == (0, 0, 2)
    with pytest.raises(ValueError, match='not inside'): visual_crops({'HR': hr}, box=(60, 0, 10))
    with pytest.raises(ValueError, match='integer multiple'): visual_crops({'LR': hr[:30, :30], 'HR': hr})
    with pytest.raises(ValueError, match="'m' 10x10"): visual_crops({'m': hr[:10, :10], 'HR': hr})
    with pytest.raises(ValueError, match='does not fit'): pick_box(np.ones((4, 4)), 5)

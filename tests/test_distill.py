"Integration tests of the DCKD trainer: exact resume, NaN stop, loss terms as data, config errors, CLI."
import json, math, sys, warnings
from pathlib import Path
import numpy as np
import pytest
import torch

from dckd import distill
from dckd.distill import DistillConfig, ConfigError, NonFiniteLossError, tiny_config, train, distill_cli
from dckd.checkpoint import load_state, read_state_dict
from dckd.data import imwrite
from dckd.pipeline import variant_switches

pytestmark = pytest.mark.filterwarnings('ignore:(teacher|vqgan)_weights is None')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    "6 synthetic 48x48 HR images (smooth + noise, so patches differ)."
    d = tmp_path_factory.mktemp('hr')
    g = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :48] / 48
    for i in range(6):
        base = np.stack([np.sin(3 * xx + i), np.cos(2 * yy - i), xx * yy], -1) * 0.4 + 0.5
        imwrite(d / f'im{i}.png', np.clip(base + 0.1 * g.standard_normal((48, 48, 3)), 0, 1))
    return d


def cfg(images, out, **kw):
    return tiny_config(train_hr=str(images), out_dir=str(out), **kw)


class Kill(Exception): pass


def _kill_at(n):
    def f(it, logs):
        if it == n: raise Kill(f'simulated kill after iteration {it}')
    return f


def _nets(out):
    st = load_state(Path(out) / 'state.pt')
    return st, {k: st[k] for k in ('student', 'ema', 'history')}


def test_resume_is_exact(images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # DVCLive looks for a DVC/git repo from the cwd; outside one it just logs
    # batch 2 over 6 images: 3 iterations per epoch, so the kill at 5 (checkpoint at 4) resumes mid-epoch
    kw = dict(iters=8, ckpt_every=2, history_steps=(3,), log_every=1)
    ref = train(cfg(images, tmp_path / 'a', **kw))
    with pytest.raises(Kill):
        train(cfg(images, tmp_path / 'b', **kw), on_step=_kill_at(5))
    st_killed, _ = _nets(tmp_path / 'b')
    assert st_killed['iter'] == 4 and (st_killed['epoch'], st_killed['pos']) == (1, 1)
    res = train(cfg(images, tmp_path / 'b', resume=True, **kw))
    (sa, a), (sb, b) = _nets(tmp_path / 'a'), _nets(tmp_path / 'b')
    assert sa['iter'] == sb['iter'] == 8
    for net in a:
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f'{net}.{k} differs after resume'
    assert sa['refreshes'] == sb['refreshes'] == [3, 6]
    assert sa['sched'] == sb['sched']
    for i, s in sa['opt']['state'].items():
        assert all(torch.equal(v, sb['opt']['state'][i][k]) for k, v in s.items())
    assert res == ref                                     # same final losses, bit for bit
    # the history student really moves (a refresh happened in the resumed part)
    assert any(not torch.equal(a['history'][k], a['ema'][k]) for k in a['ema'] if a['ema'][k].is_floating_point())
    # the logs of the resumed run have each step once
    rows = _logged(tmp_path / 'b', 'train/total')
    assert [s for s, _ in rows] == list(range(1, 9))
    assert rows == _logged(tmp_path / 'a', 'train/total')
    refreshed = [s for s, v in _logged(tmp_path / 'b', 'history/refresh') if v == 1]
    assert refreshed == [3, 6]
    assert json.loads((tmp_path / 'b' / 'history_refresh.json').read_text())['iterations'] == [3, 6]


def _logged(out, name):
    "(step, value) rows of one metric, from DVCLive's tsv or the JSONL fallback."
    live = Path(out) / 'live'
    tsv = live / 'plots' / 'metrics' / f'{name}.tsv'
    if tsv.is_file():
        lines = tsv.read_text().splitlines()
        hdr = lines[0].split('\t')
        return [(int(r[hdr.index('step')]), float(r[hdr.index(name.split('/')[-1])]))
                for r in (l.split('\t') for l in lines[1:])]
    rows = [json.loads(l) for l in (live / 'metrics.jsonl').read_text().splitlines()]
    return [(r['step'], r[name]) for r in rows if name in r]


def test_nan_stops_and_keeps_checkpoint(images, tmp_path, monkeypatch):
    calls = []
    real = distill.kd_loss

    def bad_kd(s, t):
        calls.append(1)
        v = real(s, t)
        return v * float('nan') if len(calls) == 3 else v

    monkeypatch.setattr(distill, 'kd_loss', bad_kd)
    with pytest.raises(NonFiniteLossError, match=r"'kd' is nan at iteration 3") as e:
        train(cfg(images, tmp_path, iters=6, ckpt_every=2))
    assert 'iteration 2' in str(e.value)                  # names the checkpoint that is kept
    st = load_state(tmp_path / 'state.pt')
    assert st['iter'] == 2
    sd, key = read_state_dict(tmp_path / 'models' / 'net_g_latest.pth')
    assert key == 'params_ema'
    assert all(torch.equal(sd[k], v) for k, v in st['ema'].items())
    assert all(torch.isfinite(v).all() for v in st['student'].values() if v.is_floating_point())


SETS = ['scratch', 'kd', 'kd_lcr', 'kd_dcr', 'kd_dmm', 'dckd', 'fakd']   # terms from the ablation matrix's definition


@pytest.mark.parametrize('name', SETS)
def test_loss_terms_of_each_variant(images, tmp_path, name):
    losses = variant_switches(name, {})['losses']
    kw = dict(fakd_layers=[['layers.0.conv', 'layers.0.conv']]) if 'fakd' in losses else {}
    res = train(cfg(images, tmp_path, iters=2, losses=losses, **kw))
    assert res['iter'] == 2
    assert [k[6:] for k in res if k.startswith('train/') and k != 'train/total'] == list(losses)
    assert all(math.isfinite(v) for v in res.values())


def test_weights_scale_the_terms(images, tmp_path):
    "A term's weight multiplies its share of the total (and nothing else): kd at weight 3 vs 1 on the same first step."
    a = train(cfg(images, tmp_path / 'a', iters=1, losses={'pix': 1., 'kd': 1.}))
    b = train(cfg(images, tmp_path / 'b', iters=1, losses={'pix': 1., 'kd': 3.}))
    assert a['train/kd'] == b['train/kd'] and a['train/pix'] == b['train/pix']   # same first step: same term values
    assert math.isclose(b['train/total'] - a['train/total'], 2 * a['train/kd'], rel_tol=1e-6)
    assert b['train/total'] != a['train/total']


def test_legacy_switches_train_the_same_run(images, tmp_path):
    "An old config (use_*/w_* keys) trains exactly the run of its `losses` form."
    a = train(cfg(images, tmp_path / 'a', iters=2, use_lcr=False, use_dmm=False, w_dcr=0.05))
    b = train(cfg(images, tmp_path / 'b', iters=2, losses={'pix': 1, 'kd': 1, 'dcr': 0.05}))
    assert a == b


def test_reference_ce_and_no_fuse(images, tmp_path):
    a = train(cfg(images, tmp_path / 'a', iters=1, losses={'dmm': 0.001}))
    b = train(cfg(images, tmp_path / 'b', iters=1, losses={'dmm': 0.001}, reference_ce=True))
    assert a['train/dmm'] != b['train/dmm']
    c = train(cfg(images, tmp_path / 'c', iters=2, fuse_frozen=False))
    d = train(cfg(images, tmp_path / 'd', iters=2, fuse_frozen=True))
    for k in c: assert math.isclose(c[k], d[k], rel_tol=1e-4, abs_tol=1e-6), k


def test_bad_config_key():
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) 'losess'.*did you mean 'losses'") as e:
        DistillConfig.from_dict(dict(losess={'pix': 1}))
    assert 'accepted keys:' in str(e.value) and 'history_steps' in str(e.value)
    with pytest.raises(ConfigError, match="'lr'"):
        DistillConfig.from_dict(dict(lr='fast'))
    with pytest.raises(ConfigError, match="'vqgan_kind'"):
        DistillConfig(vqgan_kind='vqvae')
    with pytest.raises(ConfigError, match="'dcr_weights'"):
        distill.Distiller(tiny_config(dcr_weights=(1, 1)))


def test_batch_larger_than_data(images, tmp_path):
    with pytest.raises(ConfigError, match="'batch'.*6 training images"):
        train(cfg(images, tmp_path, batch=8))


def test_resume_refuses_other_seed(images, tmp_path):
    train(cfg(images, tmp_path, iters=2))
    with pytest.raises(ConfigError, match='seed=0'):
        train(cfg(images, tmp_path, iters=4, seed=1, resume=True))


def test_cli_and_yaml(images, tmp_path, capsys):
    import yaml
    p = tmp_path / 'params.yaml'
    d = tiny_config(train_hr=str(images), out_dir=str(tmp_path / 'run')).to_dict()
    p.write_text(yaml.safe_dump({'train': d}))
    res = distill_cli(['--config', str(p), '--section', 'train', '--set', 'iters=2', '--set', 'lr=2e-4'])
    assert res['iter'] == 2
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])['iter'] == 2
    saved = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
    assert saved['lr'] == 2e-4 and saved['iters'] == 2
    assert DistillConfig.from_yaml(p, 'train').gt_size == 32
    with pytest.raises(ConfigError, match='nope'):
        DistillConfig.from_yaml(p, 'nope')


def test_jsonl_without_dvclive(images, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'dvclive', None)   # import dvclive -> ImportError
    train(cfg(images, tmp_path, iters=3, history_steps=(2,)))
    rows = [json.loads(l) for l in (tmp_path / 'live' / 'metrics.jsonl').read_text().splitlines()]
    assert [r['step'] for r in rows] == [1, 2, 3]
    assert [r['history/refresh'] for r in rows] == [0, 1, 0]
    assert {'train/dcr', 'dcr/l4/ratio', 'dcr/l0/d_ap', 'dcr/l2/d_an', 'lr'} <= set(rows[0])


def test_validation_logged(images, tmp_path):
    res = train(cfg(images, tmp_path, iters=2, val_hr=str(images), val_every=1))
    assert 10 < res['val/psnr'] < 60 and -1 < res['val/ssim'] <= 1
    assert [s for s, _ in _logged(tmp_path, 'val/psnr')] == [1, 2]


def test_teacher_cache_shared_by_variants_is_exact_and_resumes(images, tmp_path, capsys):
    "kd fills the cache; kd_dcr reads every teacher output from it, killed and resumed, and ends bit-identical to kd_dcr without it."
    cache = tmp_path / 'cache'
    run = lambda v, out, c, **kw: train(cfg(images, tmp_path / out, iters=4, ckpt_every=2, teacher_cache=c,
                                           **variant_switches(v, {})), **kw)
    run('kd', 'kd', str(cache))
    assert 'teacher cache' in capsys.readouterr().out and len(list(cache.rglob('*.pt'))) == 4
    with pytest.raises(Kill): run('kd_dcr', 'dcr_cached', str(cache), on_step=_kill_at(3))
    d = distill.Distiller(cfg(images, tmp_path / 'dcr_cached', iters=4, ckpt_every=2, teacher_cache=str(cache), resume=True,
                              **variant_switches('kd_dcr', {})))
    try: d.fit()
    finally: d.close()
    assert (d.objective.T.hits, d.objective.T.misses) == (2, 0)   # iterations 3 and 4, after the resume at 2
    run('kd_dcr', 'dcr_plain', None)
    a, b = _nets(tmp_path / 'dcr_cached')[1], _nets(tmp_path / 'dcr_plain')[1]
    for k in a:
        assert all(torch.equal(x, a[k][n]) for n, x in b[k].items()), k

"Checkpoint I/O: bad files, misfitting weights, the real PAN files, BasicSR round trips, atomic saves."
import os, pickle, warnings
from pathlib import Path
import pytest
import torch
from torch import nn
from dckd.archs import PAN, SwinIR, build_net
from dckd.checkpoint import CheckpointError, read_state_dict, load_weights, save_weights, save_state, load_state

torch.set_num_threads(1)
TINY = dict(type='SwinIR', img_size=16, window_size=8, depths=[2], num_heads=[2], embed_dim=24, mlp_ratio=2,
            upsampler='pixelshuffle')


class Opaque:  # a class a checkpoint must never be able to instantiate
    def __init__(self): self.x = 1


def _bad_files(d: Path) -> dict:
    (d/'random.pth').write_bytes(os.urandom(4096))
    (d/'notes.txt').write_text('these are not weights\n')
    (d/'empty.pth').write_bytes(b'')
    torch.save(Opaque(), d/'object.pth')                       # torch zip format holding a pickled class
    with open(d/'object.pkl', 'wb') as f: pickle.dump(Opaque(), f)  # plain pickle of a class
    torch.save({'epoch': 3, 'cfg': 'x'}, d/'meta_only.pth')       # a dict, but no tensors
    return {'random.pth': 'not a readable torch checkpoint', 'notes.txt': 'not a readable torch checkpoint',
            'empty.pth': 'is empty', 'object.pth': 'weights_only=True) refuses',
            'object.pkl': 'not a readable torch checkpoint', 'meta_only.pth': 'has no state dict',
            'missing.pth': 'not found'}


def test_bad_files_give_checkpoint_error(tmp_path):
    for name, what in _bad_files(tmp_path).items():
        with pytest.raises(CheckpointError) as e: load_weights(PAN(scale=2), tmp_path/name)
        msg = str(e.value)
        assert str(tmp_path/name) in msg and what in msg, msg
        assert isinstance(e.value, ValueError) and isinstance(e.value, RuntimeError)
        if name not in ('empty.pth', 'missing.pth', 'meta_only.pth'): assert e.value.__cause__ is not None


def test_pickled_object_is_never_instantiated(tmp_path, monkeypatch):
    torch.save(Opaque(), tmp_path/'object.pth')
    calls = []
    monkeypatch.setattr(Opaque, '__setstate__', lambda self, st: calls.append(st), raising=False)
    with pytest.raises(CheckpointError, match=r'weights_only=True\) refuses .*Opaque'): read_state_dict(tmp_path/'object.pth')
    assert calls == []


def test_real_pan_files_load_strictly(shared):
    for s in (2, 3, 4):
        f = shared/'weights'/f'PANx{s}_DF2K.pth'
        sd, used = read_state_dict(f)
        assert used is None and len(sd) == (146 if s == 4 else 140)
        net = load_weights(PAN(scale=s), f)
        assert torch.equal(net.state_dict()['conv_last.weight'], sd['conv_last.weight'])


def test_pan_weights_into_swinir(shared):
    f = shared/'weights'/'PANx2_DF2K.pth'
    with pytest.raises(CheckpointError) as e: load_weights(build_net({**TINY, 'upscale': 2}), f)
    msg = str(e.value)
    for part in [str(f), 'bare state dict', 'missing', 'unexpected', 'SCPA_trunk.0.', 'patch_embed.norm.weight',
                 'conv_first.weight (40, 3, 3, 3) vs (24, 3, 3, 3)', 'another architecture']:
        assert part in msg, (part, msg)


def test_pan_x4_into_x2_and_back(shared):
    f4, f2 = shared/'weights'/'PANx4_DF2K.pth', shared/'weights'/'PANx2_DF2K.pth'
    with pytest.raises(CheckpointError) as e: load_weights(PAN(scale=2), f4)
    msg = str(e.value)
    assert str(f4) in msg and '6 unexpected' in msg and 'upconv2.weight' in msg and 'looks like scale 4' in msg, msg
    with pytest.raises(CheckpointError) as e: load_weights(PAN(scale=4), f2)
    assert '6 missing' in str(e.value) and 'HRconv2.weight' in str(e.value) and 'looks like scale 2' in str(e.value)


def test_pan_x3_into_x2_refused(shared):
    # x2 and x3 PAN have identical keys and shapes: only the file name tells them apart; an error unless allowed
    f3 = shared/'weights'/'PANx3_DF2K.pth'
    with pytest.raises(CheckpointError, match='scale 3'): load_weights(PAN(scale=2), f3)
    with pytest.warns(UserWarning, match='scale 3'): load_weights(PAN(scale=2), f3, allow_scale_mismatch=True)


@pytest.mark.parametrize('s_ck,s_net,frag', [(3, 2, 'upsample.0.weight (576, 64, 3, 3) vs (256, 64, 3, 3)'),
                                             (2, 3, 'upsample.0.weight (256, 64, 3, 3) vs (576, 64, 3, 3)'),
                                             (4, 2, 'upsample.2.weight')])
def test_swinir_other_scale(tmp_path, s_ck, s_net, frag):
    torch.manual_seed(0)
    f = save_weights(tmp_path/f'swinir_x{s_ck}.pth', build_net({**TINY, 'upscale': s_ck}))
    with pytest.raises(CheckpointError) as e: load_weights(build_net({**TINY, 'upscale': s_net}), f)
    msg = str(e.value)
    assert str(f) in msg and "'params_ema'" in msg and frag in msg and f'looks like scale {s_ck}' in msg, msg


def test_basicsr_round_trip(tmp_path):
    torch.manual_seed(0)
    net, ema = build_net({**TINY, 'upscale': 2}), build_net({**TINY, 'upscale': 2})
    wrapped = nn.Module(); wrapped.module = net  # keys 'module.*', as DataParallel/DDP (which would move to CUDA)
    f = save_weights(tmp_path/'net_g_10.pth', wrapped, ema, iter=10, scale=2)
    raw = torch.load(f, weights_only=True)
    assert set(raw) == {'params', 'params_ema', 'iter', 'scale'}
    assert not any(k.startswith('module.') for k in raw['params'])
    assert all(v.device.type == 'cpu' for v in raw['params'].values())
    x = torch.rand(1, 3, 16, 16)
    for key, ref in [('params_ema', ema), ('params', net)]:
        back = load_weights(build_net({**TINY, 'upscale': 2}), f, key=key).eval()
        with torch.no_grad(): assert torch.equal(back(x), ref.eval()(x))
    # no EMA: params_ema is params
    f1 = save_weights(tmp_path/'plain.pth', net.state_dict())
    raw = torch.load(f1, weights_only=True)
    assert all(torch.equal(raw['params'][k], raw['params_ema'][k]) for k in raw['params'])


def test_atomic_save_keeps_old_file(tmp_path, monkeypatch):
    net = PAN(scale=2, nb=1)
    f = save_weights(tmp_path/'w.pth', net)
    old = f.read_bytes()
    real = torch.save
    def dies_midway(obj, path, *a, **k):
        real(obj, path, *a, **k)                          # a complete temp file ...
        Path(path).write_bytes(Path(path).read_bytes()[:100])  # ... truncated, as by a crash
        raise OSError('No space left on device')
    monkeypatch.setattr(torch, 'save', dies_midway)
    with pytest.raises(OSError, match='No space'): save_weights(f, PAN(scale=2, nb=1))
    with pytest.raises(OSError, match='No space'): save_state(tmp_path/'state.pth', {'iter': 1})
    assert f.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ['w.pth']
    monkeypatch.setattr(torch, 'save', real)
    load_weights(PAN(scale=2, nb=1), f)


def test_training_state_round_trip(tmp_path):
    net = PAN(scale=2, nb=1)
    opt = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 3, 8, 8)).mean().backward(); opt.step()
    g = torch.Generator().manual_seed(3)
    state = {'iter': 7, 'net': net.state_dict(), 'opt': opt.state_dict(), 'lr': [1e-4, 5e-5],
             'rng': {'torch': torch.get_rng_state(), 'gen': g.get_state()}, 'best': {'psnr': 30.5, 'iter': None}}
    save_state(tmp_path/'s.pth', state)
    back = load_state(tmp_path/'s.pth')
    assert back['iter'] == 7 and back['lr'] == [1e-4, 5e-5] and back['best'] == {'psnr': 30.5, 'iter': None}
    assert back['rng']['torch'].dtype == torch.uint8 and torch.equal(back['rng']['torch'], state['rng']['torch'])
    g2 = torch.Generator(); g2.set_state(back['rng']['gen'])
    assert torch.equal(torch.rand(3, generator=g2), torch.rand(3, generator=g))
    opt2 = torch.optim.Adam(net.parameters()); opt2.load_state_dict(back['opt'])
    with pytest.raises(TypeError, match=r"state\['cb'\]"): save_state(tmp_path/'bad.pth', {'cb': Opaque()})
    assert not (tmp_path/'bad.pth').exists()
    with pytest.raises(CheckpointError, match='notes.txt'):
        (tmp_path/'notes.txt').write_text('x'); load_state(tmp_path/'notes.txt')

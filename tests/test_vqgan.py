"dckd.vqgan against the official fixtures (vqgan_tiny.pt, losses.pt end_to_end, vqgan_keys.json) and the VQ trainer."
import json
import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from dckd.vqgan import (VQGAN, VQAutoencoder, TamingLoadError, get_feas_list, load_taming, load_vq, save_vq, train_vq,
                        F16_DDCONFIG)

torch.set_num_threads(1)
close = torch.testing.assert_close
FEA_TOL = dict(atol=2e-5, rtol=1e-5)  # fixtures/README.md: get_feas / encode_intermediates
ENC_TOL = dict(atol=5e-5, rtol=0)     # encode probabilities
W = [0.03125, 0.0625, 0.125, 0.25, 1.0]


def maxerr(a, b): return (a - b).abs().max().item()


@pytest.fixture(scope='module')
def tiny(shared):
    fx = torch.load(shared/'fixtures'/'vqgan_tiny.pt', map_location='cpu', weights_only=True)
    vq = VQGAN(**fx['config'])
    vq.load_state_dict(fx['state_dict'], strict=True)
    return vq, fx


@pytest.fixture(scope='module')
def keys(shared): return json.loads((shared/'fixtures'/'vqgan_keys.json').read_text())


@pytest.fixture(scope='module')
def photos():
    from skimage import data as skd
    return [skd.astronaut()[:128, :128], skd.chelsea()[:128, :128], skd.coffee()[:128, :128]]


# official formulas, written out here (the losses module is tested on its own)
def contras(lat):  # lat[level] = [anchor, positive, neg1..neg5]
    tot = 0.
    for w, (a, p, *ns) in zip(W, lat):
        tot = tot + w * (a - p).abs().mean() / (sum((a - n).abs().mean() for n in ns) + 1e-7)
    return 0.1 * tot

def ce_official(p, t): return 0.001 * F.cross_entropy(p, t)  # log-softmax on top of probabilities (quirk 14)


# --- vqgan_tiny.pt ---------------------------------------------------------------------------------------------

def test_tiny_state_dict_keys(tiny):
    vq, fx = tiny
    assert list(vq.state_dict()) == list(fx['state_dict'])
    assert not vq.training and not any(p.requires_grad for p in vq.parameters())


def test_tiny_get_feas(tiny):
    vq, fx = tiny
    with torch.no_grad(): got = get_feas_list(vq, [fx['x_a'], fx['x_b']])
    errs = []
    for l in range(5):
        for i in range(2):
            close(got[l][i], fx['get_feas_out'][l][i], **FEA_TOL)
            errs.append(maxerr(got[l][i], fx['get_feas_out'][l][i]))
    print(f'get_feas max abs err {max(errs):.2e}')


def test_tiny_encode_and_intermediates(tiny):
    vq, fx = tiny
    x, im = fx['input_encode'], fx['encode_intermediates']
    with torch.no_grad():
        z = vq.encoder(x)
        close(z, im['encoder_out'], **FEA_TOL)
        close(vq.quant_conv(z), im['quant_conv_out'], **FEA_TOL)
        close(vq.latents(x), im['quant_conv_out'], **FEA_TOL)
        e, ea = vq.encode(x), vq.encode(fx['x_a'])
        close(e, fx['encode_out'], **ENC_TOL)
        close(ea, fx['encode_x_a_out'], **ENC_TOL)
        # code_logits softmax == encode rows, in (b,h,w) order
        p = rearrange(vq.code_logits(x).softmax(-1), 'b h w k -> (b h w) k')
        close(p, fx['encode_out'], **ENC_TOL)
    print(f"encoder_out {maxerr(z, im['encoder_out']):.2e}, encode {maxerr(e, fx['encode_out']):.2e}, "
          f"encode(x_a) {maxerr(ea, fx['encode_x_a_out']):.2e}")


@pytest.mark.parametrize('name', ['x_a', 'x_b', 'input_encode'])
def test_fused_equals_separate(tiny, name):
    vq, fx = tiny
    x1 = fx[name].clone().requires_grad_()
    x2 = fx[name].clone().requires_grad_()
    fs, lg = vq.features(x1, logits=True)
    fs2, lg2 = vq.get_feas(x2), vq.code_logits(x2)
    for a, b in zip(fs, fs2): close(a, b, atol=0, rtol=0)
    close(lg, lg2, atol=0, rtol=0)
    fn, none = vq.features(fx[name], logits=False)
    assert none is None and all(torch.equal(a, b) for a, b in zip(fn, fs2))
    # same backward to the input
    (sum(f.square().mean() for f in fs) + lg.logsumexp(-1).mean()).backward()
    (sum(f.square().mean() for f in fs2) + lg2.logsumexp(-1).mean()).backward()
    close(x1.grad, x2.grad, atol=1e-5 * x2.grad.abs().max().item(), rtol=0)  # summation order only
    assert all(p.grad is None for p in vq.parameters())


def test_get_feas_rejects_list(tiny):
    vq, fx = tiny
    with pytest.raises(TypeError, match='get_feas_list'): vq.get_feas([fx['x_a']])


# --- losses.pt end_to_end --------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def e2e(shared): return torch.load(shared/'fixtures'/'losses.pt', map_location='cpu', weights_only=True)['end_to_end']


def test_end_to_end_contras(tiny, e2e):
    vq, _ = tiny
    xs = [x.clone() for x in e2e['contras_sample']]
    xs[0].requires_grad_()
    lat = get_feas_list(vq, xs)
    assert [[list(t.shape) for t in lv] for lv in lat] == [[list(s) for s in lv] for lv in e2e['contras_latent_shapes']]
    loss = contras(lat)
    close(loss, e2e['contras_loss'], atol=0, rtol=1e-4)
    loss.backward()
    g = e2e['grads']['contras_sample0']
    close(xs[0].grad, g, atol=1e-3 * g.abs().max().item(), rtol=0)
    # the fused pass gives the same features for the 7 images
    for i, x in enumerate(e2e['contras_sample']):
        for l, f in enumerate(vq.features(x, logits=False)[0]): close(f, lat[l][i].detach(), atol=0, rtol=0)
    print(f"contras rel err {abs(loss.item() / e2e['contras_loss'].item() - 1):.2e}, "
          f"grad max err / max|g| {maxerr(xs[0].grad, g) / g.abs().max().item():.2e}")


def test_end_to_end_ce(tiny, e2e):
    vq, _ = tiny
    s = e2e['ce_s_img'].clone().requires_grad_()
    s_d = vq.encode(s)
    with torch.no_grad(): t_d = vq.encode(e2e['ce_t_img'])
    close(s_d, e2e['s_d'], **ENC_TOL)
    close(t_d, e2e['t_d'], **ENC_TOL)
    loss = ce_official(s_d, t_d)
    close(loss, e2e['ce_loss'], atol=0, rtol=1e-4)
    loss.backward()
    g = e2e['grads']['ce_s_img']
    close(s.grad, g, atol=1e-3 * g.abs().max().item(), rtol=0)
    # the corrected form -sum t log p, from the logits of the fused pass
    _, lg = vq.features(e2e['ce_s_img'])
    logp = rearrange(lg.log_softmax(-1), 'b h w k -> (b h w) k')
    close(0.001 * -(t_d * logp).sum(1).mean(), e2e['NOT_OFFICIAL_ce_loss_log_prob_form'], atol=0, rtol=1e-4)
    print(f"s_d err {maxerr(s_d, e2e['s_d']):.2e}, ce rel err {abs(loss.item() / e2e['ce_loss'].item() - 1):.2e}, "
          f"grad max err / max|g| {maxerr(s.grad, g) / g.abs().max().item():.2e}")


# --- f16 / n1024 and taming checkpoints ------------------------------------------------------------------------

def test_f16_keys_and_shapes(keys):
    with torch.device('meta'): vq = VQGAN()
    sd = vq.state_dict()
    assert list(sd) == keys['dckd_vqgan_keys']
    assert {k: list(v.shape) for k, v in sd.items()} == {k: keys['keys'][k] for k in keys['dckd_vqgan_keys']}
    assert sum(p.numel() for p in vq.parameters()) == keys['dckd_vqgan_num_parameters']
    assert vq.ddconfig == keys['ddconfig']


def test_autoencoder_uses_taming_names(keys):
    with torch.device('meta'):
        ae = VQAutoencoder(ch=128, num_res_blocks=2, z_channels=256, embed_dim=256, n_embed=1024)
    mine = {k: list(v.shape) for k, v in ae.state_dict().items() if k not in ('ema_count', 'ema_sum', 'idle', 'initted')}
    theirs = {k: v for k, v in keys['keys'].items() if not k.startswith('loss.')}
    assert mine == theirs


def synthetic_taming(keys, seed=0):
    "A full taming VQModel state dict (398 keys): random tensors for the VQGAN part, zero views for the rest."
    g = torch.Generator().manual_seed(seed)
    want = set(keys['dckd_vqgan_keys'])
    dt = {k: getattr(torch, v) for k, v in keys['non_float32_dtypes'].items()}
    return {k: (torch.randn(s, generator=g) if k in want else torch.zeros((), dtype=dt.get(k, torch.float32)).expand(s))
            for k, s in keys['keys'].items()}


@pytest.fixture(scope='module')
def full(keys): return synthetic_taming(keys)


def test_load_synthetic_full_checkpoint(keys, full):
    assert len(full) == keys['num_state_dict_keys'] == 398
    vq = VQGAN()
    rep = load_taming(vq, {'state_dict': full, 'epoch': 3, 'global_step': 1000})
    assert repr(rep) == 'loaded 147 keys (encoder 144, quant_conv 2, quantize 1); ignored 251 (decoder 194, loss 55, post_quant_conv 2)'
    assert len(rep.ignored_keys) == keys['dckd_load_strict_false']['num_unexpected_keys']
    for k, v in vq.state_dict().items(): assert torch.equal(v, full[k]), k
    assert not any(p.requires_grad for p in vq.parameters()) and not vq.training
    rep2 = load_taming(vq, full)  # a bare state dict works too
    assert rep2.loaded == rep.loaded and rep2.ignored == rep.ignored


@pytest.mark.parametrize('key', ['encoder.down.2.block.0.nin_shortcut.weight', 'quant_conv.bias', 'quantize.embedding.weight'])
def test_load_missing_key(full, key):
    vq = VQGAN()
    with pytest.raises(TamingLoadError, match=key.replace('.', r'\.')):
        load_taming(vq, {k: v for k, v in full.items() if k != key})


def test_load_wrong_shape(full):
    vq = VQGAN()
    bad = {**full, 'encoder.mid.attn_1.q.weight': torch.zeros(512, 512, 3, 3)}
    with pytest.raises(TamingLoadError, match=r'encoder\.mid\.attn_1\.q\.weight: checkpoint \(512, 512, 3, 3\) vs model \(512, 512, 1, 1\)'):
        load_taming(vq, bad)
    vt = VQGAN(16, 32, dict(F16_DDCONFIG, ch=32, ch_mult=[1, 1, 2, 1, 1], z_channels=16, resolution=64))
    with pytest.raises(TamingLoadError, match='with wrong shape'): load_taming(vt, full)  # f16 weights, tiny model


class Hparams:  # stands for the Python objects a pytorch-lightning checkpoint pickles
    def __init__(self): self.lr = 1e-4


def test_load_from_files(tiny, tmp_path):
    vq, fx = tiny
    p = tmp_path/'last.ckpt'
    sd = {**fx['state_dict'], 'decoder.conv_out.weight': torch.zeros(3, 32, 3, 3), 'loss.logvar': torch.zeros(())}
    torch.save({'state_dict': sd, 'epoch': 1, 'global_step': 10}, p)
    v2 = VQGAN(**fx['config'])
    rep = load_taming(v2, p)
    assert repr(rep) == 'loaded 147 keys (encoder 144, quant_conv 2, quantize 1); ignored 2 (decoder 1, loss 1)'
    assert rep.source == str(p)
    assert all(torch.equal(a, b) for a, b in zip(v2.state_dict().values(), vq.state_dict().values()))
    # a pytorch-lightning style file with pickled objects is refused, with instructions
    torch.save({'state_dict': sd, 'hyper_parameters': Hparams()}, tmp_path/'pl.ckpt')
    with pytest.raises(TamingLoadError, match=r"(?s)pl\.ckpt.*weights_only=True.*\['state_dict'\]"):
        load_taming(v2, tmp_path/'pl.ckpt')
    with pytest.raises(FileNotFoundError, match='nope.ckpt'): load_taming(v2, tmp_path/'nope.ckpt')
    torch.save([1, 2], tmp_path/'list.pt')
    with pytest.raises(TamingLoadError, match='list.pt'): load_taming(v2, tmp_path/'list.pt')


# --- VQAutoencoder ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def trained(photos):
    return train_vq(photos, iters=30, batch=8, patch=32, log_every=10, seed=0, restart_after=5)


def test_training_reduces_reconstruction_loss(trained):
    ae, hist = trained
    assert [r['it'] for r in hist] == [10, 20, 30]
    assert hist[-1]['rec'] < 0.8 * hist[0]['rec'], hist
    assert not ae.training and all(k in hist[-1] for k in ('loss', 'commit', 'perplexity', 'usage', 'restarts'))


def test_dead_code_restart_keeps_usage(trained, photos):
    _, hist = trained
    _, hist0 = train_vq(photos, iters=30, batch=8, patch=32, log_every=10, seed=0, restart_after=10**9)
    assert hist0[-1]['restarts'] == 0 and hist[-1]['restarts'] > 0
    assert hist[-1]['usage'] > 0.1 and hist[-1]['perplexity'] > 10, hist
    assert hist[-1]['usage'] > 2 * hist0[-1]['usage'], (hist, hist0)


def test_restart_mechanism():
    torch.manual_seed(0)
    ae = VQAutoencoder(n_embed=64, restart_after=3).train()
    z = torch.randn(2, 64, 4, 4)
    ae.quantise(z)                    # first call: codes initialised from the batch
    flat = rearrange(z, 'b d h w -> (b h w) d')
    assert torch.cdist(ae.codes, flat).min(1).values.max() < 0.5  # typical distance ~11
    before = ae.codes.clone()
    ae.idle[:10] = 100                # pretend codes 0..9 were unused for a long time
    _, idx, _ = ae.quantise(z + 5)    # everything moves away: those of codes 0..9 not used now restart on the new batch
    dead = torch.ones(64, dtype=torch.bool); dead[10:] = False; dead[idx.unique()] = False
    assert dead.sum() >= 5
    assert torch.cdist(ae.codes[dead], flat + 5).min(1).values.max() < 0.5
    keep = torch.ones(64, dtype=torch.bool); keep[:10] = False; keep[idx.unique()] = False
    close(ae.codes[keep], before[keep], atol=0.05, rtol=0)  # unused but not yet dead: only the EMA's drift
    assert (ae.idle[:10] == 0).all()


def test_save_load_roundtrip(trained, tmp_path):
    ae, _ = trained
    p = save_vq(tmp_path/'sub'/'vq.pt', ae)
    assert p.is_file() and not list(p.parent.glob('.*tmp'))
    ae2 = load_vq(p)
    assert ae2.config == ae.config
    for (k, a), b in zip(ae.state_dict().items(), ae2.state_dict().values()): assert torch.equal(a, b), k
    x = torch.rand(2, 3, 48, 48)
    with torch.no_grad():
        o, o2 = ae(x), ae2(x)
        assert torch.equal(o.rec, o2.rec) and torch.equal(o.idx, o2.idx)
        f, l = ae.as_vqgan().features(x)
        f2, l2 = ae2.features(x)
    assert torch.equal(l, l2) and all(torch.equal(a, b) for a, b in zip(f, f2))
    torch.save({'weights': 1}, tmp_path/'other.pt')
    with pytest.raises(ValueError, match='other.pt'): load_vq(tmp_path/'other.pt')


def test_as_vqgan_is_frozen_copy(trained):
    ae, _ = trained
    vq = ae.as_vqgan()
    assert type(vq) is VQGAN and not any(p.requires_grad for p in vq.parameters())
    assert list(vq.state_dict()) == [k for k in ae.state_dict() if k.split('.')[0] in ('encoder', 'quant_conv', 'quantize')]
    assert vq.codes.data_ptr() != ae.codes.data_ptr()


def test_train_vq_bad_inputs(photos):
    import numpy as np
    with pytest.raises(ValueError, match=r'images\[1\].*smaller than patch 64'):
        train_vq([photos[0], photos[1][:40]], iters=1, patch=64)
    with pytest.raises(ValueError, match=r'images\[0\].*expected \[0, 1\]'):
        train_vq([photos[0].astype(np.float32)], iters=1, patch=32)
    with pytest.raises(ValueError, match='N,3,H,W'): train_vq(torch.rand(2, 1, 64, 64), iters=1, patch=32)
    with pytest.raises(ValueError, match='rec_loss'): train_vq(photos, iters=1, rec_loss='l2')

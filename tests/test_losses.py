"dckd.losses against the official DCKD loss code (fixtures/losses.pt, noising.pt), plus the negative generator."
import pytest
import torch
import torch.nn.functional as F

from dckd.losses import (PAPER_WEIGHTS, DCR_WEIGHTS, pixel_loss, kd_loss, noising, random_masks, consistency_target,
                         lcr_loss, dcr_level, dcr_loss, unstack_feats, dmm_loss, ce_from_probs, degrade, make_negatives)
from dckd.losses import _gauss

OPS = ('i', 'h', 'v', 't')


def load(shared, name):
    return torch.load(shared/'fixtures'/name, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def losses_pt(shared): return load(shared, 'losses.pt')


# ---------------------------------------------------------------- weights, pixel, kd

def test_paper_weights():
    assert PAPER_WEIGHTS == dict(pix=1., kd=1., lcr=1., dcr=0.1, dmm=0.001)
    assert DCR_WEIGHTS == (1/32, 1/16, 1/8, 1/4, 1.)


def test_pixel_kd():
    g = torch.Generator().manual_seed(0)
    s, gt, t = (torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(pixel_loss(s, gt), F.l1_loss(s, gt))
    s.requires_grad_(); t.requires_grad_()
    kd_loss(s, t).backward()
    assert t.grad is None and s.grad is not None


# ---------------------------------------------------------------- teacher consistency

@pytest.mark.parametrize('case', [0, 1])
def test_noising_fixture(shared, case):
    c = load(shared, 'noising.pt')['cases'][case]
    for k, idx in c['index_tensors'].items():  # our masks select what the official index tensors select
        assert torch.equal(torch.tensor(c['masks'][k]).nonzero().squeeze(), idx)
    zero_d = [k for k, idx in c['index_tensors'].items() if idx.ndim == 0]
    assert zero_d, 'each case has a 0-d index (a single selected sample)'
    for masks in (c['masks'], tuple(torch.tensor(c['masks'][k]).bool() for k in OPS)):
        torch.testing.assert_close(noising(c['lq'], masks), c['noised_lq'], rtol=0, atol=0)
        torch.testing.assert_close(noising(c['t_out_on_noised'], masks, revert=True), c['reverted'], rtol=0, atol=0)
    torch.testing.assert_close(noising(c['noised_lq'], c['masks'], revert=True), c['lq'], rtol=0, atol=0)


def test_noising_errors():
    x = torch.rand(4, 3, 6, 6)
    with pytest.raises(ValueError, match='keys'): noising(x, dict(i=[1, 0, 0, 0]))
    with pytest.raises(ValueError, match=r"masks\['h'\]"): noising(x, dict(i=[0]*4, h=[0]*3, v=[0]*4, t=[0]*4))
    with pytest.raises(ValueError, match='4 masks'): noising(x, [[0]*4]*3)
    with pytest.raises(ValueError, match='square'): noising(torch.rand(4, 3, 6, 8), dict(i=[0]*4, h=[0]*4, v=[0]*4, t=[0, 1, 0, 0]))
    # no transpose selected: non-square images are fine
    y = torch.rand(4, 3, 6, 8)
    torch.testing.assert_close(noising(y, dict(i=[1]*4, h=[0]*4, v=[0]*4, t=[0]*4)), 1 - y)


def test_random_masks():
    a = random_masks(1000, torch.Generator().manual_seed(0))
    b = random_masks(1000, torch.Generator().manual_seed(0))
    c = random_masks(1000, torch.Generator().manual_seed(1))
    assert all(torch.equal(a[k], b[k]) for k in OPS) and not all(torch.equal(a[k], c[k]) for k in OPS)
    for k in OPS:
        assert a[k].dtype == torch.bool and a[k].shape == (1000,) and 0.4 < a[k].float().mean() < 0.6
    assert not random_masks(50, torch.Generator().manual_seed(0), p=0.)['i'].any()


def test_consistency_target():
    lq = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    up = lambda x: F.interpolate(x, scale_factor=2, mode='nearest')  # commutes with all four ops
    torch.testing.assert_close(consistency_target(up, lq, torch.Generator().manual_seed(1)), up(lq), rtol=0, atol=0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)  # not equivariant: t' must differ from T(lq), and T gets no grads
    tp = consistency_target(conv, lq, torch.Generator().manual_seed(1))
    assert not tp.requires_grad and (tp - conv(lq)).abs().max() > 1e-3
    torch.testing.assert_close(tp, consistency_target(conv, lq, torch.Generator().manual_seed(1)))
    m = random_masks(16, torch.Generator().manual_seed(1))
    torch.testing.assert_close(tp, noising(conv(noising(lq, m)), m, revert=True).detach())
    s = torch.rand_like(tp, requires_grad=True)
    lcr_loss(s, tp).backward()
    assert conv.weight.grad is None
    torch.testing.assert_close(lcr_loss(tp, tp), torch.tensor(0.))


# ---------------------------------------------------------------- DCR

def test_dcr_fixture(losses_pt):
    fx = losses_pt['contras']
    lat, w = fx['latents'], fx['config']['weights']
    anchors = [l[0].clone().requires_grad_() for l in lat]
    loss, state = dcr_loss(anchors, [l[1] for l in lat], [torch.stack(l[2:]) for l in lat], w)
    loss = fx['config']['loss_weight'] * loss
    torch.testing.assert_close(loss, fx['loss'], rtol=1e-5, atol=0)
    assert abs(loss.item() - 0.0085952105) <= 1e-5 * 0.0085952105
    for field, key in (('d_ap', 'd_ap'), ('d_an', 'd_an'), ('ratio', 'contras')):
        ref = torch.tensor([d[key] for d in fx['per_level']])
        torch.testing.assert_close(getattr(state, field), ref, rtol=1e-5, atol=0)
    assert [d['weight'] for d in fx['per_level']] == list(DCR_WEIGHTS)
    loss.backward()
    for a, g in zip(anchors, fx['grad_anchor']):
        torch.testing.assert_close(a.grad, g, rtol=0, atol=1e-8)
    # one level at a time, negatives as a list
    for l, r in zip(lat, state.ratio):
        torch.testing.assert_close(dcr_level(l[0], l[1], l[2:]), r, rtol=1e-5, atol=0)


def test_dcr_grad_only_anchor():
    g = torch.Generator().manual_seed(0)
    shapes = [(2, 4, 8, 8), (2, 8, 4, 4), (2, 8, 2, 2), (2, 8, 1, 1), (2, 8, 1, 1)]
    fs = [torch.randn(*s, generator=g, requires_grad=True) for s in shapes]
    ft = [torch.randn(*s, generator=g, requires_grad=True) for s in shapes]
    fn = [torch.randn(3, *s, generator=g, requires_grad=True) for s in shapes]
    loss, state = dcr_loss(fs, ft, fn)
    loss.backward()
    assert all(f.grad is None for f in ft + fn)
    assert all(f.grad.abs().sum() > 0 for f in fs)
    assert not any(t.requires_grad for t in state)
    assert state.ratio.shape == (5,)
    # the state is consistent with the loss
    torch.testing.assert_close(sum(w * r for w, r in zip(DCR_WEIGHTS, state.ratio)), loss.detach())
    # a positive that moves away raises the loss, negatives that move away lower it
    f2 = [f.detach() for f in fs]
    near, far = dcr_loss(f2, [f + 0.1 for f in f2], fn)[0], dcr_loss(f2, [f + 1 for f in f2], fn)[0]
    assert far > near
    assert dcr_loss(f2, ft, [2 * n for n in fn])[0] < dcr_loss(f2, ft, fn)[0]


def test_dcr_errors():
    f = torch.randn(2, 4, 4, 4)
    with pytest.raises(ValueError, match='same number'): dcr_loss([f]*5, [f]*5, [f[None]]*4)
    with pytest.raises(ValueError, match=r'\(n,b,c,h,w\)'): dcr_level(f, f, f)


def test_unstack_feats():
    g = torch.Generator().manual_seed(0)
    s, t, n = torch.randn(3, 4, 2, 2, generator=g), torch.randn(3, 4, 2, 2, generator=g), torch.randn(5, 3, 4, 2, 2, generator=g)
    fs, ft, fn = unstack_feats([torch.cat([s, t, *n])], b=3)
    assert torch.equal(fs[0], s) and torch.equal(ft[0], t) and torch.equal(fn[0], n)


# ---------------------------------------------------------------- DMM

@pytest.mark.parametrize('reference,key,gkey', [
    (True, 'loss', 'grad_pred'),
    (False, 'NOT_OFFICIAL_loss_log_prob_form', 'NOT_OFFICIAL_grad_pred_log_prob_form')])
def test_ce_fixture(losses_pt, reference, key, gkey):
    fx = losses_pt['ce']
    pred = fx['pred'].clone().requires_grad_()
    loss = fx['config']['loss_weight'] * ce_from_probs(pred, fx['target'], reference=reference)
    torch.testing.assert_close(loss, fx[key], rtol=1e-5, atol=0)
    loss.backward()
    torch.testing.assert_close(pred.grad, fx[gkey], rtol=0, atol=1e-10)
    # the same through logits: log of the probabilities is a valid set of logits for the same distribution
    logits = fx['pred'].log().requires_grad_()
    torch.testing.assert_close(fx['config']['loss_weight'] * dmm_loss(logits, fx['target'].log(), reference=reference),
                               fx[key], rtol=1e-5, atol=0)


def test_ce_fixture_values(losses_pt):
    fx = losses_pt['ce']
    assert abs(0.001 * ce_from_probs(fx['pred'], fx['target'], reference=True).item() - 0.0034754742) < 1e-5 * 0.0035
    assert abs(0.001 * ce_from_probs(fx['pred'], fx['target']).item() - 0.0052601397) < 1e-5 * 0.0053


def test_ce_end_to_end_distributions(losses_pt):
    "The official `encode` distributions of the end-to-end case, without the VQGAN."
    e = losses_pt['end_to_end']
    torch.testing.assert_close(0.001 * ce_from_probs(e['s_d'], e['t_d'], reference=True), e['ce_loss'], rtol=1e-5, atol=0)
    torch.testing.assert_close(0.001 * ce_from_probs(e['s_d'], e['t_d']), e['NOT_OFFICIAL_ce_loss_log_prob_form'],
                               rtol=1e-5, atol=0)


def test_dmm_properties():
    g = torch.Generator().manual_seed(0)
    l_t, l_s = 3 * torch.randn(2, 3, 3, 64, generator=g), 3 * torch.randn(2, 3, 3, 64, generator=g)
    ent = -(l_t.softmax(-1) * l_t.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(dmm_loss(l_t, l_t), ent)
    assert dmm_loss(l_s, l_t) > ent
    # the teacher is detached
    l_s.requires_grad_(); l_t.requires_grad_()
    dmm_loss(l_s, l_t).backward()
    assert l_t.grad is None and l_s.grad.abs().sum() > 0
    # stable for huge logits (squared distances of real latents are large)
    big = 1e4 * torch.randn(4, 1024, generator=g)
    assert torch.isfinite(dmm_loss(big, big.roll(1, 0))) and torch.isfinite(dmm_loss(big, big, reference=True))
    # the reference form is nearly flat: log softmax of numbers in [0,1] stays within 1 of -log K
    logk = torch.tensor(64.).log()
    for ls in (l_s.detach(), 100 * l_s.detach(), 0 * l_s.detach()):
        assert (dmm_loss(ls, l_t.detach(), reference=True) - logk).abs() < 1


# ---------------------------------------------------------------- negatives

def test_degrade_deterministic_and_range():
    x = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    kw = dict(p_blur=0.5, p_resize=0.5, p_noise=1.)
    a = degrade(x, torch.Generator().manual_seed(1), **kw)
    b = degrade(x, torch.Generator().manual_seed(1), **kw)
    c = degrade(x, torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    # global RNG untouched
    torch.manual_seed(0); r0 = torch.rand(1)
    torch.manual_seed(0); degrade(x, torch.Generator().manual_seed(1), **kw); r1 = torch.rand(1)
    assert torch.equal(r0, r1)


def test_degrade_noise_statistics():
    x = torch.full((64, 3, 32, 32), 0.5)  # mid grey: no clipping at sigma <= 30/255
    y = degrade(x, torch.Generator().manual_seed(0))  # defaults: noise only, sigma in [1, 30]
    std = (y - x).flatten(1).std(-1) * 255
    assert (std > 0.95).all() and (std < 30.6).all(), std
    assert std.max() - std.min() > 15  # sigma really varies per sample
    for s in (1., 10., 30.):
        y = degrade(x, torch.Generator().manual_seed(1), noise_sigma=(s, s))
        std = (y - x).flatten(1).std(-1) * 255  # grey noise: 1024 independent values, ~2.2% standard error
        assert ((std - s).abs() < 0.1 * s).all() and (std.mean() - s).abs() < 0.02 * s, (s, std)
    # grey noise: same on all channels; colour noise: not
    r = degrade(x, torch.Generator().manual_seed(2), p_grey=1.) - x
    assert torch.equal(r[:, 0], r[:, 1]) and torch.equal(r[:, 0], r[:, 2])
    r = degrade(x, torch.Generator().manual_seed(2), p_grey=0.) - x
    assert not torch.equal(r[:, 0], r[:, 1])
    # about half grey by default
    r = degrade(x, torch.Generator().manual_seed(3)) - x
    frac = (r[:, 0] == r[:, 1]).flatten(1).all(-1).float().mean()
    assert 0.25 < frac < 0.75
    # p_noise 0 and nothing else: identity
    assert torch.equal(degrade(x, torch.Generator(), p_noise=0.), x)


def test_degrade_blur_matches_direct_conv():
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    y = degrade(x, torch.Generator().manual_seed(0), p_blur=1., p_noise=0., blur_kernel=(5, 5), blur_sigma=(1., 1.))
    t = torch.arange(5.) - 2
    k1 = torch.exp(-t**2 / 2); k1 = k1 / k1.sum()
    k2 = (k1[:, None] * k1[None]).expand(3, 1, 5, 5)
    ref = F.conv2d(F.pad(x, (2, 2, 2, 2), mode='reflect'), k2, groups=3).clamp(0, 1)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-6)
    # kernels are zero outside their own size when padded to the largest one
    k = _gauss(torch.tensor([3, 11]), torch.tensor([2., 2.]), 11)
    assert (k[0, :4] == 0).all() and (k[0, 7:] == 0).all() and (k[1] > 0).all()
    torch.testing.assert_close(k.sum(-1), torch.ones(2))


def test_degrade_resize():
    x = torch.rand(6, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    y = degrade(x, torch.Generator().manual_seed(0), p_resize=1., p_noise=0., resize_down=(0.5, 0.6), p_up=0.)
    assert y.shape == x.shape and (y - x).abs().mean() > 1e-2  # really resampled
    # scale 1 -> resize and back is the identity for every mode
    y = degrade(x, torch.Generator().manual_seed(0), p_resize=1., p_noise=0., resize_up=(1, 1), p_up=1.)
    torch.testing.assert_close(y, x, rtol=0, atol=1e-5)
    # up and down, tiny images, all ops at once
    z = torch.rand(5, 3, 4, 4)
    w = degrade(z, torch.Generator().manual_seed(3), p_blur=1., p_resize=1., p_noise=1.)
    assert w.shape == z.shape and w.min() >= 0 and w.max() <= 1


def test_degrade_errors():
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match='odd'): degrade(x, torch.Generator(), blur_kernel=(4, 10))
    with pytest.raises(ValueError, match='noise_sigma'): degrade(x, torch.Generator(), noise_sigma=(30, 1))
    with pytest.raises(ValueError, match=r'\(b,c,H,W\)'): degrade(x[0], torch.Generator())


def test_make_negatives():
    lq = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    neg = make_negatives(lq, 4, torch.Generator().manual_seed(0))
    assert neg.shape == (4, 4, 3, 32, 32)
    assert torch.equal(neg, make_negatives(lq, 4, torch.Generator().manual_seed(0)))
    for i in range(4):  # every copy is a degraded version of its own sample
        d = (neg[i] - lq).flatten(1).abs().mean(-1)
        assert (d < 0.1).all() and (d > 0).all()
    assert not torch.equal(neg[0], neg[1])


# ---------------------------------------------------------------- end to end through dckd.vqgan (written last)

def test_end_to_end_vqgan(shared, losses_pt):
    "DCR and DMM through the tiny official VQGAN: losses and gradients w.r.t. the student images."
    from dckd.vqgan import VQGAN
    vq = load(shared, 'vqgan_tiny.pt')
    cfg = vq['config']
    m = VQGAN(cfg['embed_dim'], cfg['n_embed'], cfg['ddconfig'])
    m.load_state_dict(vq['state_dict'])
    m.eval().requires_grad_(False)
    e = losses_pt['end_to_end']

    # DCR: student, teacher and 5 negatives in one batch
    smp = e['contras_sample']
    s = smp[0].clone().requires_grad_()
    feats = m.get_feas(torch.cat([s, *smp[1:]]))
    assert [list(f.shape) for f in feats] == [[7 * 2, *sh[0][1:]] for sh in e['contras_latent_shapes']]
    loss = PAPER_WEIGHTS['dcr'] * dcr_loss(*unstack_feats(feats, b=s.shape[0]))[0]
    torch.testing.assert_close(loss, e['contras_loss'], rtol=1e-4, atol=0)
    loss.backward()
    g = e['grads']['contras_sample0']
    torch.testing.assert_close(s.grad, g, rtol=0, atol=1e-3 * g.abs().max().item())

    # DMM, official (reference) form and the corrected one
    s = e['ce_s_img'].clone().requires_grad_()
    l_s, l_t = m.code_logits(s), m.code_logits(e['ce_t_img'])
    assert l_s.shape == (2, 2, 2, cfg['n_embed'])
    loss = PAPER_WEIGHTS['dmm'] * dmm_loss(l_s, l_t, reference=True)
    torch.testing.assert_close(loss, e['ce_loss'], rtol=1e-4, atol=0)
    torch.testing.assert_close(PAPER_WEIGHTS['dmm'] * dmm_loss(l_s, l_t), e['NOT_OFFICIAL_ce_loss_log_prob_form'],
                               rtol=1e-4, atol=0)
    loss.backward()
    g = e['grads']['ce_s_img']
    torch.testing.assert_close(s.grad, g, rtol=0, atol=1e-3 * g.abs().max().item())

    # one pass for both: features(x, logits=True)
    feats2, logits = m.features(torch.cat([e['ce_s_img'], e['ce_t_img']]), logits=True)
    assert len(feats2) == 5
    torch.testing.assert_close(PAPER_WEIGHTS['dmm'] * dmm_loss(logits[:2], logits[2:], reference=True), e['ce_loss'],
                               rtol=1e-4, atol=0)

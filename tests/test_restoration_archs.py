"dckd.restoration_archs against the official NAFNet / Restormer / FFDNet fixtures and weights in ../shared, plus the paper configurations and build_net / resolve_arch."
import json
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from dckd.archs import ARCHS, build_net, check_arch, count_params, resolve_arch
from dckd.checkpoint import load_weights
from dckd.restoration_archs import (PAPER_NETS, RESTORATION_ARCHS, DnCNN, FFDNet, LayerNorm2d, LocalAvgPool2d, NAFNet,
                                    NAFNetLocal, Restormer)

TOL = dict(atol=1e-5, rtol=1e-5)  # fixtures/README.md: restoration_tiny.pt outputs


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads(); torch.set_num_threads(2)
    yield
    torch.set_num_threads(n)


def _load(p): return torch.load(p, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def tiny(shared): return _load(shared/'fixtures'/'restoration_tiny.pt')


@pytest.fixture(scope='module')
def ffd_ref(shared): return json.loads((shared/'fixtures'/'ffdnet_reference_psnr.json').read_text())


@pytest.fixture(scope='module')
def ffdnet(shared, ffd_ref):
    return load_weights(FFDNet(**ffd_ref['constructor_kwargs']), shared/'weights'/'FFDNet_color.pth').eval()


# NAFNet

def test_nafnet_batch_of_fixture_inputs(tiny):
    "a batch of 2 (the fixture input and its flip) gives the fixture output and the output of the flipped input"
    e = tiny['nafnet']
    net = NAFNet(**e['config']).eval()
    net.load_state_dict(e['state_dict'], strict=True)
    x = torch.cat([e['input'], e['input'].flip(-1)])
    with torch.no_grad():
        y = net(x)
        torch.testing.assert_close(y[:1], e['output'], **TOL)
        torch.testing.assert_close(y[1:], net(e['input'].flip(-1)), **TOL)
        torch.testing.assert_close(net(e['input_odd']), e['output_odd'], **TOL)


def test_nafnet_local_fixture(tiny):
    "NAFNetLocal loads NAFNet's state dict (no new keys) and reproduces the official local-pooling output"
    e = tiny['nafnet']
    net = build_net({'type': 'NAFNetLocal', **e['config'], 'train_size': e['local']['train_size']})
    assert not net.training
    net.load_state_dict(e['state_dict'], strict=True)
    with torch.no_grad(): torch.testing.assert_close(net(e['input']), e['local']['output'], **TOL)


def test_nafnet_local_equals_global_when_kernels_cover():
    "every pooling window at least as large as its feature map: local pooling is the global mean, the outputs are equal"
    torch.manual_seed(0)
    cfg = dict(width=8, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    g, l = NAFNet(**cfg).eval(), NAFNetLocal(**cfg, train_size=(1, 3, 16, 16))
    with torch.no_grad():
        for p in g.parameters(): p.add_(0.05 * torch.randn_like(p))   # beta/gamma off zero
    l.load_state_dict(g.state_dict())
    x = torch.rand(1, 3, 16, 16)   # kernels 24/12/6 at feature sizes 16/8/4
    with torch.no_grad(): assert torch.equal(l(x), g(x))


def test_local_pool_fast_imp_without_subsampling():
    "fast_imp on a prime-sized map (no subsampling, r=1) is the official shifted box mean: avg_pool of x[1:, 1:], replicate-padded"
    x = torch.randn(1, 2, 11, 13, dtype=torch.float64)
    out = LocalAvgPool2d((4, 5), fast_imp=True)(x)
    ref = F.avg_pool2d(x[:, :, 1:, 1:], (4, 5), stride=1)                     # (7, 8)
    ref = F.pad(ref, (2, 3, 2, 2), mode='replicate')
    torch.testing.assert_close(out, ref)
    c = torch.full((1, 1, 20, 30), 0.7)
    for fast in (False, True): torch.testing.assert_close(LocalAvgPool2d((6, 9), fast_imp=fast)(c), c)


def test_layernorm2d_gradient_matches_official_backward():
    "autograd through LayerNorm2d gives the gradient of NAFNet's hand-written LayerNormFunction.backward"
    torch.manual_seed(0)
    ln = LayerNorm2d(5)
    with torch.no_grad(): ln.weight.uniform_(0.5, 1.5); ln.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    ln = ln.double()
    g_out = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    ln(x).backward(g_out)
    eps = ln.eps
    mu = x.detach().mean(1, keepdim=True); var = (x.detach() - mu).pow(2).mean(1, keepdim=True)
    y = (x.detach() - mu) / (var + eps).sqrt()
    g = g_out * ln.weight.detach().view(1, 5, 1, 1)
    gx = 1. / torch.sqrt(var + eps) * (g - y * (g * y).mean(1, keepdim=True) - g.mean(1, keepdim=True))
    torch.testing.assert_close(x.grad, gx)
    torch.testing.assert_close(ln.weight.grad, (g_out * y).sum((0, 2, 3)))
    torch.testing.assert_close(ln.bias.grad, g_out.sum((0, 2, 3)))


# Restormer

@pytest.mark.parametrize('which', ['WithBias', 'BiasFree'])
def test_restormer_fixture(tiny, which):
    r = tiny['restormer']
    e = r if which == 'WithBias' else r['biasfree']
    assert e['config']['LayerNorm_type'] == which
    net = build_net({'type': 'Restormer', **e['config']}).eval()
    net.load_state_dict(e['state_dict'], strict=True)
    x = torch.cat([r['input'], r['input'].flip(-2)])
    with torch.no_grad():
        y = net(x)
        torch.testing.assert_close(y[:1], e['output'], **TOL)
        torch.testing.assert_close(y[1:], net(r['input'].flip(-2)), **TOL)


def test_restormer_student_trains():
    "the paper's Restormer student: one backward pass reaches every parameter"
    net = build_net({'type': 'restormer_student'}).train()
    net(torch.rand(1, 3, 16, 16)).abs().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# FFDNet and DnCNN

def test_ffdnet_load_keys(shared, ffd_ref):
    "the bare KAIR state dict loads strictly with the default key (params_ema -> params -> bare) and with key=None"
    w = shared/'weights'/'FFDNet_color.pth'
    for key in ('params_ema', None):
        net = load_weights(build_net({'type': 'ffdnet_color'}), w, key=key)
        assert {k: list(v.shape) for k, v in net.state_dict().items()} == ffd_ref['keys']
        assert list(net.state_dict()) == list(_load(w))
    assert count_params(net) == ffd_ref['params']


def test_ffdnet_fixture_batch_of_sigmas(shared, ffdnet):
    "one batch with a noise level per image; the constructor sigma for net(x)"
    fw = _load(shared/'fixtures'/'ffdnet_forward.pt')
    a, b = fw['sigma25'], fw['sigma50']
    with torch.no_grad():
        y = ffdnet(torch.cat([a['input'], b['input']]), torch.tensor([a['sigma'], b['sigma']]))
        torch.testing.assert_close(y, torch.cat([a['output'], b['output']]), atol=1e-5, rtol=0)
        torch.testing.assert_close(ffdnet(fw['odd']['input']), fw['odd']['output'], atol=1e-5, rtol=0)   # sigma 25 default
        assert ffdnet.sigma == 25 and fw['odd']['sigma'] == 25 / 255


def _psnr(a, b): return 20 * np.log10(255. / np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


@pytest.mark.parametrize('sigma', [15, 50])
def test_ffdnet_cbsd68_psnr_matches_official(shared, ffd_ref, ffdnet, sigma):
    "KAIR's test protocol on the first CBSD68 image reproduces the official per-image PSNR (and the noisy one)"
    name = '101085.png'
    img = np.asarray(Image.open(shared/'data'/'CBSD68'/name).convert('RGB'))
    np.random.seed(0)
    noisy = img.astype(np.float32) / 255. + np.random.normal(0, sigma / 255., img.shape)
    x = torch.from_numpy(np.ascontiguousarray(noisy)).permute(2, 0, 1).float()[None]
    with torch.no_grad(): y = ffdnet(x, sigma / 255.)
    out = np.uint8((y[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.).round())
    den, noi = ffd_ref['CBSD68'][str(sigma)]['images'][name]
    assert abs(_psnr(np.uint8((np.clip(noisy, 0, 1) * 255).round()), img) - noi) < 1e-6   # the same noise was drawn
    assert abs(_psnr(out, img) - den) < 1e-3


def test_dncnn_kair_layout():
    "KAIR's DnCNN: BatchNorm (momentum 0.9, eps 1e-4) after every body conv, flattened keys, residual output"
    net = DnCNN(in_nc=1, out_nc=1, nc=64, nb=17, act_mode='BR')
    convs = [k for k in net.state_dict() if k.endswith('weight') and net.state_dict()[k].ndim == 4]
    bns = [m for m in net.model if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(convs) == 17 and len(bns) == 15 and convs[:2] == ['model.0.weight', 'model.2.weight']
    assert all(b.momentum == 0.9 and b.eps == 1e-4 for b in bns)
    assert 'model.3.running_mean' in net.state_dict()
    assert [k for k in DnCNN(3, 3, 8, 4, 'R').state_dict() if k.endswith('weight')] == \
           ['model.0.weight', 'model.2.weight', 'model.4.weight', 'model.6.weight']
    with pytest.raises(ValueError, match='needs an activation'): DnCNN(act_mode='B')


# Paper configurations and the registry

def test_paper_teachers_match_official_keys(shared):
    keys = json.loads((shared/'fixtures'/'restoration_keys.json').read_text())
    for name, ref in (('nafnet_gopro_teacher', 'nafnet_teacher_gopro_width32'), ('restormer_teacher', 'restormer_teacher'),
                      ('nafnet_gopro_teacher_local', 'nafnet_teacher_gopro_width32')):
        with torch.device('meta'): net = build_net({'type': name})
        assert {k: list(v.shape) for k, v in net.state_dict().items()} == keys[ref]['keys'], name
        assert count_params(net) == keys[ref]['params'], name


@pytest.mark.parametrize('name,paper', [('nafnet_gopro_teacher', 17.1e6), ('nafnet_gopro_student', 2.7e6),
                                        ('restormer_teacher', 26.1e6), ('restormer_student', 3.8e6)])
def test_paper_param_counts(name, paper):
    with torch.device('meta'): n = count_params(build_net(PAPER_NETS[name]))
    assert abs(n / paper - 1) < 0.03, (name, n)


def test_nafnet_teacher_runs_on_any_size():
    "the 17.1M teacher pads to a multiple of 16 inside and crops; NAFNetLocal with the GoPro train size too"
    x = torch.rand(1, 3, 21, 35)
    with torch.no_grad():
        assert build_net({'type': 'nafnet_gopro_teacher'}).eval()(x).shape == x.shape
        net = build_net({'type': 'nafnet_gopro_teacher_local'})
        assert [b.sca[0].kernel_size for b in (net.encoders[0][0], net.middle_blks[0])] == [(384, 384), (24, 24)]


def test_build_net_names_and_overrides():
    assert isinstance(build_net({'type': 'Restormer_Student', 'LayerNorm_type': 'BiasFree'}), Restormer)
    cls, kw = check_arch({'type': 'restormer_student', 'LayerNorm_type': 'BiasFree'})
    assert cls is Restormer and kw['LayerNorm_type'] == 'BiasFree' and kw['dim'] == 24 and 'type' not in kw
    assert PAPER_NETS['restormer_student']['LayerNorm_type'] == 'WithBias'          # the preset is not changed
    for t in RESTORATION_ARCHS: assert check_arch({'type': t.upper(), **({'width': 8} if 'NAF' in t else {})})[0] is RESTORATION_ARCHS[t]
    with pytest.raises(ValueError, match='accepted types: SwinIR, PAN, RCAN, EDSR, NAFNet.*named configurations: nafnet_gopro_teacher'):
        build_net({'type': 'MPRNet'})
    with pytest.raises(TypeError, match=r"NAFNet: unknown argument\(s\) 'upscale'"):
        build_net({'type': 'nafnet_gopro_student', 'upscale': 2})
    assert set(ARCHS) == {'SwinIR', 'PAN', 'RCAN', 'EDSR'}   # the SR registry itself is unchanged


def test_resolve_arch_scale_only_where_taken():
    "SR networks get `upscale` (PAN `scale`) exactly as before; same-size networks and their named configurations get none"
    for t, k in (('SwinIR', 'upscale'), ('pan', 'scale'), ('RCAN', 'upscale'), ('edsr', 'upscale'), ('unknown', 'upscale')):
        assert resolve_arch({'type': t}, None, 3, 'student') == {'type': t, k: 3}
        assert resolve_arch({'type': t, k: 2}, None, 3, 'student') == {'type': t, k: 2}
    for t in (*RESTORATION_ARCHS, *PAPER_NETS):
        assert resolve_arch({'type': t}, None, 3, 'teacher.arch') == {'type': t}
    with torch.device('meta'): build_net(resolve_arch({'type': 'ffdnet_color'}, None, 2, 'teacher.arch'))

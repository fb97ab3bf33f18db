"dckd.archs against the official SwinIR / PAN fixtures and weights in ../shared, plus build_net errors and RCAN/EDSR shapes."
import json
import pytest
import torch
from dckd.archs import (SwinIR, PAN, RCAN, EDSR, ARCHS, SWINIR_M, DCKD_STUDENT, build_net, count_params, dckd_student,
                        shift_mask, relative_position_index)

TOL = dict(atol=1e-5, rtol=1e-5)  # fixtures/README.md: SwinIR and PAN outputs


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads(); torch.set_num_threads(2)
    with torch.no_grad(): yield
    torch.set_num_threads(n)


def _load(p): return torch.load(p, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def tiny(shared): return _load(shared/'fixtures'/'swinir_tiny_x2.pt')


@pytest.fixture(scope='module')
def tiny_net(tiny):
    net = SwinIR(**tiny['config']).eval()
    net.load_state_dict(tiny['state_dict'], strict=True)
    return net


# SwinIR

@pytest.mark.parametrize('case', ['', '_mult8', '_48', '_b2'])
def test_swinir_tiny_x2_outputs(tiny, tiny_net, case):
    "padded (20x28), multiple of 8, exactly img_size (stored attn_mask used), batch of 2"
    x, y = tiny['input' + case], tiny['output' + case]
    out = tiny_net(x)
    assert out.shape == y.shape
    torch.testing.assert_close(out, y, **TOL)


def test_swinir_tiny_x2_intermediates(tiny, tiny_net):
    it, net = tiny['intermediates_for_input'], tiny_net
    x0 = (net.pad(tiny['input']) - net.mean) * net.img_range
    torch.testing.assert_close(x0, it['conv_first_in'], **TOL)
    ff = net.forward_features(net.conv_first(x0))
    torch.testing.assert_close(ff, it['forward_features_out'], **TOL)
    torch.testing.assert_close(net.conv_after_body(ff), it['conv_after_body_out'], **TOL)


def test_swinir_main_test_style_padding(tiny, tiny_net):
    "main_test_swinir.py pads by flipping; fed its padded input, our forward reproduces its output (and differs from ours)"
    out = tiny_net(tiny['input_main_test_padded'])[..., :40, :56]
    torch.testing.assert_close(out, tiny['output_main_test_style'], **TOL)
    assert (tiny['output_main_test_style'] - tiny['output']).abs().max() > 1e-3


def test_swinir_buffers_match_official(tiny):
    "relative_position_index and the img_size attn_mask computed here equal the stored official buffers"
    fresh = SwinIR(**tiny['config']).state_dict()
    bufs = [k for k in tiny['state_dict'] if k.endswith(('relative_position_index', 'attn_mask'))]
    assert len(bufs) == 6
    for k in bufs: assert torch.equal(fresh[k], tiny['state_dict'][k]), k
    assert torch.equal(shift_mask(48, 48, 8, 4), tiny['state_dict']['layers.0.residual_group.blocks.1.attn_mask'])
    assert torch.equal(relative_position_index(8), tiny['state_dict']['layers.0.residual_group.blocks.0.attn.relative_position_index'])


@pytest.mark.parametrize('name', ['x2_pixelshuffledirect', 'x4_pixelshuffle'])
def test_swinir_tiny_variants(shared, name):
    e = _load(shared/'fixtures'/'swinir_tiny_variants.pt')[name]
    net = SwinIR(**e['config']).eval()
    net.load_state_dict(e['state_dict'], strict=True)
    cases = [c for c in ('', '_mult8') if 'input' + c in e]
    assert cases
    for c in cases: torch.testing.assert_close(net(e['input' + c]), e['output' + c], **TOL)


@pytest.fixture(scope='module')
def swinir_keys(shared): return json.loads((shared/'fixtures'/'swinir_keys.json').read_text())['configs']


@pytest.mark.parametrize('name', ['teacher_SwinIR-M_x2', 'teacher_SwinIR-M_x3', 'teacher_SwinIR-M_x4',
                                  'student_DCKD_network_g_x2'])
def test_swinir_keys(swinir_keys, name):
    c = swinir_keys[name]
    net = build_net({'type': 'SwinIR', **c['constructor_kwargs']})
    sd = net.state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == c['keys']
    assert sorted(k for k, _ in net.named_buffers()) == sorted(c['buffers'])
    assert {k: str(v.dtype).removeprefix('torch.') for k, v in sd.items() if v.dtype != torch.float32} == c['non_float32_dtypes']
    assert count_params(net) == c['num_parameters']
    assert 'mean' not in sd
    net.load_state_dict(sd, strict=True)  # the state dict round-trips strictly


def test_presets_match_released_configs(swinir_keys):
    "swinir_m / dckd_student use exactly the constructor arguments the key files were made with"
    for s in (2, 3, 4):
        assert {**SWINIR_M, 'upscale': s, 'type': None} == {**swinir_keys[f'teacher_SwinIR-M_x{s}']['constructor_kwargs'], 'type': None}
    assert {**DCKD_STUDENT, 'upscale': 2, 'type': None} == {**swinir_keys['student_DCKD_network_g_x2']['constructor_kwargs'], 'type': None}
    net = dckd_student(3)
    assert isinstance(net, SwinIR) and net.upscale == 3 and count_params(net) == 1_087_727 - 147_712 + 332_352  # x3: one conv 64->576 instead of 64->256


def test_swinir_student_trains_on_odd_sizes():
    "train mode (drop path active), an input that needs padding, gradients reach the first conv"
    torch.manual_seed(0)
    net = SwinIR(img_size=16, window_size=8, embed_dim=12, depths=[2, 2], num_heads=[2, 2], mlp_ratio=2,
                 upscale=2, upsampler='pixelshuffle').train()
    with torch.enable_grad():
        y = net(torch.rand(2, 3, 13, 19))
        assert y.shape == (2, 3, 26, 38)
        y.mean().backward()
    assert net.conv_first.weight.grad.abs().sum() > 0
    assert net.layers[1].residual_group.blocks[1].attn.relative_position_bias_table.grad.abs().sum() > 0


def test_swinir_bad_args():
    with pytest.raises(ValueError, match='upsampler'): SwinIR(upsampler='pixelshuffle2')
    with pytest.raises(ValueError, match='resi_connection'): SwinIR(resi_connection='2conv')
    with pytest.raises(ValueError, match='Supported scales'): SwinIR(window_size=8, upsampler='pixelshuffle', upscale=5)
    with pytest.raises(ValueError, match='multiple of window_size 7'): SwinIR()  # the official defaults cannot be built either
    with pytest.raises(ValueError, match='too small'): SwinIR(window_size=8, embed_dim=12, depths=[1], num_heads=[2])(torch.rand(1, 3, 4, 9))


# PAN

@pytest.fixture(scope='module')
def pan_keys(shared): return json.loads((shared/'fixtures'/'pan_keys.json').read_text())['models']


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_pan_weights_and_forward(shared, pan_keys, scale):
    meta = pan_keys[f'PANx{scale}_DF2K.pth']
    net = build_net({'type': 'PAN', **meta['constructor_kwargs']}).eval()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == meta['keys']
    assert count_params(net) == meta['num_parameters'] == {2: 261_403, 3: 261_403, 4: 272_419}[scale]
    sd = _load(shared/'weights'/f'PANx{scale}_DF2K.pth')
    net.load_state_dict(sd, strict=True)
    e = _load(shared/'fixtures'/'pan_forward.pt')[f'x{scale}']
    assert e['config'] == meta['constructor_kwargs']
    torch.testing.assert_close(net(e['input']), e['output'], **TOL)


# build_net, RCAN, EDSR

def test_build_net_errors():
    with pytest.raises(ValueError, match='accepted types: SwinIR, PAN, RCAN, EDSR'): build_net({'type': 'RRDBNet'})
    with pytest.raises(ValueError, match="needs a 'type'"): build_net({'upscale': 2})
    with pytest.raises(TypeError, match=r"SwinIR: unknown argument\(s\) 'embed_dims', 'windowsize'.*accepted arguments: img_size"):
        build_net({'type': 'SwinIR', 'embed_dims': 60, 'windowsize': 8})
    with pytest.raises(TypeError, match=r"missing required argument\(s\) 'num_in_ch', 'num_out_ch'"):
        build_net({'type': 'EDSR'})
    with pytest.raises(TypeError, match="unknown argument.*'scale'.*accepted arguments: num_in_ch, num_out_ch, num_feat"):
        build_net({'type': 'RCAN', 'num_in_ch': 3, 'num_out_ch': 3, 'scale': 2})


def test_build_net_case_insensitive_and_copies():
    cfg = {'type': 'swinir', 'img_size': 16, 'window_size': 8, 'embed_dim': 12, 'depths': [1], 'num_heads': [2]}
    assert isinstance(build_net(cfg), SwinIR) and cfg['type'] == 'swinir'  # cfg left untouched
    assert set(ARCHS) == {'SwinIR', 'PAN', 'RCAN', 'EDSR'}
    assert isinstance(build_net({'type': 'Edsr', 'num_in_ch': 3, 'num_out_ch': 3, 'num_block': 1}), EDSR)


@pytest.mark.parametrize('scale', [2, 3, 4])
@pytest.mark.parametrize('arch', ['RCAN', 'EDSR'])
def test_rcan_edsr_build_and_forward(arch, scale):
    net = build_net({'type': arch, 'num_in_ch': 3, 'num_out_ch': 3, 'upscale': scale}).eval()  # BasicSR defaults
    x = torch.rand(1, 3, 7, 9)
    y = net(x)
    assert y.shape == (1, 3, 7 * scale, 9 * scale) and torch.isfinite(y).all()
    sd = net.state_dict()
    assert 'mean' not in sd and all(v.dtype == torch.float32 for v in sd.values())
    ups = sorted({k.rsplit('.', 1)[0] for k in sd if k.startswith('upsample.')})
    assert ups == {2: ['upsample.0'], 3: ['upsample.0'], 4: ['upsample.0', 'upsample.2']}[scale]
    assert sd['upsample.0.weight'].shape[0] == (576 if scale == 3 else 256)
    n = count_params(net)
    if arch == 'EDSR': assert n == {2: 1_369_859, 3: 1_554_499, 4: 1_517_571}[scale]  # EDSR-M (BasicSR EDSR_Mx*)
    else: assert n == {2: 12_467_203, 3: 12_651_843, 4: 12_614_915}[scale]  # BasicSR default: 10 groups x 16 RCABs
    # (hand count: conv_first 1,792 + 10 x (16 x 74,436 + 36,928) + conv_after_body 36,928 + conv_last 1,731 + upsample)


def test_rcan_key_layout():
    sd = RCAN(3, 3, num_feat=16, num_group=2, num_block=3, squeeze_factor=4, upscale=2).state_dict()
    assert 'body.1.residual_group.2.rcab.3.attention.3.weight' in sd and 'body.1.conv.bias' in sd
    assert sd['body.0.residual_group.0.rcab.3.attention.1.weight'].shape == (4, 16, 1, 1)

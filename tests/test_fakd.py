"dckd.losses FAKD: spatial affinity, fakd_loss (against a loop reference and the FAKD paper code) and FeatureTap."
import math
import pytest
import torch
import torch.nn as nn

from dckd.losses import FeatureTap, fakd_loss, spatial_affinity


def randn(*shape, seed=0): return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def affinity_loop(f, eps=1e-7):
    "Reference: one position pair at a time, float64."
    f = f.double()
    b, c, h, w = f.shape
    v = [[f[i, :, p // w, p % w] for p in range(h * w)] for i in range(b)]
    v = [[x / (x.norm() + eps) for x in vs] for vs in v]
    return torch.tensor([[[float(vs[p] @ vs[q]) for q in range(h * w)] for p in range(h * w)] for vs in v],
                        dtype=torch.float64)


def affinity_paper(fm):
    "The FAKD reference code (spatial_similarity): sqrt of the summed squares plus 1e-7, then a bmm."
    fm = fm.view(fm.size(0), fm.size(1), -1)
    norm_fm = fm / (torch.sqrt(torch.sum(torch.pow(fm, 2), 1)).unsqueeze(1).expand(fm.shape) + 0.0000001)
    return norm_fm.transpose(1, 2).bmm(norm_fm)


# ---------------------------------------------------------------- spatial_affinity, fakd_loss

def test_hand_value():
    f_t = torch.tensor([[[[3., 0.]], [[4., 2.]]]])  # positions (3,4) -> (.6,.8) and (0,2) -> (0,1)
    f_s = torch.tensor([[[[1., 1.]], [[0., 1.]]]])  # positions (1,0) and (1,1)/sqrt2
    assert torch.allclose(spatial_affinity(f_t), torch.tensor([[[1., .8], [.8, 1.]]]))
    assert torch.allclose(fakd_loss([f_s], [f_t]), torch.tensor((0.8 - 1 / math.sqrt(2)) / 2))
    assert abs(fakd_loss([f_s], [f_t]).item() - 0.046447) < 1e-6


def test_affinity_matches_loop_and_paper_code():
    f = randn(2, 5, 2, 3)
    a = spatial_affinity(f)
    assert a.shape == (2, 6, 6) and a.dtype == torch.float32
    torch.testing.assert_close(a.double(), affinity_loop(f), rtol=0, atol=1e-6)
    torch.testing.assert_close(a, affinity_paper(f), rtol=0, atol=1e-6)
    torch.testing.assert_close(a, a.transpose(1, 2))
    torch.testing.assert_close(a.diagonal(dim1=1, dim2=2), torch.ones(2, 6))


def test_loss_is_sum_of_per_pair_means():
    fs = [randn(2, 4, 5, 5, seed=1), randn(2, 4, 2, 3, seed=2)]
    ft = [randn(2, 16, 5, 5, seed=3), randn(2, 7, 2, 3, seed=4)]  # channels differ, spatial sizes match
    ref = sum((affinity_loop(s) - affinity_loop(t)).abs().mean() for s, t in zip(fs, ft))
    assert abs(fakd_loss(fs, ft).item() - ref.item()) < 1e-6


def test_zero_and_scale_invariance():
    f = randn(3, 6, 4, 4)
    assert fakd_loss([f], [f]).item() == 0
    scale = 0.05 + 20 * torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert fakd_loss([f * scale], [f]).item() < 1e-6
    assert fakd_loss([-f], [f]).item() == 0        # A is quadratic in F: a global sign flip does not show
    assert fakd_loss([randn(3, 6, 4, 4, seed=5)], [f]).item() > 0.1


def test_float32_in_low_precision_and_autocast():
    f = randn(2, 8, 4, 4)
    assert fakd_loss([f.half()], [f.bfloat16()]).dtype == torch.float32
    assert fakd_loss([f.double()], [f.double()]).dtype == torch.float32
    with torch.autocast('cpu', dtype=torch.bfloat16):
        a = spatial_affinity(f)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, spatial_affinity(f))


def test_zero_position_finite():
    f = randn(1, 4, 3, 3); f[:, :, 1, 1] = 0                 # an all-zero channel vector (e.g. after a ReLU)
    f.requires_grad_()
    loss = fakd_loss([f], [randn(1, 4, 3, 3, seed=1)])
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(f.grad).all()
    assert spatial_affinity(f.detach())[0, 4].abs().max() == 0


def test_errors_name_the_shapes():
    s, t = randn(2, 8, 6, 6), randn(2, 16, 3, 3)
    with pytest.raises(ValueError, match=r'pair 1: student \(2, 8, 6, 6\) and teacher \(2, 16, 3, 3\)'):
        fakd_loss([s, s], [s, t])
    with pytest.raises(ValueError, match=r'pair 0: student \(2, 8, 6, 6\) and teacher \(3, 8, 6, 6\)'):
        fakd_loss([s], [randn(3, 8, 6, 6)])                  # batch sizes must match too
    with pytest.raises(ValueError, match=r'2 student and 1 teacher'):
        fakd_loss([s, s], [s])
    with pytest.raises(ValueError, match='no feature pairs'):
        fakd_loss([], [])
    with pytest.raises(ValueError, match=r'student features have shape \(2, 36, 8\)'):
        fakd_loss([s.flatten(2).transpose(1, 2)], [s])
    with pytest.raises(ValueError, match=r'got shape \(8, 6, 6\)'):
        spatial_affinity(s[0])


def test_teacher_not_detached():
    s, t = randn(2, 4, 3, 3).requires_grad_(), randn(2, 8, 3, 3, seed=1).requires_grad_()
    fakd_loss([s], [t]).backward()
    assert t.grad is not None and t.grad.abs().sum() > 0     # the caller must detach the teacher
    s.grad = None
    t2 = t.detach().requires_grad_()
    fakd_loss([s], [t2.detach()]).backward()
    assert t2.grad is None and s.grad.abs().sum() > 0


# ---------------------------------------------------------------- FeatureTap

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1))
        self.lstm = nn.LSTM(5, 7, batch_first=True)            # returns (output, (h, c))
        self.unused = nn.Conv2d(5, 5, 1)

    def forward(self, x):
        f = self.body(self.conv(x))
        self.lstm(f.flatten(2).transpose(1, 2))
        return f


def test_tap_order_shapes_and_tuples():
    net, x = Net(), randn(2, 3, 4, 4)
    with FeatureTap(net, ['body.2', 'conv', 'lstm', '']) as tap:
        assert tap.feats == []
        out = net(x)
    f = tap.feats                                            # kept after the hooks are removed
    assert [tuple(t.shape) for t in f] == [(2, 5, 4, 4), (2, 4, 4, 4), (2, 16, 7), (2, 5, 4, 4)]
    assert f[3] is out and f[0].requires_grad               # graph kept: the student can learn through it
    net(randn(1, 3, 4, 4)); assert f[0].shape[0] == 2 and tap.feats[0].shape[0] == 2  # removed: no more records


def test_tap_replaced_each_forward_and_clear():
    net = Net()
    tap = FeatureTap(net, 'conv')                             # one name as a plain string
    net(randn(2, 3, 4, 4)); assert tap.feats[0].shape == (2, 4, 4, 4)
    net(randn(1, 3, 6, 6)); assert [tuple(t.shape) for t in tap.feats] == [(1, 4, 6, 6)]
    tap.clear(); assert tap.feats == []
    tap.remove(); tap.remove()                                # idempotent
    assert len(net.conv._forward_hooks) == 0 and len(net._forward_pre_hooks) == 0


def test_tap_module_that_did_not_run():
    net = Net()
    tap = FeatureTap(net, ['conv', 'unused'])
    net(randn(1, 3, 4, 4))
    with pytest.raises(RuntimeError, match='unused did not run'):
        tap.feats
    tap.remove()


def test_tap_unknown_name_suggests_close_matches():
    net = Net()
    with pytest.raises(ValueError, match=r"no module named 'body.3'; close matches: body.2, body.1, body.0"):
        FeatureTap(net, ['conv', 'body.3'])
    with pytest.raises(ValueError, match=r"no module named 'decoder'; top-level modules: conv, body, lstm, unused"):
        FeatureTap(net, ['decoder'])
    assert len(net.conv._forward_hooks) == 0 and len(net._forward_pre_hooks) == 0  # nothing registered on failure
    with pytest.raises(ValueError, match='no module names'):
        FeatureTap(net, [])


def test_tap_swinir_tokens_refused_by_loss():
    from dckd.archs import build_net
    net = build_net(dict(type='SwinIR', img_size=8, window_size=4, embed_dim=12, depths=[1, 1], num_heads=[2, 2],
                         mlp_ratio=2, upsampler='pixelshuffledirect', upscale=2)).eval()
    with FeatureTap(net, ['layers.0', 'layers.0.conv', 'conv_after_body']) as tap, torch.no_grad():
        net(randn(1, 3, 8, 8))
    tok, m0, m1 = tap.feats
    assert tok.shape == (1, 64, 12) and m0.shape == m1.shape == (1, 12, 8, 8)
    assert fakd_loss([m0], [m1]).item() >= 0
    with pytest.raises(ValueError, match=r'\(1, 64, 12\)'):
        fakd_loss([m0], [tok])

#!/usr/bin/env python
"""Complexity of the dckd networks: parameters, multiply-accumulates and CPU latency.

    python benchmarks/complexity.py            # full table (a minute or two on 2 threads)
    python benchmarks/complexity.py --quick    # smoke run: one latency run on a 32x32 input
    python benchmarks/complexity.py --threads 4 --runs 10 --latency-size 96
    python benchmarks/complexity.py --task denoise   # the denoising study's teacher and student (256x256 input)

MACs vs FLOPs: one multiply-accumulate (MAC) is one multiplication plus one addition, i.e. about 2 FLOPs.
The SR literature's "FLOPs" / "Multi-Adds" (EDSR, RCAN, SwinIR's `flops()`, PAN) are MACs; this table reports
GMACs = 1e9 MACs. Counted: every Conv2d (k_h * k_w * C_in/groups MACs per output element), every Linear
(in_features per output element) and the two matmuls of SwinIR's window attention, q @ k^T and attn @ v, each
B*nW * heads * N * N * head_dim MACs (N = window_size^2 tokens per window). Not counted: bias adds, activations,
LayerNorm, softmax, pixel attention products, interpolation (all O(elements), < 1-2 % here).
MACs are for the lightweight-SR convention: a 1280x720 output, i.e. a 640x360 LR input for x2 (320x180 for x4);
they are counted on the `meta` device (shapes only), so even RCAN's ~3.5 TMACs cost nothing to count.
Latency: median wall time of `--runs` forward passes on a smaller LR input, torch.inference_mode, float32 CPU,
`torch.set_num_threads(--threads)`, after one warm-up pass.
"""
from __future__ import annotations
import argparse, copy, statistics, time
import torch
from torch import nn

__all__ = ['count_macs', 'benchmark_models', 'main']


def _is_window_attention(m:nn.Module)->bool:
    return type(m).__name__ == 'WindowAttention' or (hasattr(m, 'num_heads') and hasattr(m, 'window_size') and hasattr(m, 'qkv'))


def count_macs(model:nn.Module, # network (not modified: hooks are removed afterwards)
               x:torch.Tensor,  # an input; on the `meta` device only shapes are computed
              )->dict:          # MACs by kind: conv, linear, attn, total
    "Multiply-accumulates of one forward pass, counted with forward hooks."
    macs = dict(conv=0, linear=0, attn=0)
    def conv(m, i, o): macs['conv'] += o.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
    def linear(m, i, o): macs['linear'] += o.numel() * m.in_features
    def attn(m, i, o):  # i[0]: (B*nW, N, C) windows; q@k^T and attn@v each B*nW*heads*N*N*head_dim
        b, n, c = i[0].shape
        macs['attn'] += 2 * b * n * n * c
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d): hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear): hooks.append(m.register_forward_hook(linear))
        if _is_window_attention(m): hooks.append(m.register_forward_hook(attn))
    try:
        with torch.inference_mode(): model(x)
    finally:
        for h in hooks: h.remove()
    macs['total'] = sum(macs.values())
    return macs


def _models(scale:int=2)->dict:
    from dckd.archs import PAN, RCAN, EDSR, SwinIR, swinir_m, dckd_student
    return {
        'SwinIR-M (teacher)': lambda: swinir_m(scale),
        'DCKD student (SwinIR e60, 4x6)': lambda: dckd_student(scale),
        'light SwinIR (e32, [4,4], direct)': lambda: SwinIR(img_size=64, embed_dim=32, depths=[4, 4], num_heads=[4, 4], window_size=8,
                                                            mlp_ratio=2, upsampler='pixelshuffledirect', upscale=scale),
        'PAN': lambda: PAN(scale=scale),
        'EDSR baseline (64f, 16b)': lambda: EDSR(3, 3, num_feat=64, num_block=16, upscale=scale),
        'RCAN (10g x 20b)': lambda: RCAN(3, 3, num_feat=64, num_group=10, num_block=20, upscale=scale),
    }


# the denoising study (nbs/11a_study_denoise.ipynb, profiles/denoise_ffdnet.sh): same-size networks
DENOISE_STUDENT = dict(type='NAFNet', img_channel=3, width=8, middle_blk_num=1, enc_blk_nums=[1, 1, 1], dec_blk_nums=[1, 1, 1])

def _denoise_models()->dict:
    from dckd.archs import build_net
    return {
        'FFDNet colour (teacher, sigma 25)': lambda: build_net({'type': 'ffdnet_color', 'sigma': 25}),
        'NAFNet w8 1-1-1/1 (study student)': lambda: build_net(DENOISE_STUDENT),
        'DnCNN 32x8 (thin DnCNN)': lambda: build_net(dict(type='DnCNN', in_nc=3, out_nc=3, nc=32, nb=8, act_mode='R')),
    }


def _latency(model:nn.Module, size:int, runs:int)->float:
    "Median seconds of `runs` forward passes on a (1,3,size,size) input, after one warm-up."
    x = torch.rand(1, 3, size, size)
    ts = []
    with torch.inference_mode():
        model(x)
        for _ in range(runs):
            t = time.perf_counter(); model(x); ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def benchmark_models(scale:int=2, latency_size:int=64, runs:int=5, names:list|None=None, task:str='sr')->list[dict]:
    "One row per model: params, GMACs (SR: 1280x720 output; denoise: a 256x256 image), median CPU latency."
    from dckd.archs import count_params
    if task == 'denoise': scale, models = 1, _denoise_models()
    else: models = _models(scale)
    lr = (256, 256) if task == 'denoise' else (720 // scale, 1280 // scale)
    rows = []
    for name, make in models.items():
        if names and not any(n.lower() in name.lower() for n in names): continue
        net = make().eval()
        macs = count_macs(copy.deepcopy(net).to('meta'), torch.empty(1, 3, *lr, device='meta'))
        lat = _latency(net, latency_size, runs) if runs > 0 else float('nan')
        rows.append(dict(model=name, scale=scale, params=count_params(net), lr=lr, latency_size=latency_size, runs=runs,
                         latency_ms=lat * 1e3, **{f'gmacs_{k}': v / 1e9 for k, v in macs.items()}))
        print(f'  {name}: done', flush=True)
    return rows


def _table(rows:list[dict], threads:int)->str:
    lr = rows[0]['lr']
    size = (f"{lr[1]}x{lr[0]} input" if rows[0]['scale'] == 1 else
            f"{lr[1]}x{lr[0]} LR -> {lr[1]*rows[0]['scale']}x{lr[0]*rows[0]['scale']}")
    head = (f"| model | x | params | GMACs conv | GMACs linear | GMACs attn | **GMACs** ({size}) | CPU ms ({rows[0]['latency_size']}^2 LR, "
            f"median of {rows[0]['runs']}, {threads} threads) |")
    lines = [head, '|' + ' --- |' * 8]
    for r in rows:
        p = r['params']
        ps = f'{p/1e6:.2f}M' if p >= 1e6 else f'{p/1e3:.0f}K'
        lines.append(f"| {r['model']} | {r['scale']} | {ps} | {r['gmacs_conv']:.1f} | {r['gmacs_linear']:.1f} | "
                     f"{r['gmacs_attn']:.1f} | **{r['gmacs_total']:.1f}** | {r['latency_ms']:.0f} |")
    return '\n'.join(lines)


def main(argv:list[str]|None=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--scale', type=int, default=2, help='upscaling factor (default 2)')
    p.add_argument('--threads', type=int, default=2, help='torch.set_num_threads for the latency (default 2)')
    p.add_argument('--runs', type=int, default=5, help='timed runs per model (default 5; median reported)')
    p.add_argument('--latency-size', type=int, default=64, help='LR side of the latency input (default 64)')
    p.add_argument('--only', nargs='*', default=None, help='substrings of model names to keep')
    p.add_argument('--quick', action='store_true', help='smoke run: 1 timed run on a 32x32 input')
    p.add_argument('--task', choices=['sr', 'denoise'], default='sr', help="sr: the SR networks; denoise: the denoising study's")
    a = p.parse_args(argv)
    if a.quick: a.runs, a.latency_size = 1, 32
    torch.set_num_threads(a.threads)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; GMACs = 1e9 multiply-accumulates (~2 FLOPs each)')
    rows = benchmark_models(a.scale, a.latency_size, a.runs, a.only, a.task)
    print(_table(rows, a.threads))
    return rows


if __name__ == '__main__': main()

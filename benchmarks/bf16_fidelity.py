"""How much bf16 changes each frozen pass of a DCKD step, on this CPU (the evidence behind `frozen_bf16`).

For each frozen network the trainer runs without gradients, the same input goes through float32 and bf16 autocast:

  teacher / history  image-to-image networks: PSNR of the bf16 output against the float32 output, and (for a real
                     pretrained teacher, PAN x2 from ../shared/weights when present) the Y-PSNR on Set5 both ways
  VQGAN features     mean |f_bf16 - f_fp32| / mean |f_fp32| per level, and the largest change of a code logit
                     relative to the logits' spread, with the logits computed from bf16 latents

plus the time of each pass both ways (median of 5, `torch.set_num_threads(2)`). Random-init networks of the
step-cost configs A and B (benchmarks/step_cost.py) stand in where no weights exist here.

Usage: python benchmarks/bf16_fidelity.py [--shared ../shared]
"""
from __future__ import annotations
import argparse, statistics, sys, time, warnings
from pathlib import Path
import torch

sys.path.insert(0, str(Path(__file__).parent))
from step_cost import CONFIGS


def med_time(f, n=5):
    f()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def both(f):
    "(float32 result, bf16 result, float32 s, bf16 s) of a no-grad call."
    with torch.no_grad():
        a = f()
        with torch.autocast('cpu', dtype=torch.bfloat16): b = f()
        ta = med_time(f)
        with torch.autocast('cpu', dtype=torch.bfloat16): tb = med_time(f)
    return a, b, ta, tb


def psnr(a, b): return float(-10 * torch.log10(((a.float() - b.float()) ** 2).mean()))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--shared', default=str(Path(__file__).resolve().parents[1].parent / 'shared'))
    a = p.parse_args(argv)
    torch.set_num_threads(2)
    warnings.simplefilter('ignore')
    from dckd.archs import build_net
    from dckd.vqgan import VQGAN
    from dckd.distill import cpu_bf16
    print(f'# bf16 fidelity: torch {torch.__version__}, native CPU bf16: {cpu_bf16()}')
    if not cpu_bf16(): print('# this CPU emulates bf16: the trainer keeps float32 here (frozen_bf16=None)')
    shared = Path(a.shared)
    pan = shared / 'weights' / 'PANx2_DF2K.pth'
    if pan.is_file():
        from dckd.data import imread, img2tensor
        from dckd.metrics import calculate_psnr
        from dckd.data import tensor2img
        T = build_net(dict(type='PAN', in_nc=3, out_nc=3, nf=40, unf=24, nb=16, scale=2)).eval()
        T.load_state_dict(torch.load(pan, map_location='cpu', weights_only=True))
        print('\n## pretrained PAN x2 teacher on Set5 (Y-PSNR, border 2)')
        print(f"{'image':<12}{'fp32 dB':>9}{'bf16 dB':>9}{'bf16 vs fp32 (RGB) dB':>24}")
        for hr_p in sorted((shared / 'data' / 'Set5' / 'HR').glob('*.png')):
            x = img2tensor(imread(shared / 'data' / 'Set5' / 'LR_bicubic' / 'X2' / f'{hr_p.stem}x2.png'))[None]
            hr = imread(hr_p)
            o32, o16, _, _ = both(lambda: T(x))
            o32, o16 = o32.clamp(0, 1), o16.float().clamp(0, 1)
            h, w = o32.shape[-2:]
            u8 = lambda im: (im * 255).round()   # the protocol: rounded to 8 bits first
            f = lambda o: calculate_psnr(u8(tensor2img(o)), u8(hr[:h, :w]), crop_border=2, test_y_channel=True)
            print(f'{hr_p.stem:<12}{f(o32):>9.3f}{f(o16):>9.3f}{psnr(o32, o16):>24.1f}')
    else: print(f'# {pan} not found: no pretrained-teacher rows')
    print('\n## random-init networks of the step-cost configs (s: median of 5 no-grad calls)')
    print(f"{'cfg':<4}{'pass':<22}{'fp32 s':>8}{'bf16 s':>8}  fidelity")
    g = torch.Generator().manual_seed(0)
    for cn, c in CONFIGS.items():
        b, h = c['batch'], c['gt_size'] // 2
        torch.manual_seed(0)
        T = build_net(dict(c['teacher'])).eval().requires_grad_(False)
        H = build_net(dict(c['student'])).eval().requires_grad_(False)
        V = VQGAN(**c['vqgan']).eval().requires_grad_(False)
        x, xn = torch.rand(b, 3, h, h, generator=g), torch.rand(5 * b, 3, h, h, generator=g)
        y = torch.rand(b, 3, 2 * h, 2 * h, generator=g)
        for name, net, inp in (('teacher', T, x), ('history (5 negatives)', H, xn)):
            o32, o16, t32, t16 = both(lambda: net(inp))
            print(f'{cn:<4}{name:<22}{t32:>8.3f}{t16:>8.3f}  output PSNR bf16 vs fp32 {psnr(o32, o16):.1f} dB')
        (f32, l32), (f16, l16), t32, t16 = both(lambda: V.features(y))
        rel = ', '.join(f'{float((u.float() - v).abs().mean() / v.abs().mean()):.2%}' for u, v in zip(f16, f32))
        dl = float((l16.float() - l32).abs().max() / l32.std())
        print(f'{cn:<4}{"VQGAN features+logits":<22}{t32:>8.3f}{t16:>8.3f}  feature error per level {rel}; '
              f'max logit change {dl:.3f} x their std')


if __name__ == '__main__': main()

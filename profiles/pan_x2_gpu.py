"""The PAN x2 profile's variants with a bigger budget on one GPU: several (variant, seed) runs at once.

The CPU profile (profiles/pan_x2.sh) leaves every run's configuration in `results/ablation/<variant>_s<seed>/
config.yaml`. This script takes those configurations as they are (same teacher, compact VQ, student, data, loss
weights and schedule shape), multiplies the iteration budget and every iteration-valued key by `--factor`, and
trains them on the GPU. The student networks are tiny, so one run leaves the GPU mostly idle waiting for kernel
launches; the runs go as concurrent processes. Each run's EMA student is then scored on Set5 with its own LR files
(Y channel, border = scale), as the evaluate stage does.

    # on the GPU machine, from a folder holding results/{prepare,teacher,vqgan,ablation} of the CPU profile and Set5/
    python profiles/pan_x2_gpu.py --root _gpu --set5 _gpu/Set5 --variants kd,dckd --seeds 0,1,2 --factor 10 --out gpu_runs

Rows are printed and written to `<out>/gpu_rows.json`, each marked with the device it ran on.
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ITER_KEYS = ('iters', 'history_period', 'ckpt_every', 'log_every')   # scalar iteration counts
ITER_LISTS = ('milestones', 'history_steps')


def scaled_config(cfg:dict, factor:float, out_dir:str, device:str='cuda')->dict:
    "The same run with `factor` x the iterations (and every iteration-valued key), on `device`."
    c = dict(cfg)
    for k in ITER_KEYS:
        if c.get(k): c[k] = max(1, round(int(c[k]) * factor))
    for k in ITER_LISTS:
        if c.get(k) is not None: c[k] = [max(1, round(int(v) * factor)) for v in c[k]]
    c.update(out_dir=out_dir, device=device, val_every=0, resume=False, progress=False, num_workers=2)
    return c


def child(cfg_path:str, set5:str)->dict:
    import torch, yaml
    from dckd.distill import train
    from dckd.pipeline import load_run_net, evaluate_net
    cfg = yaml.safe_load(Path(cfg_path).read_text())
    t0 = time.time()
    res = train(cfg)
    wall = time.time() - t0
    net = load_run_net(cfg['out_dir']).to(cfg['device'])
    ev = evaluate_net(net, set5, cfg['scale'])
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'
    return dict(iters=res['iter'], train_s=round(wall, 1), psnr=ev['psnr'], ssim=ev['ssim'], device=dev,
                per_image=ev['per_image'])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default='.', help='folder with results/ of the CPU profile (the configs use relative paths)')
    p.add_argument('--set5', required=True, help='Set5 folder (HR/ and LR_bicubic/X2/)')
    p.add_argument('--variants', default='kd,dckd')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--factor', type=float, default=10)
    p.add_argument('--out', default='gpu_runs', help='run folders and gpu_rows.json (relative to --root)')
    p.add_argument('--device', default='cuda', help="'cuda' (or 'cpu' for a smoke test with --factor 0.01)")
    p.add_argument('--deadline', type=float, default=540, help='seconds; runs still going then are stopped and reported')
    p.add_argument('--child', nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print('RESULT ' + json.dumps(child(*a.child)), flush=True); return
    import yaml
    set5 = str(Path(a.set5).resolve())
    os.chdir(a.root)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    procs, t0 = {}, time.time()
    for v in a.variants.split(','):
        for s in a.seeds.split(','):
            name = f'{v}_s{s}'
            src = Path('results/ablation')/name/'config.yaml'
            if not src.is_file(): sys.exit(f'{src}: no such run configuration (run profiles/pan_x2.sh first)')
            cfg = scaled_config(yaml.safe_load(src.read_text()), a.factor, str(out/name), a.device)
            (out/f'{name}.yaml').write_text(yaml.safe_dump(cfg, sort_keys=False))
            log = open(out/f'{name}.log', 'w')
            procs[name] = (subprocess.Popen([sys.executable, os.path.abspath(__file__), '--child', str(out/f'{name}.yaml'), set5],
                                            stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS='2')), log)
    rows = {}
    for name, (pr, log) in procs.items():
        try: pr.wait(timeout=max(1, a.deadline - (time.time() - t0)))
        except subprocess.TimeoutExpired: pr.kill(); pr.wait()
        log.close()
        text = (out/f'{name}.log').read_text()
        res = [l for l in text.splitlines() if l.startswith('RESULT ')]
        rows[name] = json.loads(res[-1][7:]) if res else dict(error=f'exit {pr.returncode}: ' + text[-1500:])
    total = time.time() - t0
    (out/'gpu_rows.json').write_text(json.dumps(dict(factor=a.factor, wall_s=round(total, 1), runs=rows), indent=1))
    print(f'# {len(rows)} runs at {a.factor}x budget, concurrently, {total:.0f} s wall')
    for name, r in rows.items():
        if 'error' in r: print(f'{name:<10} FAILED {r["error"][-600:]}')
        else: print(f'{name:<10} {r["iters"]:>6} it  {r["train_s"]:>7.1f} s  Set5 {r["psnr"]:.3f} dB / {r["ssim"]:.4f}  ({r["device"]})')


if __name__ == '__main__': main()

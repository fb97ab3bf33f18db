"""The PAN x2 profile's variants with a bigger budget on one GPU: several (variant, seed) runs at once.

The CPU profile (profiles/pan_x2.sh) leaves the full DCKD run in `results/ablation/dckd_s0` (its configuration read by
`dckd.artifacts.run_config`; the ablation runs differ from it only in their loss switches, seed and folder). This script takes that
configuration as it is (same teacher, compact VQ, student, data, loss weights and schedule shape), sets each
variant's switches and seed, multiplies the iteration budget and every iteration-valued key by `--factor`, and
trains them on the GPU. The student networks are tiny, so one run leaves the GPU mostly idle waiting for kernel
launches; the runs go as concurrent processes. Each run's EMA student is then scored on Set5 with its own LR files
(Y channel, border = scale), as the evaluate stage does.

    # on the GPU machine, from a folder holding results/{prepare,teacher,vqgan} and the run folder results/ablation/dckd_s0
    python profiles/pan_x2_gpu.py --root _gpu --set5 _gpu/Set5 --variants kd,dckd --seeds 0,1,2 --factor 10 --out gpu_runs

Rows are printed and written to `<out>/gpu_rows.json`, each marked with the device it ran on.
`--summarize A.json [B.json ...]` turns such files into one markdown table (mean ± std over seeds, PSNR gains over
`kd` paired by seed), labelling the runs of each file after it (`--labels`) and listing the iterations reached; it refuses runs that stopped short of their planned iterations or
at different counts. A run stopped by `--deadline` saves a checkpoint: the same command again resumes it (the run
folders keep their configuration), so a budget larger than one call finishes over several calls. The VQGAN features
are float32 on the GPU too (the trainer's `feat_bf16=False`), as on the CPU.
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
    c.update(out_dir=out_dir, device=device, val_every=0, resume=True, progress=False, num_workers=0)   # a later call resumes
    return c


class _OutOfTime(Exception): pass


def child(cfg_path:str, set5:str, stop_at:float)->dict:
    "Train one run; at the wall-clock time `stop_at` stop early, save, and score what there is (marked partial)."
    import torch, yaml
    from dckd.distill import Distiller
    from dckd.pipeline import load_run_net, evaluate_net
    cfg = yaml.safe_load(Path(cfg_path).read_text())   # (the dataset keeps the decoded images in memory)
    t0 = time.time()
    d = Distiller(cfg)
    def guard(it, logs):
        if time.time() > stop_at: raise _OutOfTime
    try: res = d.fit(guard)
    except _OutOfTime:
        d.save(); res = dict(iter=d.it)
    finally: d.close()
    wall = time.time() - t0
    net = load_run_net(cfg['out_dir']).to(cfg['device'])
    ev = evaluate_net(net, set5, cfg['scale'])
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'
    return dict(iters=res['iter'], planned=cfg['iters'], train_s=round(wall, 1), psnr=ev['psnr'], ssim=ev['ssim'], device=dev,
                per_image=ev['per_image'])


def summarize(files:list, labels:list|None=None)->str:
    "Markdown: the rows of several gpu_rows.json files as one ablation table (gains over kd), with the iterations."
    from dckd.plots import ablation_table, format_table
    rows, notes = [], []
    runs = {(f, n): r for f in files for n, r in json.loads(Path(f).read_text())['runs'].items() if 'error' not in r}
    short = [f'{n} ({f}): {r["iters"]}/{r["planned"]}' for (f, n), r in runs.items() if r['iters'] != r['planned']]
    if short or len({r['iters'] for r in runs.values()}) > 1:
        sys.exit('refusing to compare runs stopped at different iteration counts (rerun the same command: unfinished runs '
                 'resume from their checkpoints):\n  ' + '\n  '.join(short or [f'{n} ({f}): {r["iters"]}' for (f, n), r in runs.items()]))
    for i, f in enumerate(files):
        d = json.loads(Path(f).read_text())
        lab = labels[i] if labels else ''
        for name, r in d['runs'].items():
            if 'error' in r: notes.append(f'{name} ({f}): failed'); continue
            v, seed = name.rsplit('_s', 1)
            rows.append(dict(variant=v + (f' {lab}' if lab and v != 'kd' else ''), seed=int(seed), psnr=r['psnr'], ssim=r['ssim']))
            notes.append(f"{v}{f' {lab}' if lab and v != 'kd' else ''} seed {seed}: {r['iters']}/{r['planned']} iterations, "
                         f"{r['train_s']:.0f} s, {r['device']}")
    tab = format_table(ablation_table(rows, ref='kd', kd='kd'))
    tab = ''.join(l.rsplit('|', 2)[0] + '|\n' for l in tab.splitlines())   # the two gain columns are the same here
    return tab + '\n' + '\n'.join(f'- {n}' for n in notes) + '\n'


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default='.', help='folder with results/ of the CPU profile (the configs use relative paths)')
    p.add_argument('--set5', help='Set5 folder (HR/ and LR_bicubic/X2/)')
    p.add_argument('--variants', default='kd,dckd')
    p.add_argument('--seeds', default='0,1,2')
    p.add_argument('--factor', type=float, default=10)
    p.add_argument('--out', default='gpu_runs', help='run folders and gpu_rows.json (relative to --root)')
    p.add_argument('--device', default='cuda', help="'cuda' (or 'cpu' for a smoke test with --factor 0.01)")
    p.add_argument('--deadline', type=float, default=540,
                   help='seconds; at 85%% of it unfinished runs stop, save and are scored as partial; at 100%% they are killed')
    p.add_argument('--summarize', nargs='+', metavar='JSON', help='print a markdown table of gpu_rows.json files')
    p.add_argument('--labels', help='comma-separated labels of the --summarize files (for variants other than kd)')
    p.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.summarize:
        print(summarize(a.summarize, a.labels.split(',') if a.labels else None), end=''); return
    if a.child:
        print('RESULT ' + json.dumps(child(a.child[0], a.child[1], float(a.child[2]))), flush=True); return
    if not a.set5: p.error('--set5 is required')
    import yaml
    from dckd.pipeline import variant_switches
    from dckd.artifacts import run_config
    set5 = str(Path(a.set5).resolve())
    os.chdir(a.root)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    procs, t0 = {}, time.time()
    for v in a.variants.split(','):
        for s in a.seeds.split(','):
            name = f'{v}_s{s}'
            try: base = run_config('results/ablation/dckd_s0')
            except FileNotFoundError as e: sys.exit(f'{e} (run profiles/pan_x2.sh first)')
            cpu = dict(base, **variant_switches(v, base), seed=int(s))
            cfg = scaled_config(cpu, a.factor, str(out/name), a.device)
            (out/f'{name}.yaml').write_text(yaml.safe_dump(cfg, sort_keys=False))
            log = open(out/f'{name}.log', 'w')
            stop_at = t0 + 0.85 * a.deadline   # leaves time to save and score a run stopped early
            procs[name] = (subprocess.Popen([sys.executable, os.path.abspath(__file__), '--child', str(out/f'{name}.yaml'), set5,
                                             str(stop_at)],
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
        else: print(f'{name:<10} {r["iters"]:>6}/{r["planned"]} it  {r["train_s"]:>7.1f} s  Set5 {r["psnr"]:.3f} dB / {r["ssim"]:.4f}  ({r["device"]})')


if __name__ == '__main__': main()

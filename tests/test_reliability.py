"""The fault battery of the pipeline and the trainer (issue 13): each case as a user would meet it."""
import json, os, re, shutil, signal, subprocess, sys, warnings
from pathlib import Path
import numpy as np, pytest, torch, yaml
from dckd.data import imwrite
from dckd.distill import (ConfigError, DistillConfig, DivergenceError, NonFiniteLossError, Distiller, train, tiny_config,
                          TINY_SWINIR)
from dckd.checkpoint import load_state
from dckd.pipeline import VARIANTS, check_params, fresh_run

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp('imgs')
    g = np.random.default_rng(0)
    for i in range(6): imwrite(d/'hr'/f'{i}.png', g.random((48, 48, 3)))
    return d/'hr'

DROP = dict(TINY_SWINIR, depths=[2, 2], num_heads=[1, 1], drop_path_rate=0.2)   # drop path draws from the global RNG

def _cfg(images, out, **kw):
    return tiny_config(student=DROP, train_hr=str(images), out_dir=str(out), resume=True, frozen_bf16=False, **kw)

def _weights(out):
    sd = torch.load(out/'models'/'net_g_latest.pth', weights_only=True)
    return sd['params'], sd['params_ema']

class _Kill(Exception): pass

def test_resume_exact_with_drop_path_mid_epoch(images, tmp_path):
    "A multi-block student with drop path, stopped mid-epoch between checkpoints, resumes bit for bit."
    kw = dict(iters=14, ckpt_every=4, batch=2)    # 3 iterations per epoch: the checkpoint at 8 is mid-epoch
    full = train(_cfg(images, tmp_path/'full', **kw))
    def stop(it, logs):
        if it == 10: raise _Kill()                # killed at 10: two iterations past the checkpoint at 8
    with pytest.raises(_Kill): train(_cfg(images, tmp_path/'cut', **kw), on_step=stop)
    assert load_state(tmp_path/'cut'/'state.pt')['iter'] == 8
    res = train(_cfg(images, tmp_path/'cut', **kw))
    for a, b in zip(_weights(tmp_path/'full'), _weights(tmp_path/'cut')):
        assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0
    assert res['train/total'] == full['train/total']

def test_finished_run_asked_again_trains_and_logs_nothing(images, tmp_path):
    out = tmp_path/'run'
    cfg = _cfg(images, out, iters=4, val_hr=str(images))
    first = train(cfg)
    before = (out/'models'/'net_g_latest.pth').read_bytes()
    again = train(cfg)
    assert again == first
    assert (out/'models'/'net_g_latest.pth').read_bytes() == before
    rows = [json.loads(l) for l in (out/'live'/'metrics.jsonl').read_text().splitlines()] if (out/'live'/'metrics.jsonl').exists() else None
    tsv = out/'live'/'plots'/'metrics'/'val'/'psnr.tsv'
    if tsv.exists(): assert len(tsv.read_text().strip().splitlines()) == 2   # header + one row at step 4
    elif rows is not None: assert sum('val/psnr' in r for r in rows) == 1

@pytest.mark.parametrize('bad, key', [(dict(iters=0), "'iters'"), (dict(lr=-1), "'lr'"), (dict(lr=float('nan')), "'lr'")])
def test_bad_values_refused(bad, key):
    with pytest.raises(ConfigError, match=key): tiny_config(**bad)

@pytest.mark.parametrize('bad', [dict(lr=-1), dict(iters=0), dict(student={'type': 'NoSuchNet'}), dict(lr=1e6)])
def test_a_bad_parameter_never_deletes_the_finished_run(images, tmp_path, bad):
    out = tmp_path/'run'
    cfg = _cfg(images, out, iters=4).to_dict()
    with fresh_run(out, cfg): train(cfg)
    files = {p.relative_to(out): p.read_bytes() for p in out.rglob('*') if p.is_file()}
    def go():
        new = {**cfg, **bad}
        with fresh_run(out, new):
            with warnings.catch_warnings():
                warnings.simplefilter('ignore'); train(new)
    with pytest.raises((ConfigError, ValueError, TypeError, DivergenceError, NonFiniteLossError)): go()
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob('*') if p.is_file()} == files
    assert not (tmp_path/'.replaced').exists()

def test_divergence_stops_before_the_checkpoint_is_spoiled(images, tmp_path):
    out = tmp_path/'run'
    with pytest.raises((DivergenceError, NonFiniteLossError)) as e:
        train(_cfg(images, out, iters=40, ckpt_every=1, lr=1.0))
    assert 'diverge' in str(e.value) or 'not finite' in str(e.value)
    if (out/'state.pt').exists():
        st = load_state(out/'state.pt')
        assert all(torch.isfinite(v).all() and v.abs().max() < 1e4 for v in st['student'].values() if v.is_floating_point())

def test_unknown_variant_refused_before_any_run():
    params = yaml.safe_load((ROOT/'params.yaml').read_text())
    params['ablation']['variants'] = ['kd', 'dckd', 'dckd_typo']
    with pytest.raises(ConfigError, match="unknown 'dckd_typo'"): check_params(params)
    # the check stage runs before every training stage
    stages = yaml.safe_load((ROOT/'dvc.yaml').read_text())['stages']
    for s in ('teacher', 'ablation'): assert 'results/check.json' in stages[s]['deps'], s

def test_dckd_distill_exits_0(images, tmp_path):
    cfg = tmp_path/'cfg.yaml'
    cfg.write_text(yaml.safe_dump({**tiny_config().to_dict(), 'train_hr': str(images), 'out_dir': str(tmp_path/'run'), 'iters': 2}))
    r = subprocess.run([sys.executable, '-m', 'dckd.distill', '--config', str(cfg)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])['iter'] == 2
    settings = (ROOT/'settings.ini').read_text()
    assert 'dckd_distill=dckd.distill:distill_main' in settings   # the console script returns 0, not the results dict

# --- dvc.yaml dependencies derived from what each stage's code imports ---
_IMP = re.compile(r'(?:from\s+dckd\.(\w+)\s+import|import\s+dckd\.(\w+)|from\s+dckd\s+import\s+([\w, ]+))')

def _mods(code:str)->set:
    "dckd modules a stage's own code (a notebook's cells, a command) imports, at any level: all of it runs."
    out = set()
    for m in _IMP.finditer(code):
        a, b, c = m.groups()
        out |= {x for x in (a, b) if x} | ({x.strip() for x in c.split(',') if x.strip()} if c else set())
    return {m for m in out if (ROOT/'dckd'/f'{m}.py').is_file()}

def _module_imports(m:str)->set:
    "dckd modules that module `m` imports anywhere: at module level, and inside its functions (what calling them executes)."
    import ast
    out = set()
    for n in ast.walk(ast.parse((ROOT/'dckd'/f'{m}.py').read_text())):
            if isinstance(n, ast.ImportFrom):
                if n.level == 1 and n.module: out.add(n.module.split('.')[0])
                elif n.level == 1: out |= {a.name for a in n.names}
                elif n.module == 'dckd': out |= {a.name for a in n.names}
                elif (n.module or '').startswith('dckd.'): out.add(n.module.split('.')[1])
            elif isinstance(n, ast.Import): out |= {a.name.split('.')[1] for a in n.names if a.name.startswith('dckd.')}
    return {x for x in out if (ROOT/'dckd'/f'{x}.py').is_file()}

def _closure(mods:set)->set:
    seen, todo = set(), set(mods)
    while todo:
        m = todo.pop(); seen.add(m)
        todo |= _module_imports(m) - seen
    return seen

def _stage_code(cmd:str)->str:
    code = cmd
    for nb in re.findall(r'(nbs/pipeline/\w+\.ipynb)', cmd):
        cells = json.loads((ROOT/nb).read_text())['cells']
        code += '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'code')
    return code

def test_dvc_deps_cover_every_imported_module():
    stages = yaml.safe_load((ROOT/'dvc.yaml').read_text())['stages']
    missing = {}
    for name, st in stages.items():
        cmd = st['cmd'] if isinstance(st['cmd'], str) else ' '.join(st['cmd'])
        need = {f'dckd/{m}.py' for m in _closure(_mods(_stage_code(cmd)))}
        if miss := sorted(need - set(st.get('deps', []))): missing[name] = miss
    assert not missing, f'dvc.yaml stages miss the modules their code imports: {missing}'

def test_the_deps_test_can_fail():
    "The derivation finds what a stage imports, so a missing entry is caught; imports inside functions count too."
    assert {'distill', 'data', 'checkpoint', 'losses', 'archs', 'vqgan', 'core'} <= _closure({'distill'})
    assert {'checkpoint', 'vqgan', 'losses', 'metrics'} <= _closure({'pipeline'})   # pipeline imports them in its functions

def test_weights_of_another_scale_fail_the_stage(shared):
    "PAN x3 weights at scale 2: the keys and shapes fit, so only the name tells; an error unless allowed."
    from dckd.archs import build_net
    from dckd.checkpoint import CheckpointError, load_weights
    w = shared/'weights'/'PANx3_DF2K.pth'
    net = build_net(dict(type='PAN', in_nc=3, out_nc=3, nf=40, unf=24, nb=16, scale=2))
    with pytest.raises(CheckpointError, match='allow_scale_mismatch'): load_weights(net, w, key='params')
    params = yaml.safe_load((ROOT/'params.yaml').read_text())
    params['teacher'] = {**params['teacher'], 'weights': str(w), 'arch': dict(type='PAN', in_nc=3, out_nc=3, nf=40, unf=24, nb=16)}
    with pytest.raises(ConfigError, match='named for scale 3'): check_params(params)
    params['teacher']['allow_scale_mismatch'] = True
    assert check_params(params)['ok']

def test_evaluate_scores_only_the_runs_of_the_matrix(images, tmp_path):
    "Run folders of another experiment (another budget, other variants) in the same workspace are not scored."
    import papermill as pm
    from dckd.pipeline import demo_prepared, write_json
    abl = tmp_path/'ablation'
    for name, v in (('dckd_s0', 'dckd'), ('kd_dcr_w0_s0', 'kd_dcr_w0')):   # the second: left by an earlier experiment
        res = train(tiny_config(iters=1, train_hr=str(images), out_dir=str(abl/name)))
        write_json(abl/name/'summary.json', dict(variant=v, seed=0, **res))
    common = dict(prepared=str(demo_prepared(tmp_path/'prep')), ablation_dir=str(abl), out_dir=str(tmp_path/'ev'))
    pm.execute_notebook(str(ROOT/'nbs/pipeline/50_evaluate.ipynb'), str(tmp_path/'ev.ipynb'), cwd=str(ROOT), progress_bar=False, kernel_name='python3', language='python',
                        parameters=dict(common, ablation=dict(variants=['dckd'], seeds=[0])))
    rows = json.loads((tmp_path/'ev'/'rows.json').read_text())
    assert {r['variant'] for r in rows} == {'dckd'}
    with pytest.raises(Exception, match='no finished run for kd_s0'):
        pm.execute_notebook(str(ROOT/'nbs/pipeline/50_evaluate.ipynb'), str(tmp_path/'ev2.ipynb'), cwd=str(ROOT), progress_bar=False, kernel_name='python3', language='python',
                            parameters=dict(common, ablation=dict(variants=['dckd', 'kd'], seeds=[0])))

def test_every_variant_runs_through_the_ablation_notebook(tmp_path):
    "A variant may set keys the run's own settings also hold (history schedule, lr): the notebook lets the variant win."
    import papermill as pm
    from dckd.pipeline import VARIANTS, variant_switches
    tiny = dict(iters=2, batch=2, gt_size=32, lr=2e-4, milestones=[1], history_steps=[1], history_period=1000, num_neg=2,
                log_every=1, val_every=0, ckpt_every=0)
    overlapping = [v for v in VARIANTS if set(variant_switches(v, tiny)) & set(tiny)]
    assert {'kd_dcr_once', 'kd_dcr_rare', 'kd_lowlr'} <= set(overlapping)   # the case this guards
    for v in overlapping:
        out = tmp_path/v
        pm.execute_notebook(str(ROOT/'nbs/pipeline/40_distill.ipynb'), str(tmp_path/f'{v}.ipynb'), cwd=str(ROOT/'nbs'/'pipeline'),
                            progress_bar=False, kernel_name='python3', language='python',
                            parameters=dict(variant=v, budget='ablation', ablation=dict(budget=tiny), out_dir=str(out)))
        cfg = yaml.safe_load((out/'config.yaml').read_text())
        for k, x in variant_switches(v, tiny).items(): assert cfg[k] == (list(x) if isinstance(x, tuple) else x), (v, k)

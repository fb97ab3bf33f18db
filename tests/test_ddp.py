"DDP (gloo, CPU, 2 processes under torchrun) gives the weights of a single process with the same global batch."
import os, socket, subprocess, sys, textwrap
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml

from dckd.distill import tiny_config
from dckd.data import imwrite

SCRIPT = textwrap.dedent('''
    import sys, warnings, torch
    warnings.simplefilter('ignore')
    torch.set_num_threads(1)
    from dckd.distill import Distiller, DistillConfig
    d = Distiller(DistillConfig.from_yaml(sys.argv[1]))
    try:
        d.fit()
        sd = {k: v.detach().cpu() for k, v in d.student.state_dict().items()}
        torch.save(sd, f'{sys.argv[2]}/rank{d.rank}_of{d.world}.pt')
    finally: d.close()
''')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _env():
    env = {k: v for k, v in os.environ.items() if k not in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK', 'MASTER_ADDR', 'MASTER_PORT')}
    return {**env, 'OMP_NUM_THREADS': '1', 'PYTHONWARNINGS': 'ignore'}


def _run(args, timeout):
    p = subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f'{args} failed:\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}'


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ddp')
    g = np.random.default_rng(1)
    for i in range(8):   # 8 images, global batch 4: 2 iterations per epoch, so 3 iterations cross an epoch
        imwrite(tmp / 'hr' / f'{i}.png', g.random((48, 48, 3)))
    (tmp / 'run.py').write_text(SCRIPT)
    return tmp


def _config(tmp, name, **kw):
    # drop_path_rate=0 (tiny_config's default): stochastic depth uses the per-rank global RNG
    c = tiny_config(train_hr=str(tmp / 'hr'), out_dir=str(tmp / name), batch=4, iters=3, history_steps=(2,),
                    ckpt_every=2, **kw)
    p = tmp / f'{name}.yaml'
    p.write_text(yaml.safe_dump(c.to_dict()))
    (tmp / name).mkdir(exist_ok=True)
    return p


def _torchrun(tmp, name, **kw):
    cfg = _config(tmp, name, **kw)
    _run([sys.executable, '-m', 'torch.distributed.run', '--nnodes=1', '--nproc_per_node=2',
          '--master_addr=127.0.0.1', f'--master_port={_free_port()}', str(tmp / 'run.py'), str(cfg), str(tmp / name)], 100)
    return [torch.load(tmp / name / f'rank{r}_of2.pt', weights_only=True) for r in (0, 1)]


def _max_diff(a, b): return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def test_ddp_matches_single_process(setup):
    tmp = setup
    single_cfg = _config(tmp, 'single')
    _run([sys.executable, str(tmp / 'run.py'), str(single_cfg), str(tmp / 'single')], 60)
    single = torch.load(tmp / 'single' / 'rank0_of1.pt', weights_only=True)
    r0, r1 = _torchrun(tmp, 'ddp')
    assert all(torch.equal(r0[k], r1[k]) for k in r0), 'ranks ended with different weights'
    init = _initial(tmp)
    moved = _max_diff(single, init)
    assert moved > 1e-4                                  # the weights did change
    diff = _max_diff(r0, single)
    assert diff < 1e-5, f'DDP vs single process: max |diff| {diff:.3g} (weights moved by up to {moved:.3g})'
    # control: without the DCR synchronisation each rank's ratio uses its own half batch, which is not the same loss
    n0, _ = _torchrun(tmp, 'ddp_nosync', sync_dcr=False)
    assert _max_diff(n0, single) > 20 * max(diff, 1e-6)
    # rank 0 alone wrote the checkpoint, which holds the same student
    from dckd.checkpoint import load_state
    st = load_state(tmp / 'ddp' / 'state.pt')
    assert st['iter'] == 3 and st['world'] == 2 and len(st['rng']) == 2
    assert all(torch.equal(st['student'][k], r0[k]) for k in r0)


def _initial(tmp):
    "The student's initial weights (seeded init, same in every layout)."
    import warnings
    from dckd.distill import Distiller, DistillConfig
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        d = Distiller(DistillConfig.from_yaml(tmp / 'single.yaml'))
    return {k: v.detach().clone() for k, v in d.student.state_dict().items()}


def test_ddp_finished_run_asked_again_and_diagnostics(setup):
    "Under torchrun: gradient diagnostics run on every rank; a finished run asked again neither hangs nor validates twice."
    tmp = setup
    r0, _ = _torchrun(tmp, 'ddp_again', val_hr=str(tmp / 'hr'), grad_every=1)
    again, _ = _torchrun(tmp, 'ddp_again', val_hr=str(tmp / 'hr'), grad_every=1)   # resumes at iteration 3: nothing to do
    assert all(torch.equal(r0[k], again[k]) for k in r0)
    tsv = tmp / 'ddp_again' / 'live' / 'plots' / 'metrics' / 'val' / 'psnr.tsv'
    assert len(tsv.read_text().strip().splitlines()) == 2   # header + the one validation at iteration 3 (DVCLive's layout)
    logged = (tmp / 'ddp_again' / 'live' / 'plots' / 'metrics' / 'grad' / 'pix' / 'cos.tsv')
    assert len(logged.read_text().strip().splitlines()) == 4   # header + iterations 1, 2, 3

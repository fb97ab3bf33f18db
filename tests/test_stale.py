"""Nothing stale (issue 22): after a code or data change `dvc repro` retrains the runs that depend on it, reuses the
ones that do not, and loses nothing when the new run fails. A tiny pipeline (scratch, kd, dckd) on a copy of the
repository, with its data in a folder whose name has a space (papermill used to split it)."""
import os, re, shutil
from pathlib import Path
import pytest
import yaml
from test_pipeline import tiny_params
from test_pipeline_data import fresh_copy, run

RUNS = {'teacher': 'results/teacher/run', 'scratch': 'results/ablation/scratch_s0', 'kd': 'results/ablation/kd_s0',
        'dckd': 'results/ablation/dckd_s0'}


def stamp(repo):
    "{run: (bytes of its weights, mtime of the file)}: a retrained run rewrites its weights, a reused one does not."
    out = {k: ((repo / v / 'models/net_g_latest.pth').read_bytes(), (repo / v / 'models/net_g_latest.pth').stat().st_mtime_ns)
           for k, v in RUNS.items()}
    out['vqgan'] = ((repo / 'results/vqgan/vqgan.pth').read_bytes(), (repo / 'results/vqgan/vqgan.pth').stat().st_mtime_ns)
    return out


def retrained(a, b): return sorted(k for k in RUNS if a[k][1] != b[k][1])   # (the vqgan stage is not a resumable run)
def changed(a, b): return sorted(k for k in a if a[k][0] != b[k][0])


def edit(repo, rel, old, new):
    p = repo / rel; s = p.read_text(); assert s.count(old) == 1, (rel, old); p.write_text(s.replace(old, new))


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    if shutil.which('dvc') is None: pytest.fail('dvc is not installed: `pip install -e ".[dev]"` installs it')
    r = fresh_copy(tmp_path_factory.mktemp('stale'))
    run('dvc pull -q data.dvc', r)
    for split, names in (('train', ['chelsea', 'coffee']), ('train B', ['rocket', 'retina']), ('val', ['astronaut'])):
        (r / 'my data' / split).mkdir(parents=True)
        for n in names: shutil.copy(r / 'data' / ('val' if split == 'val' else 'train') / f'{n}.png', r / 'my data' / split / f'{n}.png')
    tiny_params(r)
    p = yaml.safe_load((r / 'params.yaml').read_text())
    p['prepare'].update(train_dir='my data/train', val_dir='my data/val')
    p['ablation'].update(variants=['scratch', 'kd', 'dckd'])
    (r / 'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))
    run('dvc repro', r)   # a data path with a space: quoted for papermill
    return r


def test_code_change_retrains_exactly_the_runs_that_use_it(repo):
    before = stamp(repo)
    # a numerics change in vqgan.py (sharper DMM logits), a comment in losses.py, a new variant in pipeline.py
    edit(repo, 'dckd/vqgan.py', 'return feats, (self.logits(self.quant_conv(h)) if logits else None)',
         'return feats, (2 * self.logits(self.quant_conv(h)) if logits else None)')
    edit(repo, 'dckd/losses.py', 'def kd_loss(', '# a comment changes no run\ndef kd_loss(')
    edit(repo, 'dckd/pipeline.py', "    'kd':               dict(losses=_KD),", "    'kd':               dict(losses=_KD),\n    'kd_again':         dict(losses=_KD),")
    out = run('dvc repro', repo).stdout
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {'ablation@scratch-0', 'ablation@kd-0', 'ablation@dckd-0', 'teacher'} <= ran, ran   # DVC saw the changed deps
    after = stamp(repo)
    assert retrained(before, after) == ['dckd'], retrained(before, after)   # the only run that computes DMM logits
    assert 'dckd' in changed(before, after)
    nb = (repo / 'results/notebooks/ablation_dckd_s0.ipynb').read_text()
    assert 'previous run differs in code of dckd.vqgan' in nb
    assert 'up to date' in run('dvc status', repo).stdout


def test_failed_retraining_keeps_the_old_run(repo):
    before = stamp(repo)
    edit(repo, 'dckd/losses.py', '    return _l1(s, t.detach())', '    raise RuntimeError("broken kd")')
    r = run('dvc repro', repo, check=False)
    assert r.returncode != 0 and 'broken kd' in r.stdout + r.stderr
    after = stamp(repo)
    assert after['kd'] == before['kd'] and after['dckd'] == before['dckd']   # the old runs, bytes and all, are back
    assert not (repo / 'results/ablation/.replaced').exists()
    edit(repo, 'dckd/losses.py', '    raise RuntimeError("broken kd")', '    return _l1(s, t.detach())')
    run('dvc repro', repo)
    again = stamp(repo)
    # teacher and scratch (pix only) were retrained by the failing repro before kd failed, and again after the revert
    # (losses.py's digest changed twice): the same bytes; kd and dckd were reused both times
    assert not {'kd', 'dckd'} & set(retrained(before, again)) and not changed(before, again), (retrained(before, again), changed(before, again))


def test_data_change_retrains_every_run(repo):
    before = stamp(repo)
    p = yaml.safe_load((repo / 'params.yaml').read_text())
    p['prepare']['train_dir'] = 'my data/train B'
    (repo / 'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))
    run('dvc repro', repo)
    after = stamp(repo)
    assert changed(before, after) == sorted(before), changed(before, after)   # teacher, VQ, every student: new bytes
    nb = (repo / 'results/notebooks/ablation_scratch_s0.ipynb').read_text()
    assert 'previous run differs in data train_hr' in nb
    assert 'up to date' in run('dvc status', repo).stdout

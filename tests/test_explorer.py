"""The ablation explorer (nbs/12_explorer.ipynb) on small repositories: a DVC experiment made by `dvc exp run`, a
study-format result folder, EMA copies; and a folder that is no DVC repository (it runs on the committed results)."""
import json, os, re, subprocess, sys, textwrap
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT/'nbs'/'12_explorer.ipynb'

MAKE = '''
import json
from pathlib import Path
from dckd.plots import synthetic_run
rows, metrics = [], {'val': {'bicubic': {'psnr': 30.0, 'ssim': 0.9}}}
for i, v in enumerate(['scratch', 'kd', 'dckd']):
    for s in (0, 1):
        p = 31 + 0.1*i + 0.05*s
        rows.append(dict(set='val', variant=v, seed=s, psnr=p, ssim=0.9 + 0.001*i))
        metrics['val'][f'ablation/{v}_s{s}'] = dict(psnr=round(p, 4), ssim=0.9)
        synthetic_run(f'results/ablation/{v}_s{s}', iters=60, log_every=10, val_every=30, refresh_every=30, seed=s, writer='tsv')
Path('results/evaluate').mkdir(parents=True, exist_ok=True)
Path('results/evaluate/rows.json').write_text(json.dumps(rows))
Path('results/evaluate/metrics.json').write_text(json.dumps(metrics))
'''

DVC_YAML = '''
stages:
  fake:
    cmd: python make.py
    deps: [make.py]
    outs:
      - results/ablation
      - results/evaluate/rows.json:
          cache: false
    metrics:
      - results/evaluate/metrics.json:
          cache: false
'''


def _run(cmd, cwd, env=None):
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f'{cmd} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}'
    return r


def _study(d:Path):
    "A result folder in the format profiles/study.sh commits: rows with EMA copies, metrics, runs/<run>/live."
    from dckd.plots import synthetic_run
    rows = [dict(set=st, variant=v + w, seed=s, psnr=33 + g + 0.03*s + (0.01 if w else 0), ssim=0.93)
            for st in ('val', 'Set5') for v, g in (('scratch', 0.), ('kd', .1), ('kd_dcr', -.2)) for w in ('', '@ema0.99') for s in (0, 1, 2)]
    d.mkdir(parents=True)
    (d/'rows.json').write_text(json.dumps(rows))
    (d/'metrics.json').write_text(json.dumps({st: {'teacher': dict(psnr=36., ssim=.95)} for st in ('val', 'Set5')}))
    for run in ('kd_s0', 'kd_dcr_s0'): synthetic_run(d/'runs'/run, iters=60, log_every=10, val_every=30, refresh_every=30, writer='tsv')


def _explore(tmp_path, **params):
    pm = pytest.importorskip('papermill')
    out = tmp_path/'explored'
    nb = pm.execute_notebook(str(NB), str(tmp_path/'explorer.ipynb'), cwd=str(NB.parent), progress_bar=False,
                             kernel_name='python3', language='python', parameters=dict(params, out_dir=str(out)))
    text = '\n'.join(''.join(o.get('text', '')) for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    return out, text


def test_explorer_reads_experiments_and_study_folders(tmp_path):
    pytest.importorskip('dvc')
    repo = tmp_path/'repo'; repo.mkdir()
    env = {**os.environ, 'PYTHONPATH': str(ROOT) + os.pathsep + os.environ.get('PYTHONPATH', ''),
           'GIT_AUTHOR_NAME': 't', 'GIT_AUTHOR_EMAIL': 't@example.org', 'GIT_COMMITTER_NAME': 't', 'GIT_COMMITTER_EMAIL': 't@example.org'}
    _run(['git', 'init', '-q'], repo)
    for k, v in (('user.name', 't'), ('user.email', 't@example.org'), ('commit.gpgsign', 'false')): _run(['git', 'config', k, v], repo)
    _run([sys.executable, '-m', 'dvc', 'init', '-q'], repo, env)
    (repo/'make.py').write_text(MAKE); (repo/'dvc.yaml').write_text(textwrap.dedent(DVC_YAML))
    _study(repo/'docs'/'study'/'b400')
    _run(['git', 'add', '-A'], repo); _run(['git', 'commit', '-qm', 'init'], repo, env)
    _run([sys.executable, '-m', 'dvc', 'exp', 'run', '-q', '-n', 'tiny-exp'], repo, env)

    out, text = _explore(tmp_path, repo=str(repo), curve_runs=['kd_s0', 'dckd_s0', 'kd_dcr_s0'])
    assert 'DVC experiments: tiny-exp' in text and 'the workspace holds the results of tiny-exp' in text, text
    import pandas as pd
    rows = pd.read_csv(out/'rows.csv')
    assert list(dict.fromkeys(rows.experiment)) == ['tiny-exp', 'docs/study/b400']
    exp = rows[(rows.experiment == 'tiny-exp') & ~rows.fixed]
    assert len(exp) == 6 and set(exp.variant) == {'scratch', 'kd', 'dckd'}
    st = rows[rows.experiment == 'docs/study/b400']
    assert set(st.weights.dropna()) == {'ema', 'ema0.99'} and len(st[~st.fixed]) == 36
    table = (out/'table.md').read_text()
    # dckd minus kd, paired by seed: +0.1 dB on both seeds (no spread); the EMA copies against kd@ema0.99
    assert re.search(r'\| tiny-exp +\| sr scale 2; Y, border 2 +\| val +\| dckd +\| 2 +\| 31\.2\d ± 0\.04 +\| [^|]+\| \+0\.100 ± 0\.000 +\|', table), table
    assert re.search(r'\| kd_dcr@ema0\.99 +\| 3 +\|[^\n]*\| -0\.300 ± 0\.000 +\|', table), table
    # the experiment's run logs come from the DVC cache, the study's from its runs/ folder
    assert 'tiny-exp: kd_s0, dckd_s0' in text and 'docs/study/b400: kd_s0, kd_dcr_s0' in text, text
    for f in ('scores', 'paired_deltas', 'curves', 'compared'): assert (out/f'{f}.png').stat().st_size > 10_000


def test_explorer_without_experiments(tmp_path):
    "Not a DVC repository, no workspace results: it says so and draws the committed folder alone."
    pytest.importorskip('dvc')
    d = tmp_path/'plain'
    (d/'docs'/'pan_x2').mkdir(parents=True)
    for f in ('rows.json', 'metrics.json'): (d/'docs'/'pan_x2'/f).write_bytes((ROOT/'docs'/'pan_x2'/f).read_bytes())
    out, text = _explore(tmp_path, repo=str(d))
    assert 'DVC experiments not read' in text and 'logs of scratch_s0, kd_s0, dckd_s0: in no source' in text, text
    assert '1 experiment(s) with Δ vs kd' in text
    assert re.search(r'\| docs/pan_x2 +\| sr scale 2; Y, border 2 +\| Set5 +\| dckd +\| 3 +\| 33\.90 ± 0\.27 ', (out/'table.md').read_text())   # (no task.json: SR x2, as before tasks)
    assert not (out/'curves.png').exists() and not (out/'compared.png').exists()

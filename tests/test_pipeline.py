"The whole DVC pipeline on a copy of the repository, with tiny parameters: the README's main command."
import json, re, shutil
from pathlib import Path
import pytest
import yaml
from test_pipeline_data import fresh_copy, run

ROOT = Path(__file__).resolve().parents[1]
TINY = {}   # the tiny params.yaml text, restored after each test that edits it
VARIANTS = ['scratch', 'kd', 'kd_lcr', 'kd_dcr', 'kd_dmm', 'dckd']


def readme_main_command() -> str:
    "The line after '# 1.' in the README's first code block."
    lines = (ROOT / 'README.md').read_text().splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith('# 1. '))
    return lines[i + 1]


def tiny_params(repo: Path):
    p = yaml.safe_load((repo / 'params.yaml').read_text())
    p['prepare'].update(crop_size=0)
    p['teacher'].update(iters=3, batch=2, gt_size=32, milestones=[2], log_every=1, val_every=0, ckpt_every=2)
    p['vqgan'].update(iters=3, batch=2, patch=32, log_every=1)
    p['distill'].update(iters=3, batch=2, gt_size=32, milestones=[2], history_steps=[1, 2], history_period=2,
                        log_every=1, val_every=2, ckpt_every=2)
    p['ablation'].update(variants=VARIANTS, seeds=[0], budget=dict(iters=2, milestones=[1], val_every=0, ckpt_every=1))
    (repo / 'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))
    return (repo / 'params.yaml').read_text()


def edit_params(repo: Path, fn):
    p = yaml.safe_load((repo / 'params.yaml').read_text()); fn(p)
    (repo / 'params.yaml').write_text(yaml.safe_dump(p, sort_keys=False))


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    if shutil.which('dvc') is None: pytest.fail('dvc is not installed: `pip install -e ".[dev]"` installs it')
    r = fresh_copy(tmp_path_factory.mktemp('pipeline'))
    TINY['params'] = tiny_params(r)
    return r


def test_main_command_runs_every_stage(repo):
    cmd = readme_main_command()
    assert 'dvc repro' in cmd, cmd
    out = run(cmd[cmd.index('dvc pull'):], repo).stdout   # the set-up part (pip installs) is what this process already is
    stages = set(re.findall(r"Running stage '([^']+)'", out))
    expected = {'check', 'prepare', 'teacher', 'vqgan', 'evaluate', 'report'} | {f'ablation@{v}-0' for v in VARIANTS}
    assert expected <= stages, (expected - stages, out[-3000:])


def test_metrics_list_every_variant(repo):
    shown = json.loads(run('dvc metrics show --json', repo).stdout)
    flat = json.dumps(shown)
    for name in ['bicubic', 'teacher'] + [f'ablation/{v}_s0' for v in VARIANTS]:
        assert f'"{name}"' in flat, name
    m = json.loads((repo / 'results/evaluate/metrics.json').read_text())
    for name, v in m['val'].items():
        assert set(v) == {'psnr', 'ssim'} and 0 < v['psnr'] < 100 and 0 < v['ssim'] <= 1, (name, v)


def test_figures_are_pngs(repo):
    for f in ['prepare/pairs.png', 'vqgan/vqgan.png', 'report/ablation.png', 'report/contrastive_state.png',
              'report/distribution_maps.png', 'report/crops.png']:
        p = repo / 'results' / f
        assert p.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', f
    assert (repo / 'results/report/table.md').read_text().count('\n') >= len(VARIANTS) + 2


def test_second_repro_does_nothing(repo):
    out = run('dvc repro', repo).stdout
    assert 'Running stage' not in out, out
    assert 'up to date' in run('dvc status', repo).stdout


def test_changing_one_ablation_budget_key_reruns_only_its_dependents(repo):
    edit_params(repo, lambda p: p['ablation']['budget'].update(iters=3))
    try:
        out = run('dvc repro --dry', repo).stdout
        ran = set(re.findall(r"Running stage '([^']+)'", out))
        # the ablation runs rerun; evaluate and report follow once their outputs change; nothing upstream does
        assert ran >= {f'ablation@{v}-0' for v in VARIANTS}, ran
        assert not ran & {'prepare', 'teacher', 'vqgan'}, ran
    finally:
        (repo / 'params.yaml').write_text(TINY['params'])


def test_wrong_checkpoint_path_fails_naming_it(repo):
    "The check stage refuses a teacher checkpoint that is not there, naming it; nothing upstream is touched."
    before = (repo / 'results/prepare/summary.json').read_bytes()
    edit_params(repo, lambda p: p['teacher'].update(weights='no/such/teacher.pth'))
    try:
        r = run('dvc repro teacher', repo, check=False)
        assert r.returncode != 0
        assert 'teacher.weights: no/such/teacher.pth is not a file' in r.stdout + r.stderr
        assert (repo / 'results/prepare/summary.json').read_bytes() == before   # the earlier stage's outputs stay
    finally:
        (repo / 'params.yaml').write_text(TINY['params'])
    out = run('dvc repro prepare', repo).stdout   # the check's output comes back with the same bytes: prepare stays valid
    assert "Running stage 'prepare'" not in out, out

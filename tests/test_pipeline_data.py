"The embedded default data under DVC, on a copy of the repository as a fresh clone sees it."
import os, shutil, subprocess, sys
from pathlib import Path
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def run(cmd, cwd, check=True):
    env = {**os.environ, 'DVC_NO_ANALYTICS': '1', 'PYTHONUNBUFFERED': '1'}
    r = subprocess.run(cmd, cwd=cwd, shell=True, capture_output=True, text=True, env=env)
    if check and r.returncode: raise AssertionError(f'{cmd} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}')
    return r


def fresh_copy(dst: Path) -> Path:
    "The repository's tracked and untracked-but-not-ignored files (what a clone plus this change holds), no data/."
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split('\0')
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(src, dst / f)
    run('git init -q && git add -A && git -c user.email=t@t -c user.name=t commit -qm init', dst)
    return dst


@pytest.fixture(scope='module')
def repo(tmp_path_factory):
    if shutil.which('dvc') is None: pytest.fail('dvc is not installed: `pip install -e ".[dev]"` installs it')
    return fresh_copy(tmp_path_factory.mktemp('clone'))


def test_fresh_clone_has_no_data_until_pull(repo):
    assert not (repo / 'data').exists()
    run('dvc pull -q data.dvc', repo)
    names = sorted(p.relative_to(repo / 'data').as_posix() for p in (repo / 'data').rglob('*.png'))
    assert 'val/astronaut.png' in names and len([n for n in names if n.startswith('train/')]) == 8, names
    st = run('dvc status data.dvc', repo).stdout
    assert 'up to date' in st, st


def test_prepare_stage_runs_and_is_cached(repo):
    p = yaml.safe_load((repo / 'params.yaml').read_text())
    p['prepare']['crop_size'] = 0   # whole images: fewer files, same code path
    (repo / 'params.yaml').write_text(yaml.safe_dump(p))
    run('dvc repro prepare', repo)
    out = repo / 'results' / 'prepare'
    assert (out / 'pairs.png').stat().st_size > 0 and (repo / 'results/notebooks/prepare.ipynb').exists()
    assert len(list((out / 'train/LR/X2').glob('*x2.png'))) == 8
    second = run('dvc repro prepare', repo).stdout
    assert 'up to date' in second or 'didn\'t change' in second, second
    st = run('dvc status prepare data.dvc', repo).stdout
    assert 'up to date' in st, st


def test_unreadable_image_fails_prepare_naming_it(repo):
    bad = repo / 'data' / 'train' / 'broken.png'
    bad.write_bytes(b'not an image at all')
    try:
        r = run('dvc repro prepare', repo, check=False)
        assert r.returncode != 0
        assert 'broken.png' in r.stdout + r.stderr
    finally:
        bad.unlink()

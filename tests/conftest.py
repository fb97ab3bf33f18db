"Shared pytest fixtures: the read-only ../shared folder (CI has it; a fresh clone does not)."
import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _in_ci() -> bool:
    return os.environ.get('CI', '').lower() in ('1', 'true', 'yes')


@pytest.fixture(scope='session')
def root() -> Path:
    return ROOT


@pytest.fixture(scope='session')
def shared() -> Path:
    "Path to ../shared; skip (saying why) on a fresh clone, fail under CI=true when it is missing."
    p = Path(os.environ.get('DCKD_SHARED') or ROOT.parent / 'shared')
    if not p.is_dir():
        msg = f'{p} not found: ../shared (official fixtures, weights, Set5) is only beside dev checkouts and in CI'
        if _in_ci(): pytest.fail(msg)
        pytest.skip(msg)
    return p


@pytest.fixture(scope='module')
def one_thread():
    "One torch thread for a module: the CI machine has 2 cores, and oversubscribed intra-op threads are several times slower."
    import torch
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

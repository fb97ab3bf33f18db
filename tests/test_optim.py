"""dckd.optim over the recipes' full budgets: every scheduler stepped 200k-300k times, its lr at the period boundaries
against the closed forms written out here, and a resume from a mid-run checkpoint giving the same sequence."""
import math
import warnings
import numpy as np
import pytest
import torch

from dckd.optim import RECIPES, build_optimizer, build_scheduler, flat_optim, progressive_stage, schedule_lrs


def stepped(recipe, n=None, state=None, upto=None):
    "lr of last_epoch 0..n (stepping as the trainer does), optionally from a saved (opt, sched) state; (lrs, state at `upto`)."
    net = torch.nn.Linear(1, 1)
    opt = build_optimizer(net.parameters(), recipe['optim'])
    sched = build_scheduler(opt, recipe['scheduler'])
    if state is not None: opt.load_state_dict(state[0]); sched.load_state_dict(state[1])
    n = recipe['total_iter'] if n is None else n
    out, saved = [], None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)   # no opt.step() here: the parameters do not matter
        while sched.last_epoch <= n:
            if sched.last_epoch == upto: saved = opt.state_dict(), sched.state_dict()
            out.append(opt.param_groups[0]['lr']); sched.step()
    return np.array(out), saved


@pytest.fixture(scope='module')
def curves():
    return {k: stepped(r, upto=r['total_iter'] // 2 + 1) for k, r in RECIPES.items()}


def test_nafnet_cosine_full_budget(curves):
    lr, _ = curves['nafnet_gopro']
    e = np.arange(200001)
    ref = 1e-7 + (1e-3 - 1e-7) * (1 + np.cos(np.pi * e / 200000)) / 2
    np.testing.assert_allclose(lr, ref, rtol=1e-9, atol=0)   # torch's recursive form, 200k steps: to rounding
    assert lr[0] == 1e-3 and abs(lr[100000] - (1e-3 + 1e-7) / 2) < 1e-15 and abs(lr[-1] - 1e-7) < 1e-18


@pytest.mark.parametrize('name', ['restormer_deblur', 'restormer_derain'])
def test_restormer_constant_then_cosine(curves, name):
    lr, _ = curves[name]
    assert len(lr) == 300001
    assert (lr[:92001] == 3e-4).all()                       # cycle 0: 3e-4 through last_epoch 92000 inclusive
    c = lambda e: 1e-6 + 0.5 * (3e-4 - 1e-6) * (1 + math.cos(math.pi * (e - 92000) / 208000))
    for e in (92001, 92002, 150000, 196000, 299999, 300000): assert lr[e] == pytest.approx(c(e), rel=1e-12, abs=0)
    assert lr[92001] < 3e-4 and lr[300000] == pytest.approx(1e-6, rel=1e-12)
    assert (np.diff(lr[92000:]) <= 0).all()


def test_sr_default_multistep():
    from dckd.distill import DistillConfig
    d = DistillConfig()
    r = dict(flat_optim(d.lr, d.betas, d.milestones, d.gamma), total_iter=250000)
    lr, _ = stepped(r)
    e = np.arange(250001)
    np.testing.assert_array_equal(lr, d.lr * d.gamma ** np.searchsorted(np.array(d.milestones), e, side='right'))


@pytest.mark.parametrize('name', list(RECIPES))
def test_resume_mid_budget(curves, name):
    "A fresh optimiser and scheduler loaded from the state saved half-way continue with exactly the same lrs."
    lr, saved = curves[name]
    r = RECIPES[name]; k = r['total_iter'] // 2 + 1
    rest, _ = stepped(r, state=saved)
    np.testing.assert_array_equal(rest, lr[k:])


@pytest.mark.parametrize('name', list(RECIPES))
def test_closed_form_matches_stepping(curves, name):
    lr, _ = curves[name]; r = RECIPES[name]
    np.testing.assert_allclose(schedule_lrs(r['scheduler'], r['optim']['lr'], np.arange(len(lr))), lr, rtol=1e-9, atol=0)


def test_progressive_all_iterations():
    r = RECIPES['restormer_deblur']; p = r['progressive']
    stages = np.array([progressive_stage(i, r) for i in range(1, r['total_iter'] + 1)])
    want = np.repeat(np.array([[b * r['num_gpu'], g] for b, g in zip(p['mini_batch_sizes'], p['gt_sizes'])]), p['iters'], axis=0)
    np.testing.assert_array_equal(stages, want)

"dckd.runlog: what RunLog writes reads back exactly (DVCLive and the JSON-lines fallback), resume truncation, read_final_metrics."
import json, subprocess, sys
from pathlib import Path
import numpy as np
import pytest

from dckd.runlog import RunLog, read_live, read_final_metrics


@pytest.fixture(params=['dvclive', 'jsonl'])
def backend(request, monkeypatch):
    "Each test twice: with DVCLive, and as if dvclive were not installed (the JSON-lines fallback)."
    if request.param == 'dvclive': pytest.importorskip('dvclive')
    else: monkeypatch.setitem(sys.modules, 'dvclive', None)   # `from dvclive import Live` raises ImportError
    return request.param


def _rows(m: dict, steps) -> dict:
    return {k: [(s, v) for s in steps] for k, v in m.items()}


def _check(live: dict, want: dict):
    "`live` holds exactly the rows `want` ({name: [(step, value)]}) for those names."
    assert set(want) <= set(live), sorted(live)
    for k, rows in want.items():
        s, v = live[k]
        assert s.dtype == np.int64 and v.dtype == np.float64, k
        assert s.tolist() == [r[0] for r in rows], k
        np.testing.assert_allclose(v, [r[1] for r in rows], rtol=1e-12, err_msg=k)


def _log_first_attempt(run: Path, steps=(10, 20, 30, 40, 50)) -> dict:
    "A run that logs `steps` (a validation at 20 and 50), as the trainer does; returns what it logged."
    want = {}
    with RunLog(run) as log:
        for it in steps:
            m = {'train/pix': 0.5/it, 'dcr/l0/d_ap': 0.1*it, 'history/refresh': float(it == 20), 'lr': 1e-4}
            log.log(it, m)
            for k, v in m.items(): want.setdefault(k, []).append((it, v))
            if it in (20, 50):
                log.log(it, {'val/psnr': 30. + it/100, 'val/ssim': 0.9})
                for k, v in (('val/psnr', 30. + it/100), ('val/ssim', 0.9)): want.setdefault(k, []).append((it, v))
    return want


# ---------------------------------------------------------------- import

def test_import_is_light():
    code = "import sys, dckd.runlog; bad = [m for m in ('dvclive', 'torch', 'matplotlib', 'dckd.distill', 'dckd.plots') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, '-c', code], check=True)


# ---------------------------------------------------------------- write, read back

def test_roundtrip(tmp_path, backend):
    "What RunLog writes (DVCLive or its JSON-lines fallback) reads back exactly, from live/ or from the run's out_dir."
    want = {}
    with RunLog(tmp_path) as log:
        assert log.backend == backend and log.dir == tmp_path/'live'
        for it in (1, 2, 5, 10):
            m = {'train/pix': 0.5/it, 'dcr/l0/d_ap': 0.1*it, 'dcr/l0/d_an': 1. + it, 'history/refresh': float(it in (2, 10)), 'lr': 1e-4}
            log.log(it, m)
            for k, v in m.items(): want.setdefault(k, []).append((it, v))
        log.log(10, {'val/psnr': 31.25, 'val/ssim': 0.9125}); want['val/psnr'] = [(10, 31.25)]; want['val/ssim'] = [(10, 0.9125)]
    assert log.closed
    for where in (tmp_path/'live', tmp_path, str(tmp_path)):
        _check(read_live(where), want)
    if backend == 'dvclive':
        assert (tmp_path/'live'/'plots'/'metrics'/'dcr'/'l0'/'d_ap.tsv').read_text().splitlines()[0] == 'step\td_ap'
        assert not (tmp_path/'live'/'metrics.jsonl').exists() and not (tmp_path/'dvc.yaml').exists()
        assert json.loads((tmp_path/'live'/'metrics.json').read_text())['val'] == {'psnr': 31.25, 'ssim': 0.9125}
    else:
        lines = (tmp_path/'live'/'metrics.jsonl').read_text().splitlines()
        assert json.loads(lines[0]) == {'step': 1, 'train/pix': 0.5, 'dcr/l0/d_ap': 0.1, 'dcr/l0/d_an': 2., 'history/refresh': 0., 'lr': 1e-4}
        assert not (tmp_path/'live'/'plots').exists()


def test_fresh_run_replaces_the_old_log(tmp_path, backend):
    _log_first_attempt(tmp_path)
    with RunLog(tmp_path, resume=False, it=30) as log: log.log(5, {'train/pix': 1.})
    live = read_live(tmp_path)
    assert list(live) == ['train/pix'] and live['train/pix'][0].tolist() == [5]


def test_closed_log(tmp_path, backend):
    with pytest.raises(RuntimeError, match='boom'):
        with RunLog(tmp_path) as log:
            log.log(1, {'train/pix': 1.}); raise RuntimeError('boom')
    assert log.closed and read_live(tmp_path)['train/pix'][0].tolist() == [1]   # closed by the with block, rows kept
    log.close()   # again: nothing
    with pytest.raises(ValueError, match='closed'): log.log(2, {'train/pix': 1.})


def test_dvclive_that_cannot_start_falls_back(tmp_path, monkeypatch):
    dvclive = pytest.importorskip('dvclive')
    def refuse(*a, **k): raise RuntimeError('no commits yet')
    monkeypatch.setattr(dvclive, 'Live', refuse)
    with pytest.warns(UserWarning, match=r'DVCLive could not start \(RuntimeError: no commits yet\); logging to .*metrics\.jsonl'):
        log = RunLog(tmp_path)
    with log: log.log(3, {'lr': 1e-4})
    assert log.backend == 'jsonl' and read_live(tmp_path)['lr'][0].tolist() == [3]


# ---------------------------------------------------------------- resume

def test_resume_truncates_dvclive_layout(tmp_path):
    "DVCLive's TSV files: the rows after the checkpoint's iteration go, earlier rows stay byte for byte, header kept."
    pytest.importorskip('dvclive')
    want = _log_first_attempt(tmp_path)
    root = tmp_path/'live'/'plots'/'metrics'
    before = {f: f.read_text() for f in root.rglob('*.tsv')}
    assert len(before) == 6
    with RunLog(tmp_path, resume=True, it=30) as log:
        assert log.backend == 'dvclive'
        for f, text in before.items():   # truncated before anything is logged
            lines = text.splitlines(keepends=True)
            assert f.read_text() == ''.join([lines[0]] + [l for l in lines[1:] if int(l.split('\t')[0]) <= 30]), f
        assert (root/'val'/'psnr.tsv').read_text() == 'step\tpsnr\n20\t30.2\n'
        log.log(40, {'train/pix': 0.1, 'lr': 1e-4})
    live = read_live(tmp_path)
    _check(live, {'train/pix': want['train/pix'][:3] + [(40, 0.1)], 'lr': _rows({'lr': 1e-4}, (10, 20, 30, 40))['lr'],
                  'dcr/l0/d_ap': want['dcr/l0/d_ap'][:3], 'val/psnr': [(20, 30.2)], 'history/refresh': want['history/refresh'][:3]})
    assert json.loads((tmp_path/'live'/'metrics.json').read_text())['step'] == 40


def test_resume_truncates_jsonl(tmp_path, monkeypatch):
    "The JSON-lines fallback: rows after the checkpoint's iteration go, earlier rows stay byte for byte."
    monkeypatch.setitem(sys.modules, 'dvclive', None)
    want = _log_first_attempt(tmp_path)
    f = tmp_path/'live'/'metrics.jsonl'
    lines = f.read_text().splitlines(keepends=True)
    assert len(lines) == 7
    with RunLog(tmp_path, resume=True, it=30) as log:
        assert log.backend == 'jsonl'
        assert f.read_text() == ''.join(l for l in lines if json.loads(l)['step'] <= 30)
        log.log(40, {'train/pix': 0.1})
    assert f.read_text() == ''.join(l for l in lines if json.loads(l)['step'] <= 30) + '{"step": 40, "train/pix": 0.1}\n'
    live = read_live(tmp_path)
    _check(live, {'train/pix': want['train/pix'][:3] + [(40, 0.1)], 'val/psnr': [(20, 30.2)], 'lr': want['lr'][:3]})


def test_resume_at_the_end_and_at_zero(tmp_path, backend):
    want = _log_first_attempt(tmp_path)
    with RunLog(tmp_path, resume=True, it=50): pass   # nothing after 50: the log is unchanged
    _check(read_live(tmp_path), want)
    with RunLog(tmp_path, resume=True, it=0) as log: log.log(10, {'train/pix': 7.})   # no checkpoint yet
    live = read_live(tmp_path)
    assert live['train/pix'][0].tolist() == [10] and live['train/pix'][1].tolist() == [7.]
    if backend == 'dvclive': assert live['lr'][0].tolist() == []   # lr.tsv keeps its header, no rows
    else: assert 'lr' not in live


def test_resume_without_a_log_yet(tmp_path, backend):
    with RunLog(tmp_path/'new', resume=True, it=30) as log: log.log(31, {'lr': 1e-4})
    assert read_live(tmp_path/'new')['lr'][0].tolist() == [31]


def test_resume_drops_a_row_cut_short(tmp_path, monkeypatch):
    "A kill in the middle of a write leaves a last line without its newline: it was after the checkpoint, it goes."
    monkeypatch.setitem(sys.modules, 'dvclive', None)
    d = tmp_path/'live'; d.mkdir()
    (d/'metrics.jsonl').write_text('{"step": 10, "lr": 0.1}\n{"step": 20, "lr": 0.2}\n{"step": 30, "l')
    with pytest.warns(UserWarning, match='incomplete last line'): assert read_live(tmp_path)['lr'][0].tolist() == [10, 20]
    with RunLog(tmp_path, resume=True, it=20) as log: log.log(30, {'lr': 0.3})
    assert (d/'metrics.jsonl').read_text() == '{"step": 10, "lr": 0.1}\n{"step": 20, "lr": 0.2}\n{"step": 30, "lr": 0.3}\n'
    (d/'metrics.jsonl').write_text('{"step": 10, "lr": 0.1}\nnot json\n{"step": 20, "lr": 0.2}\n')
    with pytest.raises(ValueError, match=r'metrics\.jsonl, line 2: not a JSON object'): RunLog(tmp_path, resume=True, it=20)
    # a DVCLive file cut short the same way
    t = d/'plots'/'metrics'/'lr.tsv'; t.parent.mkdir(parents=True)
    t.write_text('step\tlr\n10\t0.1\n20\t0.2\n30\t0.3')
    (d/'metrics.jsonl').unlink()
    RunLog(tmp_path, resume=True, it=30).close()
    assert t.read_text() == 'step\tlr\n10\t0.1\n20\t0.2\n'


# ---------------------------------------------------------------- reading details

def test_read_live_tsv_details(tmp_path):
    d = tmp_path/'live'/'plots'/'metrics'/'train'
    d.mkdir(parents=True)
    (d/'pix.tsv').write_text('step\tpix\n5\t0.5\n1\t0.1\n5\t0.7\n')   # out of order, step 5 logged twice (a resume)
    (d/'old.tsv').write_text('timestamp\tstep\told\n1700000000\t3\t2.5\n')   # older DVCLive: a timestamp column
    live = read_live(tmp_path)
    assert live['train/pix'][0].tolist() == [1, 5] and live['train/pix'][1].tolist() == [0.1, 0.7]
    assert live['train/old'][0].tolist() == [3] and live['train/old'][1].tolist() == [2.5]
    (d/'bad.tsv').write_text('step\tbad\n1\tnan-ish\n')
    with pytest.raises(ValueError, match=r'bad\.tsv, line 2'): read_live(tmp_path)
    (d/'bad.tsv').write_text('value\n1\n')
    with pytest.raises(ValueError, match="'step' column"): read_live(tmp_path)


def test_read_live_both_layouts_merge(tmp_path):
    "A run resumed without dvclive: TSV files and metrics.jsonl in one folder, one series per name (TSV wins a tie)."
    d = tmp_path/'live'; (d/'plots'/'metrics').mkdir(parents=True)
    (d/'plots'/'metrics'/'lr.tsv').write_text('step\tlr\n10\t0.1\n20\t0.2\n')
    (d/'metrics.jsonl').write_text('{"step": 20, "lr": 9.0}\n{"step": 30, "lr": 0.3, "note": "text"}\n')
    live = read_live(tmp_path)
    assert list(live) == ['lr'] and live['lr'][0].tolist() == [10, 20, 30] and live['lr'][1].tolist() == [0.1, 0.2, 0.3]


def test_read_live_jsonl_truncated_and_errors(tmp_path):
    d = tmp_path/'live'; d.mkdir()
    (d/'metrics.jsonl').write_text('{"step": 1, "train/pix": 0.5}\n{"step": 2, "train/pix": 0.25}\n{"step": 3, "train/p')
    with pytest.warns(UserWarning, match='incomplete last line'): live = read_live(tmp_path)
    assert live['train/pix'][0].tolist() == [1, 2]
    (d/'metrics.jsonl').write_text('{"step": 1, "train/pix": 0.5}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match='line 2'): read_live(d)
    (d/'metrics.jsonl').write_text('{"train/pix": 0.5}\n')
    with pytest.raises(ValueError, match="line 1: expected a JSON object with a 'step' key"): read_live(d)
    with pytest.raises(FileNotFoundError, match='no such folder'): read_live(tmp_path/'nope')
    (d/'metrics.jsonl').unlink()
    with pytest.raises(FileNotFoundError, match='no metrics found'): read_live(d)


# ---------------------------------------------------------------- final metrics

def test_read_final_metrics(tmp_path):
    res = {'iter': 300, 'train/total': 0.5, 'val/psnr': 31.0, 'val/ssim': 0.9}
    f = tmp_path/'metrics.json'
    f.write_text(json.dumps(res, indent=1))
    assert read_final_metrics(f, 300) == res
    assert read_final_metrics(tmp_path, 300) == res and read_final_metrics(str(f), 300) == res   # the run's out_dir, a str
    assert read_final_metrics(f, 400) == {}                     # another iteration
    assert read_final_metrics(tmp_path/'missing.json', 300) == {}
    assert read_final_metrics(tmp_path/'no_run', 300) == {}
    for bad in ('{"iter": 300, "val/ps', '', '[300]', '"iter"'):   # cut short, empty, not an object
        f.write_text(bad)
        assert read_final_metrics(f, 300) == {}, bad
    f.write_bytes(b'\xff\xfe\x00')   # not even text
    assert read_final_metrics(f, 300) == {}
    f.write_text(json.dumps({'step': 300}))   # DVCLive's summary (live/metrics.json) is not the final record
    assert read_final_metrics(f, 300) == {}

"Second fault battery (issue 22): each case failed on the code before it; the stale-run cases through DVC are in test_stale.py."
import errno, json, re, shutil, struct, subprocess, sys, tracemalloc, warnings, zlib
from pathlib import Path
import numpy as np
import pytest
import torch
import yaml
import dckd.data
from dckd import distill
from dckd.artifacts import RUN_CONFIG, RUN_FINGERPRINT, run_weights
from dckd.checkpoint import CheckpointError, CheckpointWriteError, load_state
from dckd.data import ImageReadError, imread, imwrite
from dckd.distill import ConfigError, tiny_config, train
from dckd.pipeline import check_params_file, prepare_split

pytestmark = pytest.mark.filterwarnings('ignore:(teacher|vqgan)_weights is None')
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp('hr'); g = np.random.default_rng(0)
    for i in range(4): imwrite(d / f'im{i}.png', g.random((40, 40, 3)))
    return d


def cfg(images, out, **kw):
    return tiny_config(train_hr=str(images), out_dir=str(out), frozen_bf16=False, **kw)


class Kill(Exception): pass


def weights(out):
    sd = torch.load(run_weights(out), weights_only=True)
    return sd['iter'], sd['params'], sd['params_ema']


def same(a, b): return all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys()


# --- 1. same-stem images would overwrite each other ----------------------------------------------------------

def test_prepare_refuses_two_images_of_one_stem(tmp_path):
    src = tmp_path / 'train'
    imwrite(src / 'photo.png', np.zeros((8, 8, 3)))
    from PIL import Image
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(src / 'photo.jpg')
    for crop in (None, 4):
        with pytest.raises(ValueError, match=r'photo\.jpg and .*photo\.png|photo\.png and .*photo\.jpg'):
            prepare_split(src, tmp_path / 'out', 2, crop_size=crop, step=4)


# --- 2. the check stage validates vqgan and prepare, and builds every network -------------------------------

@pytest.mark.parametrize('section, bad, says', [
    ('vqgan', dict(lr=-1), 'vqgan.lr'), ('vqgan', dict(iters=0), 'vqgan.iters'),
    ('prepare', dict(crop_size=-2), 'prepare.crop_size'),
    ('distill', dict(student=dict(type='SwinIR', img_size=32, window_size=8, embed_dim=24, depths=[2, 2], num_heads=[2])),
     'distill.student: SwinIR cannot be built'),
    ('distill', dict(student=dict(type='SwinIR', upsampler='bogus')), 'upsampler must be one of'),
    ('teacher', dict(arch=dict(type='SwinIR', window_size=0, embed_dim=12, depths=[1], num_heads=[1])), 'teacher.arch'),
])
def test_check_stage_refuses(tmp_path, section, bad, says):
    p = yaml.safe_load((ROOT / 'params.yaml').read_text())
    for k in ('train_dir', 'val_dir'): (tmp_path / p['prepare'][k]).mkdir(parents=True, exist_ok=True)
    p[section] = {**p[section], **bad}
    (tmp_path / 'params.yaml').write_text(yaml.safe_dump(p))
    with pytest.raises(ConfigError, match=says): check_params_file(tmp_path / 'params.yaml', tmp_path / 'check.json')
    assert not (tmp_path / 'check.json').exists()


# --- 4. a resume with other training settings is refused, and the record keeps the truth ---------------------

def test_resume_with_another_lr_is_refused_naming_the_keys(images, tmp_path):
    out = tmp_path / 'run'
    train(cfg(images, out, iters=4, ckpt_every=2, lr=2e-4, milestones=[2]))
    before = (out / RUN_CONFIG).read_bytes(), weights(out)
    r = subprocess.run([sys.executable, '-m', 'dckd.distill', '--config', str(out / RUN_CONFIG),
                        '--set', 'resume=true', '--set', 'lr=0.001', '--set', 'milestones=[3]', '--set', 'iters=6'],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2
    line = next((l for l in r.stderr.splitlines() if l.startswith('dckd_distill: error: cannot resume')), r.stderr[-2000:])
    assert 'lr=0.0002 (now 0.001)' in line and 'milestones=[2] (now [3])' in line and 'iters=' not in line, line
    assert (out / RUN_CONFIG).read_bytes() == before[0]   # the record still describes the run that is there
    # extending the same run (only iters grows) is a resume: the first iterations of a longer run are the same
    res = train(cfg(images, out, iters=6, ckpt_every=2, lr=2e-4, milestones=[2], resume=True))
    assert res['iter'] == 6 and yaml.safe_load((out / RUN_CONFIG).read_text())['iters'] == 6


def test_resume_refuses_changed_code_or_data(images, tmp_path, monkeypatch):
    out = tmp_path / 'run'
    train(cfg(images, out, iters=2, ckpt_every=1))
    fp = json.loads((out / RUN_FINGERPRINT).read_text())
    assert {'dckd.distill', 'dckd.losses', 'dckd.archs', 'dckd.vqgan'} <= set(fp['code']) and set(fp['data']) == {'train_hr'}
    st = load_state(out / 'state.pt'); st['iter'] = 1
    from dckd.checkpoint import save_state
    save_state(out / 'state.pt', {**st, 'fingerprint': {**fp, 'code': {**fp['code'], 'dckd.losses': 'other'}}})
    with pytest.raises(ConfigError, match=r'differs in code of dckd\.losses'):
        train(cfg(images, out, iters=2, ckpt_every=1, resume=True))


# --- 5. a kill between the two files of the final save -------------------------------------------------------

def test_kill_between_the_final_files_is_repaired(images, tmp_path, monkeypatch):
    ref = tmp_path / 'ref'; train(cfg(images, ref, iters=4, ckpt_every=2))
    out = tmp_path / 'cut'
    real = distill.save_state
    def dying(p, st):   # the final save: the weights are written, then the process dies before the state
        if Path(p).name == 'state.pt' and st['iter'] == 4: raise Kill()
        return real(p, st)
    monkeypatch.setattr(distill, 'save_state', dying)
    with pytest.raises(Kill): train(cfg(images, out, iters=4, ckpt_every=2, resume=True))
    monkeypatch.setattr(distill, 'save_state', real)
    assert load_state(out / 'state.pt')['iter'] == 2 and weights(out)[0] == 4
    res = train(cfg(images, out, iters=4, ckpt_every=2, resume=True))   # redoes 3 and 4
    assert res['iter'] == 4 and load_state(out / 'state.pt')['iter'] == 4
    (i, s, e), (_, s0, e0) = weights(out), weights(ref)
    assert i == 4 and same(s, s0) and same(e, e0)
    # files of the old order (state at 4, weights still at 2): the finished run rewrites its weights from the state
    early = tmp_path / 'early.pth'
    train(cfg(images, tmp_path / 'two', iters=2, ckpt_every=2)); shutil.copy(run_weights(tmp_path / 'two'), early)
    shutil.copy(early, run_weights(out))
    assert weights(out)[0] == 2
    train(cfg(images, out, iters=4, ckpt_every=2, resume=True))
    (i, s, e) = weights(out)
    assert i == 4 and same(s, s0) and same(e, e0)


# --- 6. a damaged checkpoint is refused, naming the damaged member --------------------------------------------

def test_damaged_checkpoint_refused_naming_the_member(images, tmp_path):
    out = tmp_path / 'run'
    train(cfg(images, out, iters=2, ckpt_every=1))
    b = bytearray((out / 'state.pt').read_bytes()); i = len(b) // 2; b[i:i + 64] = bytes(64)
    (out / 'state.pt').write_bytes(bytes(b))
    with pytest.raises(CheckpointError, match=r"state\.pt is damaged: its member '.*' fails its CRC-32 check"):
        train(cfg(images, out, iters=2, ckpt_every=1, resume=True))


# --- 7. float images outside [0, 1] or with NaN are refused, not clipped ------------------------------------

@pytest.mark.parametrize('fill, says', [(np.nan, '1 NaN/inf'), (3.5, 'outside [0, 1]'), (-0.25, 'range -0.25')])
def test_float_tiff_outside_the_contract_refused(tmp_path, fill, says):
    tifffile = pytest.importorskip('tifffile')   # installed with scikit-image
    x = np.random.default_rng(0).random((6, 5, 3)).astype(np.float32); x[2, 3, 1] = fill
    tifffile.imwrite(tmp_path / 'f.tif', x)
    with pytest.raises(ImageReadError, match=r'f\.tif: float pixel values must be finite and in \[0, 1\].*' + re.escape(says)):
        imread(tmp_path / 'f.tif')
    x[2, 3, 1] = 0.5; tifffile.imwrite(tmp_path / 'g.tif', x)
    assert np.array_equal(imread(tmp_path / 'g.tif'), x)   # a float image in [0, 1] reads exactly


# --- 8. a full disk under the optional teacher cache ---------------------------------------------------------

def test_full_disk_under_the_teacher_cache_warns_once_and_goes_on(images, tmp_path, monkeypatch):
    ref = train(cfg(images, tmp_path / 'plain', iters=3, losses=['pix', 'kd']))
    calls = []
    def full(p, st):
        calls.append(p); raise CheckpointWriteError(errno.ENOSPC, f'cannot write checkpoint {p}: No space left on device')
    monkeypatch.setattr(distill, 'save_state', lambda p, st: full(p, st) if '/cache/' in str(p) else dckd.checkpoint.save_state(p, st))
    import dckd.checkpoint
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        res = train(cfg(images, tmp_path / 'run_c', iters=3, losses=['pix', 'kd'], teacher_cache=str(tmp_path / 'cache')))
    msgs = [str(m.message) for m in w if 'teacher cache' in str(m.message)]
    assert len(msgs) == 1 and 'No space left on device' in msgs[0] and 'checkpoint' not in msgs[0], msgs
    assert len(calls) == 1 and res == ref
    assert same(weights(tmp_path / 'run_c')[2], weights(tmp_path / 'plain')[2])


# --- 10. the 16-bit PNG decoder takes what its message says ---------------------------------------------------

def _chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def test_png16_peak_memory_within_the_stated_bytes_per_pixel(tmp_path):
    h, w = 256, 320
    g = np.random.default_rng(0)
    rows = b''.join(bytes([i % 5]) + g.integers(0, 256, w * 6, dtype=np.uint8).tobytes() for i in range(h))   # every filter
    f = tmp_path / 'a.png'
    f.write_bytes(b'\x89PNG\r\n\x1a\n' + _chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0))
                  + _chunk(b'IDAT', zlib.compress(rows)) + _chunk(b'IEND', b''))
    tracemalloc.start()
    try: x = imread(f); peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    assert x.shape == (h, w, 3)
    per_px = peak / (h * w)
    print(f'16-bit PNG: peak {per_px:.1f} bytes per pixel (stated: {dckd.data.DECODE_BYTES_PER_PIXEL})')
    assert per_px <= dckd.data.DECODE_BYTES_PER_PIXEL
    with pytest.raises(ImageReadError, match=rf'at up to {dckd.data.DECODE_BYTES_PER_PIXEL} bytes per pixel'):
        dckd.data._check_pixels(20000, 20000, 'x.png')

"Fault battery, I/O (issue 13): image bombs, reproducible and full-disk checkpoint saves, refused pickles, dckd_upscale."
import argparse, errno, hashlib, io, json, os, pickle, struct, tempfile, traceback, tracemalloc, warnings, zlib
from collections import namedtuple
from pathlib import Path
import numpy as np
import pytest
import torch
from PIL import Image
import dckd.checkpoint, dckd.data, dckd.inference
from dckd.archs import PAN
from dckd.checkpoint import (CheckpointError, _torch_load, load_state, load_weights, read_state_dict, save_state,
                             save_weights)
from dckd.data import ImageReadError, PairedImageDataset, imread, imwrite
from dckd.inference import upscale_cli
from dckd.vqgan import F16_DDCONFIG, VQGAN, VQAutoencoder, load_taming, load_vq, save_vq

torch.set_num_threads(1)
SIG = b'\x89PNG\r\n\x1a\n'
Usage = namedtuple('Usage', 'total used free')


def tiny_vqgan(): return VQGAN(8, 16, dict(F16_DDCONFIG, ch=32, ch_mult=[1, 1], num_res_blocks=1, attn_resolutions=[],
                                           z_channels=8))


def _chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def _png(path, w, h, depth=16, ctype=2, idat=zlib.compress(b'\0' * 1000)):
    "A PNG whose header declares w x h pixels, followed by the given (here tiny) IDAT payload."
    ihdr = struct.pack('>IIBBBBB', w, h, depth, ctype, 0, 0, 0)
    path.write_bytes(SIG + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', idat) + _chunk(b'IEND', b''))
    return path


# --- 1. decompression bombs -------------------------------------------------------------------------------------

def test_png16_bomb_refused_from_the_header(tmp_path, monkeypatch):
    f = _png(tmp_path/'bomb.png', 30000, 30000)
    assert f.stat().st_size < 1000
    def no(*a, **k): raise AssertionError('pixel data decompressed')
    monkeypatch.setattr(zlib, 'decompress', no); monkeypatch.setattr(zlib, 'decompressobj', no)
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError) as e: imread(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    msg = str(e.value)
    for part in [str(f), '30000x30000', 'limit of 89,478,485', 'dckd.data.MAX_PIXELS =', 'decompression bomb']:
        assert part in msg, (part, msg)
    assert peak < 2**20, peak


def test_zlib_bomb_under_a_small_header_stops_at_the_declared_size(tmp_path):
    f = _png(tmp_path/'zb.png', 4, 3, idat=zlib.compress(bytes(20_000_000)))   # 20 KB that inflate to 20 MB
    tracemalloc.start()
    try:
        with pytest.raises(ImageReadError, match='more pixel data than the 4x3 header declares'): imread(f)
        peak = tracemalloc.get_traced_memory()[1]
    finally: tracemalloc.stop()
    assert peak < 2**20, peak


def test_pillow_path_errors_where_pillow_only_warns(tmp_path, monkeypatch):
    # Pillow warns between 1x and 2x its limit; ours is an error, for 8-bit files too, and emits no warning
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 1000)
    monkeypatch.setattr(dckd.data, 'MAX_PIXELS', 1000, raising=False)
    f = tmp_path/'a.png'; Image.new('RGB', (40, 40)).save(f)   # 1600 pixels
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(ImageReadError, match=r'40x40 = 1,600 pixels, more than the limit of 1,000'): imread(f)
        with pytest.raises(ImageReadError, match='40x40'): dckd.data._imsize(f)
    # one knob for every decoder: raising ours is enough, even past Pillow's hard (2x) limit
    monkeypatch.setattr(dckd.data, 'MAX_PIXELS', None)
    assert imread(f).shape == (40, 40, 3) and dckd.data._imsize(f) == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == 1000   # Pillow's own setting is left as it was


def test_tiff_bounded_too(tmp_path, monkeypatch):
    tifffile = pytest.importorskip('tifffile')
    f = tmp_path/'a.tif'; tifffile.imwrite(f, np.zeros((5, 6, 3), np.uint8))
    assert imread(f).shape == (5, 6, 3)
    monkeypatch.setattr(dckd.data, 'MAX_PIXELS', 29, raising=False)
    with pytest.raises(ImageReadError, match='6x5 = 30 pixels'): imread(f)


def test_dataset_header_check_refuses_bombs(tmp_path):
    (tmp_path/'hr').mkdir()
    _png(tmp_path/'hr'/'big.png', 30000, 30000)
    with pytest.raises(ImageReadError) as e: PairedImageDataset(tmp_path/'hr', scale=2, phase='val')
    assert 'big.png' in str(e.value) and 'MAX_PIXELS' in str(e.value) and '30000x30000' in str(e.value)


# --- 2. byte-reproducible checkpoints ---------------------------------------------------------------------------

def test_same_state_same_bytes_at_any_path(tmp_path):
    torch.manual_seed(0)
    net = PAN(scale=2, nf=4, unf=4, nb=1)
    (tmp_path/'a').mkdir(); (tmp_path/'b c').mkdir()
    f1 = save_weights(tmp_path/'a'/'net_g_1000.pth', net, iter=1000)
    f2 = save_weights(tmp_path/'b c'/'latest.pth', net, iter=1000)
    assert f1.read_bytes() == f2.read_bytes()
    assert hashlib.md5(f1.read_bytes()).hexdigest() == hashlib.md5(f2.read_bytes()).hexdigest()
    raw = torch.load(f2, map_location='cpu', weights_only=True)
    assert raw['iter'] == 1000 and torch.equal(raw['params']['conv_first.weight'], net.state_dict()['conv_first.weight'])
    back = load_weights(PAN(scale=2, nf=4, unf=4, nb=1), f2)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), net.state_dict().values()))
    state = dict(iter=3, net=net.state_dict(), rng=torch.get_rng_state(), hist=[0.5, 0.25])
    s1, s2 = save_state(tmp_path/'a'/'state.pt', state), save_state(tmp_path/'b c'/'resume.pt', state)
    assert s1.read_bytes() == s2.read_bytes() and load_state(s2)['hist'] == [0.5, 0.25]
    ae = VQAutoencoder(ch=32, ch_mult=(1, 1), attn_resolutions=(), z_channels=8, embed_dim=8, n_embed=16)
    v1, v2 = save_vq(tmp_path/'a'/'vq.pt', ae), save_vq(tmp_path/'b c'/'vq_other.pt', ae)
    assert v1.read_bytes() == v2.read_bytes() and load_vq(v2).config == ae.config
    assert sorted(p.name for p in tmp_path.rglob('*')) == sorted(['a', 'b c', 'net_g_1000.pth', 'latest.pth',
                                                                  'state.pt', 'resume.pt', 'vq.pt', 'vq_other.pt'])


# --- 3. full disk -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('fail', ['enospc', 'torch_writer'])
def test_full_disk_names_path_size_and_free_space(tmp_path, monkeypatch, fail):
    net = PAN(scale=2, nf=4, unf=4, nb=1)
    f = save_weights(tmp_path/'net_g.pth', net)
    old = f.read_bytes()
    new = {'params': {k: v + 1 for k, v in net.state_dict().items()}}
    buf = io.BytesIO(); torch.save({**new, 'params_ema': new['params']}, buf); n = len(buf.getvalue())
    real = torch.save
    def full_disk(obj, dst, *a, **k):   # the write to disk fails half way; serialising elsewhere still works
        if not isinstance(dst, (str, os.PathLike)): return real(obj, dst, *a, **k)
        b = io.BytesIO(); real(obj, b); Path(dst).write_bytes(b.getvalue()[:len(b.getvalue()) // 2])
        if fail == 'enospc': raise OSError(errno.ENOSPC, 'No space left on device')
        raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0')
    monkeypatch.setattr(torch, 'save', full_disk)
    monkeypatch.setattr(dckd.checkpoint.shutil, 'disk_usage', lambda p: Usage(10**6, 10**6 - 1234, 1234))
    with pytest.raises(CheckpointError) as e: save_weights(f, new['params'])
    msg = str(e.value)
    for part in [f'cannot write checkpoint {f}', f'{n:,} bytes', '1,234 bytes (1.2 KiB) free', 'the disk is full',
                 'No space left on device' if fail == 'enospc' else 'unexpected pos 64 vs 0']:
        assert part in msg, (part, msg)
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC
    assert f.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ['net_g.pth']


# --- 4. refused pickles -----------------------------------------------------------------------------------------

class Evil:
    def __init__(self, cmd): self.cmd = cmd
    def __reduce__(self): return (os.system, (self.cmd,))


def _loaders():
    return {'load_weights': lambda p: load_weights(PAN(scale=2, nf=4, unf=4, nb=1), p),
            'read_state_dict': read_state_dict, 'load_state': load_state, '_torch_load': lambda p: _torch_load(Path(p)),
            'load_taming': lambda p: load_taming(tiny_vqgan(), p), 'load_vq': load_vq}


@pytest.mark.parametrize('form', ['zip', 'legacy', 'pickle2'])
def test_malicious_checkpoint_refused_with_the_reason(tmp_path, form):
    pwned = tmp_path/'PWNED'
    obj = {'params': Evil(f'echo pwned > {pwned}'), 'state_dict': Evil(f'echo pwned > {pwned}')}
    f = tmp_path/f'evil_{form}.pth'
    if form == 'zip': torch.save(obj, f)
    elif form == 'legacy': torch.save(obj, f, _use_new_zipfile_serialization=False)
    else:
        with open(f, 'wb') as fh: pickle.dump(obj, fh, protocol=2)
    blocked = f'{os.system.__module__}.system'   # what the pickle records: posix.system on Linux
    if form != 'zip': assert blocked.replace('.', '\n').encode() in f.read_bytes()   # the GLOBAL opcode's operands
    for name, load in _loaders().items():
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', UserWarning)   # torch: 'Detected pickle protocol 2'
            with pytest.raises(ValueError) as e: load(f)
        msg, full = str(e.value), ''.join(traceback.format_exception(e.value))
        for part in [str(f), blocked, 'beyond tensors and plain containers', 'plain state dict']:
            assert part in msg, (name, part, msg)
        for bad in ['weights_only=False', 'set to `False`', 'will likely succeed']:
            assert bad not in full, (name, bad, full)
    assert not pwned.exists()


def test_pickled_options_object_named(tmp_path):
    f = tmp_path/'lightning.ckpt'
    torch.save({'state_dict': tiny_vqgan().state_dict(), 'hparams': argparse.Namespace(lr=1e-4)}, f)
    for name, load in _loaders().items():
        with pytest.raises(ValueError) as e: load(f)
        full = ''.join(traceback.format_exception(e.value))
        assert 'argparse.Namespace' in str(e.value) and 'weights_only=False' not in full, (name, full)
    with pytest.raises(ValueError) as e: load_taming(tiny_vqgan(), f)
    assert "['state_dict']" in str(e.value) and 'pytorch-lightning' in str(e.value)


# --- 5. dckd_upscale --------------------------------------------------------------------------------------------

CFG = json.dumps(dict(type='PAN', scale=2, nf=4, unf=4, nb=1))


@pytest.fixture
def cli(tmp_path, monkeypatch):
    "Run dckd_upscale with a tiny PAN; returns (exit status, stderr, number of images upscaled)."
    w = save_weights(tmp_path/'pan.pth', PAN(scale=2, nf=4, unf=4, nb=1))
    calls, real = [], dckd.inference.upscale
    monkeypatch.setattr(dckd.inference, 'upscale', lambda *a, **k: calls.append(1) or real(*a, **k))
    def run(*args):
        code = upscale_cli([*map(str, args), '--arch-config', CFG, '--weights', str(w), '--device', 'cpu'])
        return code, len(calls)
    (tmp_path/'in').mkdir()
    for name in ('photo.png', 'photo.jpg', 'other.png'): Image.new('RGB', (6, 5), (10, 20, 30)).save(tmp_path/'in'/name)
    return run


def test_cli_refuses_name_clashes_before_any_work(tmp_path, cli, capsys):
    code, n = cli(tmp_path/'in', '-o', tmp_path/'out')
    err = capsys.readouterr().err
    assert code == 2 and n == 0, err
    for part in ['photo.png', 'photo.jpg', str((tmp_path/'out'/'photo_x2.png').resolve()), 'nothing was upscaled']:
        assert part in err, (part, err)
    assert not (tmp_path/'out').exists()
    # an output that would overwrite its input
    (tmp_path/'in'/'photo.jpg').unlink()
    code, n = cli(tmp_path/'in', '-o', tmp_path/'in', '--suffix', '')
    err = capsys.readouterr().err
    assert code == 2 and n == 0 and 'would overwrite it' in err, err
    # no clash: all written, no probe file left behind
    code, n = cli(tmp_path/'in', '-o', tmp_path/'out')
    assert code == 0 and n == 2 and sorted(p.name for p in (tmp_path/'out').iterdir()) == ['other_x2.png', 'photo_x2.png']


@pytest.mark.parametrize('where', ['file', 'under_file', 'read_only'])
def test_cli_checks_the_output_folder_first(tmp_path, cli, capsys, monkeypatch, where):
    (tmp_path/'in'/'photo.jpg').unlink()
    (tmp_path/'taken').write_text('a file, not a folder')
    out = {'file': tmp_path/'taken', 'under_file': tmp_path/'taken'/'sub', 'read_only': tmp_path/'ro'}[where]
    if where == 'read_only':   # root ignores chmod: refuse file creation in that folder instead
        real = tempfile.NamedTemporaryFile
        def ro(*a, dir=None, **k):
            if dir is not None and Path(dir) == out: raise PermissionError(errno.EACCES, 'Permission denied')
            return real(*a, dir=dir, **k)
        monkeypatch.setattr(tempfile, 'NamedTemporaryFile', ro)
    code, n = cli(tmp_path/'in', '-o', out)
    err = capsys.readouterr().err
    assert code == 2 and n == 0, err
    assert f'cannot write to the output folder {out}' in err, err
    assert {'file': f'{tmp_path/"taken"} is a file, not a folder', 'under_file': f'{tmp_path/"taken"} is a file',
            'read_only': 'Permission denied'}[where] in err, err
    assert (tmp_path/'taken').read_text() == 'a file, not a folder'
    if where == 'read_only': assert not out.exists()   # the folder it made for nothing is removed

"Bad and unusual image files: each loads correctly or fails with an error that names the file."
import struct, zlib
import numpy as np, pytest
from PIL import Image
from dckd.data import imread, imwrite, ImageReadError, PairedImageDataset

SIG = b'\x89PNG\r\n\x1a\n'


def _chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def png16(path, a, filters=(0, 1, 2, 3, 4)):
    "Write uint16 (H,W,C) as a 16-bit PNG (C = 3 RGB, 4 RGBA), cycling the row filters so the decoder meets all five."
    h, w, c = a.shape
    bpp, raw = 2*c, a.astype('>u2').view(np.uint8).reshape(h, w*c*2).astype(np.int32)
    left = np.pad(raw, ((0, 0), (bpp, 0)))[:, :-bpp]
    up = np.pad(raw, ((1, 0), (0, 0)))[:-1]
    ul = np.pad(up, ((0, 0), (bpp, 0)))[:, :-bpp]
    p = left + up - ul; pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
    pred = [0*raw, left, up, (left + up)//2, np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))]
    rows = b''.join(bytes([f]) + ((raw[y] - pred[f][y]) & 255).astype(np.uint8).tobytes()
                    for y, f in ((y, filters[y % len(filters)]) for y in range(h)))
    ihdr = struct.pack('>IIBBBBB', w, h, 16, {3: 2, 4: 6}[c], 0, 0, 0)
    path.write_bytes(SIG + _chunk(b'IHDR', ihdr) + _chunk(b'IDAT', zlib.compress(rows)) + _chunk(b'IEND', b''))
    return path


@pytest.fixture
def rgb():
    return np.random.default_rng(0).integers(0, 256, (20, 24, 3)).astype(np.uint8)


def test_truncated_png(tmp_path, rgb):
    p = tmp_path/'cut.png'
    Image.fromarray(rgb).save(p)
    full = p.read_bytes()
    for n in (len(full)//2, len(full) - 30, len(full) - 1):
        p.write_bytes(full[:n])
        with pytest.raises(ImageReadError, match='cut.png'): imread(p)
    q = png16(tmp_path/'cut16.png', np.zeros((8, 8, 3), np.uint16))
    q.write_bytes(q.read_bytes()[:-20])
    with pytest.raises(ImageReadError, match='cut16.png'): imread(q)


def test_truncated_jpeg(tmp_path, rgb):
    p = tmp_path/'cut.jpg'
    Image.fromarray(rgb).save(p, quality=95)
    p.write_bytes(p.read_bytes()[:len(p.read_bytes())//2])
    with pytest.raises(ImageReadError, match='cut.jpg'): imread(p)


def test_text_and_empty_and_missing(tmp_path):
    (tmp_path/'notes.png').write_text('this is not an image\n')
    with pytest.raises(ImageReadError, match='notes.png'): imread(tmp_path/'notes.png')
    (tmp_path/'empty.png').write_bytes(b'')
    with pytest.raises(ImageReadError, match='empty.png.*empty'): imread(tmp_path/'empty.png')
    with pytest.raises(FileNotFoundError, match='gone.png'): imread(tmp_path/'gone.png')
    assert issubclass(ImageReadError, ValueError)


def test_one_pixel(tmp_path):
    d = tmp_path/'hr'
    imwrite(d/'dot.png', np.array([[[10, 200, 30]]], np.uint8))
    x = imread(d/'dot.png')
    assert x.shape == (1, 1, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x*255, [[[10, 200, 30]]])
    with pytest.raises(ValueError, match=r'dot\.png.*1x1.*smaller than a patch \(gt_size=16\)'):
        PairedImageDataset(d, scale=2, gt_size=16)
    with pytest.raises(ValueError, match=r'dot\.png.*smaller than the scale'):
        PairedImageDataset(d, scale=2, phase='val')


def test_16bit(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 65536, (13, 11, 3)).astype(np.uint16)
    a[5:9] = a[4]                                                  # flat rows: small filtered values too
    x = imread(png16(tmp_path/'rgb16.png', a))
    assert x.dtype == np.float32 and x.shape == (13, 11, 3)
    np.testing.assert_array_equal(np.round(x.astype(np.float64)*65535), a)   # every 16-bit level kept
    rgba = rng.integers(0, 65536, (6, 9, 4)).astype(np.uint16)
    np.testing.assert_array_equal(np.round(imread(png16(tmp_path/'rgba16.png', rgba, (4,)))*65535.), rgba[..., :3])
    g = rng.integers(0, 65536, (7, 5)).astype(np.uint16)
    Image.fromarray(g).save(tmp_path/'grey16.png')
    y = imread(tmp_path/'grey16.png')
    np.testing.assert_array_equal(np.round(y[..., 0].astype(np.float64)*65535), g)
    assert (y == y[..., :1]).all()


def test_grey_rgba_palette(tmp_path, rgb):
    Image.fromarray(rgb[..., 1]).save(tmp_path/'grey.png')
    x = imread(tmp_path/'grey.png')
    assert x.shape == (20, 24, 3) and (x == x[..., :1]).all()
    np.testing.assert_array_equal(x[..., 0]*255, rgb[..., 1])
    alpha = np.random.default_rng(2).integers(0, 256, rgb.shape[:2] + (1,)).astype(np.uint8)
    Image.fromarray(np.concatenate([rgb, alpha], -1), 'RGBA').save(tmp_path/'rgba.png')
    np.testing.assert_array_equal(imread(tmp_path/'rgba.png')*255, rgb)       # alpha dropped, colours untouched
    Image.fromarray(rgb).quantize(16).save(tmp_path/'pal.png')
    p = imread(tmp_path/'pal.png')
    assert p.shape == (20, 24, 3) and np.abs(p*255 - rgb).mean() < 40
    for ext in ('bmp', 'tif'):
        Image.fromarray(rgb).save(tmp_path/f'x.{ext}')
        np.testing.assert_array_equal(imread(tmp_path/f'x.{ext}')*255, rgb)


def test_mismatched_pair(tmp_path, rgb):
    hr, lr = tmp_path/'hr', tmp_path/'lr'
    imwrite(hr/'a.png', np.zeros((40, 40, 3), np.uint8))
    imwrite(lr/'ax2.png', np.zeros((19, 20, 3), np.uint8))       # should be 20x20
    for phase in ('train', 'val'):
        with pytest.raises(ValueError) as e: PairedImageDataset(hr, lr, scale=2, phase=phase, gt_size=16)
        msg = str(e.value)
        assert str(hr/'a.png') in msg and str(lr/'ax2.png') in msg and '40x40' in msg and '19x20' in msg
    (lr/'ax2.png').unlink()
    with pytest.raises(FileNotFoundError) as e: PairedImageDataset(hr, lr, scale=2, phase='val')
    assert str(hr/'a.png') in str(e.value) and str(lr/'ax2.png') in str(e.value)
    (tmp_path/'none').mkdir()
    with pytest.raises(ValueError, match='none: no images'): PairedImageDataset(tmp_path/'none', scale=2, gt_size=16)

"dckd.tasks on real benchmark folders: KAIR's denoising protocol against the FFDNet reference file (CBSD68), SR on Set5 as the evaluate stage scores it, and prepared folders that are the same bytes for the same seed."
import json
from pathlib import Path
import numpy as np
import pytest
import torch
from dckd.data import PairedImageDataset, imread, imwrite
from dckd.tasks import make_task, SRTask, DenoiseTask, DeblurTask, DerainTask, TASKS


@pytest.fixture(scope='module')
def ffdnet_ref(shared):
    return json.loads((shared/'fixtures'/'ffdnet_reference_psnr.json').read_text())


@pytest.mark.parametrize('sigma', [15, 25, 50])
def test_denoise_protocol_noisy_psnr(shared, ffdnet_ref, sigma):
    "KAIR's test protocol: the identity network scores every CBSD68 image's noisy input as the reference file does (1e-3 dB)"
    ref = ffdnet_ref['CBSD68'][str(sigma)]
    res = make_task({'type': 'denoise', 'sigma': sigma}).evaluate(torch.nn.Identity(), shared/'data'/'CBSD68')
    assert sorted(res['per_image']) == sorted(Path(f).stem for f in ref['images'])
    for f, (_, noisy) in ref['images'].items():
        assert abs(res['per_image'][Path(f).stem]['psnr'] - noisy) < 1e-3, f
    assert abs(res['psnr'] - ref['noisy_mean_psnr']) < 1e-3


def test_denoise_protocol_is_kair_global_seed(shared):
    "the noise of `pairs` is numpy's legacy stream re-seeded with 0 before each image (np.random.seed(0) + np.random.normal)"
    name, noisy, gt = next(DenoiseTask(25).pairs(shared/'data'/'CBSD68'))
    img = (imread(shared/'data'/'CBSD68'/f'{name}.png')*255).round().astype(np.uint8)
    x = np.float32(img/255.)
    st = np.random.get_state()
    try:
        np.random.seed(seed=0); x += np.random.normal(0, 25/255., x.shape)   # main_test_ffdnet.py, verbatim
    finally: np.random.set_state(st)
    assert noisy.dtype == np.float32 and np.array_equal(noisy, x) and np.array_equal(gt, np.float32(img/255.))


@pytest.mark.parametrize('scale', [2, 4])
def test_sr_evaluate_is_the_evaluate_stage(shared, scale):
    "SR through the task: exactly the evaluate stage's numbers (dckd.pipeline.evaluate_net) on Set5"
    from dckd.pipeline import evaluate_net, bicubic_net
    res = SRTask(scale).evaluate(bicubic_net(scale), shared/'data'/'Set5')
    assert res == evaluate_net(bicubic_net(scale), shared/'data'/'Set5', scale)
    assert set(res['per_image']) == {'baby', 'bird', 'butterfly', 'head', 'woman'}


def _src(tmp_path, n=3):
    import skimage.data
    im = skimage.data.astronaut()
    for i in range(n): imwrite(tmp_path/'src'/f'im{i}.png', im[60*i:60*i + 72, 90*i:90*i + 80])
    return tmp_path/'src'


def _files(d: Path) -> dict:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob('*')) if p.is_file()}


@pytest.mark.parametrize('cfg', [{'type': 'deblur'}, {'type': 'derain'}, {'type': 'deblur', 'motion_prob': 0.}])
def test_write_pairs_same_seed_same_bytes(tmp_path, cfg):
    "the same seed writes the same files byte for byte (kernels included); another seed other LQ images, the same GT"
    t, src = make_task(cfg), _src(tmp_path)
    for name, s in (('a', 0), ('b', 0), ('c', 1)): t.write_pairs(src, tmp_path/name, seed=s)
    a, b, c = (_files(tmp_path/name) for name in 'abc')
    assert a == b and len(a) == 3*(3 if t.type == 'deblur' else 2)
    assert all(c[k] == v for k, v in a.items() if k.startswith('target/'))
    assert all(c[k] != v for k, v in a.items() if not k.startswith('target/'))


def test_write_pairs_names_not_positions(tmp_path):
    "an image's degradation depends on the seed and its name: preparing a subset gives the same bytes for its images"
    t, src = DerainTask(), _src(tmp_path)
    t.write_pairs(src, tmp_path/'all'); t.write_pairs(src, tmp_path/'one', files=[src/'im2.png'])
    full, part = _files(tmp_path/'all'), _files(tmp_path/'one')
    assert part == {k: v for k, v in full.items() if 'im2' in k}


@pytest.mark.parametrize('cfg', [{'type': 'denoise', 'sigma': 25}, {'type': 'deblur'}, {'type': 'derain'}])
def test_same_size_pairs_train_with_scale_1(tmp_path, cfg):
    "PairedImageDataset(scale=1, filename_tmpl='{}') on a prepared folder: aligned patches (train) and whole pairs (val)"
    t, src = make_task(cfg), _src(tmp_path)
    t.write_pairs(src, tmp_path/'set', seed=0)
    kw = t.dataset_kwargs(tmp_path/'set')
    assert kw['scale'] == 1 and kw['filename_tmpl'] == '{}'
    val = PairedImageDataset(**kw, phase='val')
    pairs = {n: (lq, gt) for n, lq, gt in t.pairs(tmp_path/'set')} if not t.fresh_lq else None
    for it in val:
        name = Path(it['gt_path']).stem
        assert it['lq'].shape == it['gt'].shape
        if pairs: assert torch.equal(it['lq'], torch.from_numpy(pairs[name][0]).permute(2, 0, 1))
    tr = PairedImageDataset(**kw, phase='train', gt_size=24, seed=0)
    for i in range(len(tr)):
        it = tr[i]
        assert it['lq'].shape == it['gt'].shape == (3, 24, 24)
        if t.fresh_lq: assert torch.equal(it['lq'], it['gt'])   # (gt, gt): the trainer replaces the LQ with `degrade`
    if not t.fresh_lq:   # the same crop and flips for both: the LQ patch is the LQ image at the GT patch's place
        it, (lq, gt) = tr[0], pairs[Path(tr[0]['gt_path']).stem]
        g, q = it['gt'].permute(1, 2, 0).numpy(), it['lq'].permute(1, 2, 0).numpy()
        hits = [(y, x, f) for f in range(8) for y in range(gt.shape[0] - 23) for x in range(gt.shape[1] - 23)
                if np.array_equal(_dihedral(gt[y:y + 24, x:x + 24], f), g)]
        assert hits and any(np.array_equal(_dihedral(lq[y:y + 24, x:x + 24], f), q) for y, x, f in hits)


def _dihedral(x, f):
    if f & 1: x = x[:, ::-1]
    if f & 2: x = x[::-1]
    if f & 4: x = x.transpose(1, 0, 2)
    return x


def test_sr_write_pairs_is_prepare_split(tmp_path):
    "SR's write_pairs is the prepare stage's prepare_split: the same files, byte for byte, and the same summary"
    from dckd.pipeline import prepare_split
    src = _src(tmp_path)
    s = SRTask(3).write_pairs(src, tmp_path/'a', crop_size=48, step=24)
    assert s == {**prepare_split(src, tmp_path/'b', 3, crop_size=48, step=24), 'hr_dir': s['hr_dir'], 'lr_dir': s['lr_dir']}
    assert _files(tmp_path/'a') == _files(tmp_path/'b') and len(_files(tmp_path/'a')) > 6


def test_denoise_prepared_folder_holds_clean_images_only(tmp_path):
    s = DenoiseTask(15).write_pairs(_src(tmp_path), tmp_path/'set')
    assert s['lq_dir'] is None and sorted(p.name for p in (tmp_path/'set').iterdir()) == ['HR']
    assert [n for n, *_ in DenoiseTask(15).pairs(tmp_path/'set')] == ['im0', 'im1', 'im2']   # read back through HR/


def test_degrade_uses_the_generator():
    t, x = DenoiseTask(50), torch.rand(2, 3, 16, 16)
    g = torch.Generator().manual_seed(3)
    a, b = t.degrade(x, g), t.degrade(x, g)
    assert not torch.equal(a, b)                                             # fresh noise at every call
    assert torch.equal(a, t.degrade(x, torch.Generator().manual_seed(3)))   # ... reproducible from the seed
    assert a.dtype == x.dtype and (a.max() > 1 or a.min() < 0)             # not clipped


@pytest.mark.parametrize('cfg, msg', [
    ({'type': 'sr'}, None), ({'type': 'denoise', 'sigma': 50}, None), ({'type': 'deblur', 'kernel_size': 21}, None),
    ({'type': 'derain', 'angle': 10}, None),
    ({'scale': 2}, "task key 'type': got None; expected one of sr, denoise, deblur, derain"),
    ({'type': 'SR'}, "expected one of sr, denoise"),
    ({'type': 'denoise', 'scale': 2}, "task 'denoise': unknown key 'scale'; accepted keys: sigma"),
    ({'type': 'denoise', 'sigma': '25'}, "task key 'sigma': got '25'; expected a number >= 0"),
    ({'type': 'sr', 'scale': True}, "task key 'scale'"),
    ({'type': 'deblur', 'motion_prob': 1.5}, "task key 'motion_prob': got 1.5; expected a number >= 0.0 and <= 1.0"),
    ({'type': 'deblur', 'gauss_sigma': 2}, "task key 'gauss_sigma': got 2; expected a [low, high] pair"),
    ({'type': 'derain', 'length': [30, 10]}, "task key 'length': got [30, 10]; expected low <= high"),
])
def test_make_task_checks(cfg, msg):
    if msg is None:
        t = make_task(cfg)
        assert make_task(t.to_dict()) == t and t.to_dict()['type'] == cfg['type']
    else:
        with pytest.raises(ValueError, match=__import__('re').escape(msg)): make_task(cfg)

"Integration checks of dckd.data on ../shared: MATLAB bicubic regenerates Set5 LR_bicubic; sub-images and datasets on Kodak24."
import shutil
import numpy as np, pytest, torch
from dckd.data import (imread, imresize, mod_crop, img2tensor, extract_subimages, list_images,
                       PairedImageDataset)

SET5 = ['baby', 'bird', 'butterfly', 'head', 'woman']
u8 = lambda x: np.round(np.clip(x, 0, 1)*255)

pytestmark = pytest.mark.usefixtures('one_thread')


@pytest.mark.parametrize('name', SET5)
@pytest.mark.parametrize('scale', [2, 3, 4])
def test_set5_lr_regenerated(shared, scale, name):
    "imresize(mod_crop(HR), 1/s), rounded to uint8, is the published MATLAB LR image up to MATLAB's uint8 passes."
    set5 = shared/'data'/'Set5'
    hr = mod_crop(imread(set5/'HR'/f'{name}.png'), scale)
    ref = u8(imread(set5/'LR_bicubic'/f'X{scale}'/f'{name}x{scale}.png'))
    lr = u8(imresize(hr, 1/scale))
    assert lr.shape == ref.shape
    d = np.abs(lr - ref)
    print(f'x{scale} {name}: mean |diff| {d.mean():.4f}, max {d.max():.0f}')
    assert d.mean() <= 0.25 and d.max() <= 2, (name, scale, d.mean(), d.max())


def test_set5_val_dataset(shared):
    "The published LR folder pairs with HR by BasicSR names, sizes agree, items are whole mod-cropped images."
    set5 = shared/'data'/'Set5'
    for s in (2, 3, 4):
        ds = PairedImageDataset(set5/'HR', set5/'LR_bicubic'/f'X{s}', scale=s, phase='val')
        assert len(ds) == 5
        for i in range(len(ds)):
            it = ds[i]
            assert it['lq_path'].endswith(f'{ds.hr[i].stem}x{s}.png')
            assert it['gt'].shape[1:] == (it['lq'].shape[1]*s, it['lq'].shape[2]*s)
            assert torch.equal(it['gt'], img2tensor(mod_crop(imread(it['gt_path']), s)))


@pytest.fixture(scope='module')
def kodak2(shared, tmp_path_factory):
    "Two Kodak24 images in a folder of their own."
    d = tmp_path_factory.mktemp('kodak2')
    for n in ('kodim05.png', 'kodim23.png'): shutil.copy(shared/'data'/'Kodak24'/n, d/n)
    return d


def test_kodak_subimages(kodak2, tmp_path):
    "BasicSR positions: 500 px, crop 240, step 120 -> 0, 120, 240 and the edge-flush 260; crops are exact."
    out = extract_subimages(kodak2, tmp_path/'sub', crop_size=240, step=120)
    assert len(out) == 2*16 and out == list_images(tmp_path/'sub')
    assert [p.name for p in out[:2]] == ['kodim05_s001.png', 'kodim05_s002.png']
    src = imread(kodak2/'kodim23.png')
    pos = [(t, l) for t in (0, 120, 240, 260) for l in (0, 120, 240, 260)]
    for k in (0, 5, 15):
        t, l = pos[k]
        np.testing.assert_array_equal(imread(tmp_path/'sub'/f'kodim23_s{k + 1:03d}.png'), src[t:t + 240, l:l + 240])
    assert not [p for p in (tmp_path/'sub').iterdir() if p.name.startswith('.')]   # no temporary files left
    few = extract_subimages(kodak2, tmp_path/'few', crop_size=480, step=240, thresh_size=30)
    assert len(few) == 2                                           # 500-480 = 20 <= 30: no edge crop


def test_kodak_train_dataset(kodak2, tmp_path):
    "Patches are reproducible, aligned, epoch-dependent, independent of access order; the LR cache is written once."
    kw = dict(scale=4, gt_size=96, seed=7, cache_dir=tmp_path/'cache')
    ds = PairedImageDataset(kodak2, **kw)
    a = [ds[i] for i in (1, 0)]                                    # order of access does not matter
    ds2 = PairedImageDataset(kodak2, **kw)                         # reads the cached LR files
    assert sorted(p.name for p in (tmp_path/'cache').iterdir()) == ['kodim05x4.png', 'kodim23x4.png']
    for it, j in zip(a, (1, 0)):
        b = ds2[j]
        assert it['gt'].shape == (3, 96, 96) and it['lq'].shape == (3, 24, 24)
        assert torch.equal(it['gt'], b['gt']) and torch.equal(it['lq'], b['lq'])
        # the LR patch is the bicubic of the HR patch away from its border (augmentation applied to both)
        torch.testing.assert_close(imresize(it['gt'], 1/4)[:, 3:-3, 3:-3], it['lq'][:, 3:-3, 3:-3], atol=2/255, rtol=0)
    ds2.set_epoch(1)
    assert not torch.equal(ds2[0]['gt'], a[1]['gt'])
    # without augmentation the patch sits on the LR grid of the full image
    ds3 = PairedImageDataset(kodak2, scale=4, gt_size=96, seed=7, use_hflip=False, use_rot=False)
    it = ds3[0]
    gt = img2tensor(mod_crop(imread(ds3.hr[0]), 4))
    lq = img2tensor(ds3._lq(0, mod_crop(imread(ds3.hr[0]), 4)))
    hits = [(t, l) for t in range(0, gt.shape[1] - 95, 4) for l in range(0, gt.shape[2] - 95, 4)
            if torch.equal(gt[:, t:t + 96, l:l + 96], it['gt'])]
    assert len(hits) == 1
    t, l = hits[0]
    assert torch.equal(lq[:, t//4:t//4 + 24, l//4:l//4 + 24], it['lq'])

"Bicubic upsampling of the Set5 LR images scores the classic table with dckd.metrics (Y channel, border = scale)."
import numpy as np, pytest, torch
from dckd.data import imread, imresize, mod_crop, imwrite, img2tensor
from dckd.metrics import calculate_psnr, calculate_ssim, calculate_psnr_pt, calculate_ssim_pt, evaluate_folder

SET5 = ['baby', 'bird', 'butterfly', 'head', 'woman']
TABLE = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}   # METHOD.md "Facts for checking"

pytestmark = pytest.mark.usefixtures('one_thread')


def bicubic(shared, scale):
    "{name: (sr, hr)} in [0,255] levels: sr = imresize(LR, scale) rounded, hr = mod-cropped HR."
    set5 = shared/'data'/'Set5'
    out = {}
    for n in SET5:
        lr = imread(set5/'LR_bicubic'/f'X{scale}'/f'{n}x{scale}.png')
        hr = mod_crop(imread(set5/'HR'/f'{n}.png'), scale)
        out[n] = np.round(np.clip(imresize(lr, scale), 0, 1)*255), np.round(hr*255)
    return out


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_bicubic_set5_table(shared, scale, tmp_path):
    pairs = bicubic(shared, scale)
    psnr = np.mean([calculate_psnr(sr, hr, scale, test_y_channel=True) for sr, hr in pairs.values()])
    ssim = np.mean([calculate_ssim(sr, hr, scale, test_y_channel=True) for sr, hr in pairs.values()])
    print(f'bicubic x{scale}: {psnr:.4f} dB / {ssim:.5f} (table {TABLE[scale]})')
    assert abs(psnr - TABLE[scale][0]) <= 0.05 and abs(ssim - TABLE[scale][1]) <= 0.001, (psnr, ssim)
    # the same numbers from a folder of SR images
    for n, (sr, _) in pairs.items(): imwrite(tmp_path/f'{n}.png', sr.astype(np.uint8))
    r = evaluate_folder(tmp_path, shared/'data'/'Set5'/'HR', scale)
    assert sorted(r['per_image']) == SET5
    assert r['psnr'] == pytest.approx(psnr, abs=1e-9) and r['ssim'] == pytest.approx(ssim, abs=1e-9)
    # and from the tensor twins, image by image
    for n, (sr, hr) in pairs.items():
        t, t2 = img2tensor(sr/255)[None], img2tensor(hr/255)[None]
        assert calculate_psnr_pt(t, t2, scale, True).item() == pytest.approx(r['per_image'][n]['psnr'], abs=1e-6)
        assert calculate_ssim_pt(t, t2, scale, True).item() == pytest.approx(r['per_image'][n]['ssim'], abs=1e-6)

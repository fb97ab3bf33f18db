"End-to-end: the released PAN weights through dckd.archs, dckd.data and dckd.metrics reproduce the authors' Set5 log."
import json
import numpy as np
import pytest
import torch
from dckd.archs import build_net
from dckd.data import imread, mod_crop, img2tensor, tensor2img
from dckd.metrics import calculate_psnr, calculate_ssim

NAMES = ['baby', 'bird', 'butterfly', 'head', 'woman']


def _u8(img: np.ndarray) -> np.ndarray: return np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)


@pytest.fixture(scope='module')
def reference(shared): return json.loads((shared/'fixtures'/'pan_reference_psnr.json').read_text())


@pytest.fixture(scope='module')
def pan_cfg(shared): return json.loads((shared/'fixtures'/'pan_keys.json').read_text())['models']


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_pan_set5_matches_authors_log(shared, reference, pan_cfg, scale):
    n = torch.get_num_threads(); torch.set_num_threads(2)
    try:
        net = build_net({'type': 'PAN', **pan_cfg[f'PANx{scale}_DF2K.pth']['constructor_kwargs']}).eval()
        net.load_state_dict(torch.load(shared/'weights'/f'PANx{scale}_DF2K.pth', map_location='cpu', weights_only=True),
                            strict=True)
        ref = reference['models'][f'PANx{scale}_DF2K']['datasets']['Set5']
        assert sorted(ref['images']) == NAMES
        psnrs, ssims = [], []
        for name in NAMES:
            lr = imread(shared/'data'/'Set5'/'LR_bicubic'/f'X{scale}'/f'{name}x{scale}.png')
            hr = _u8(mod_crop(imread(shared/'data'/'Set5'/'HR'/f'{name}.png'), scale))
            with torch.no_grad(): sr = _u8(tensor2img(net(img2tensor(lr)[None])))
            assert sr.shape == hr.shape, name
            p = calculate_psnr(sr, hr, crop_border=scale, test_y_channel=True)
            s = calculate_ssim(sr, hr, crop_border=scale, test_y_channel=True)
            psnrs.append(p); ssims.append(s)
            row = dict(zip(reference['image_columns'], ref['images'][name]))  # psnr, ssim, psnr_y, ssim_y
            print(f'x{scale} {name:9s} PSNR_Y {p:.6f} (log {row["psnr_y"]:.6f}, {p - row["psnr_y"]:+.1e})  '
                  f'SSIM_Y {s:.6f} (log {row["ssim_y"]:.6f}, {s - row["ssim_y"]:+.1e})')
            assert abs(p - row['psnr_y']) <= 0.02, (name, p, row['psnr_y'])
            assert abs(s - row['ssim_y']) <= 2e-4, (name, s, row['ssim_y'])
        mp, ms = float(np.mean(psnrs)), float(np.mean(ssims))
        print(f'x{scale} mean PSNR_Y {mp:.6f} (log {ref["average_y"]["psnr_y"]})  SSIM_Y {ms:.6f} (log {ref["average_y"]["ssim_y"]})')
        assert abs(mp - ref['average_y']['psnr_y']) <= 0.01
        assert abs(ms - ref['average_y']['ssim_y']) <= 2e-4
    finally:
        torch.set_num_threads(n)

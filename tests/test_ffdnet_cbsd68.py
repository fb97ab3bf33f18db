"The real denoising teacher through the project: FFDNet colour (KAIR's port) on CBSD68 by KAIR's test protocol."
import json
import pytest
import torch
from dckd.archs import build_net
from dckd.checkpoint import load_weights
from dckd.pipeline import evaluate_net


@pytest.mark.parametrize('sigma', [15, 25, 50])
def test_ffdnet_cbsd68_every_image(shared, sigma):
    "`evaluate_net(net, CBSD68, task)` = the official code's PSNR on every image (1e-3 dB) and its mean (33.8788 / 31.2198 / 27.9740)"
    ref = json.loads((shared/'fixtures'/'ffdnet_reference_psnr.json').read_text())
    net = load_weights(build_net({'type': 'ffdnet_color', 'sigma': sigma}), shared/'weights'/'FFDNet_color.pth', key=None)
    n = torch.get_num_threads(); torch.set_num_threads(2)
    try: res = evaluate_net(net, shared/'data'/'CBSD68', {'type': 'denoise', 'sigma': sigma})
    finally: torch.set_num_threads(n)
    want = ref['CBSD68'][str(sigma)]
    got = {k: v['psnr'] for k, v in res['per_image'].items()}
    assert sorted(got) == sorted(k.rsplit('.', 1)[0] for k in want['images'])
    bad = {k: (got[k.rsplit('.', 1)[0]], d) for k, (d, _) in want['images'].items() if abs(got[k.rsplit('.', 1)[0]] - d) > 1e-3}
    assert not bad, f'{len(bad)} images off by more than 1e-3 dB: {dict(list(bad.items())[:5])}'
    assert abs(res['psnr'] - want['mean_psnr']) < 1e-3, (res['psnr'], want['mean_psnr'])
    print(f"sigma {sigma}: CBSD68 {res['psnr']:.4f} dB (official {want['mean_psnr']:.4f}), SSIM {res['ssim']:.4f}")

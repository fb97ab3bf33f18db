"The experiment profiles in profiles/: their overrides name real parameters, their errors are readable."
import os, re, subprocess, sys
from pathlib import Path
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAN = ROOT / 'profiles' / 'pan_x2.sh'


def overrides(script: Path) -> list:
    "The `-S key=value` overrides of a profile script (shell variables expanded to a placeholder)."
    text = '\n'.join(l for l in script.read_text().splitlines() if not l.lstrip().startswith('#')).replace('\\\n', ' ')
    return [m.group(1) or m.group(2) for m in re.finditer(r"""-S\s+(?:["']([^"']+)["']|(\S+))""", text)]


def test_pan_overrides_name_params_keys():
    params = yaml.safe_load((ROOT / 'params.yaml').read_text())
    keys = [o.split('=', 1)[0] for o in overrides(PAN)]
    assert len(keys) >= 20, keys
    for k in keys:
        if k.startswith('+'): continue   # Hydra: a new key
        d = params
        for part in k.split('.'):
            assert isinstance(d, dict) and part in d, f'{PAN.name}: -S {k}: params.yaml has no such key'
            d = d[part]
    ov = dict(o.split('=', 1) for o in overrides(PAN))
    assert yaml.safe_load(ov['ablation.variants']) == \
        ['scratch', 'kd', 'kd_lcr', 'kd_dcr', 'kd_dmm', 'dckd', 'dckd_official_ce']
    assert yaml.safe_load(ov['ablation.seeds']) == [0, 1, 2]


def test_pan_variants_exist():
    from dckd.pipeline import VARIANTS
    ov = dict(o.split('=', 1) for o in overrides(PAN))
    assert set(yaml.safe_load(ov['ablation.variants'])) <= set(VARIANTS)


def test_pan_without_shared_data_says_what_is_missing(tmp_path):
    r = subprocess.run(['bash', str(PAN)], env={**os.environ, 'SHARED': str(tmp_path / 'nowhere')},
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert 'nowhere/weights/PANx2_DF2K.pth not found' in r.stderr and 'data/Kodak24' in r.stderr, r.stderr


def test_gpu_rows_scale_every_iteration_key():
    sys.path.insert(0, str(ROOT / 'profiles'))
    from pan_x2_gpu import scaled_config
    c = dict(iters=400, milestones=[280, 360], history_steps=[25, 50, 75], history_period=100, ckpt_every=100,
             log_every=10, val_every=100, lr=0.002, batch=8, device='auto', out_dir='x')
    s = scaled_config(c, 10, 'runs/kd_s0')
    assert (s['iters'], s['milestones'], s['history_steps'], s['history_period']) == (4000, [2800, 3600], [250, 500, 750], 1000)
    assert (s['lr'], s['batch'], s['device'], s['out_dir'], s['val_every']) == (0.002, 8, 'cuda', 'runs/kd_s0', 0)
    assert c['iters'] == 400   # the CPU configuration is not modified


def test_gpu_rows_summary(tmp_path):
    import json
    sys.path.insert(0, str(ROOT / 'profiles'))
    from pan_x2_gpu import summarize
    run = lambda p, it=4000: dict(psnr=p, ssim=0.95, iters=it, planned=4000, train_s=10., device='GPU X')
    f = tmp_path / 'rows.json'
    f.write_text(json.dumps(dict(factor=10, wall_s=1, runs={'kd_s0': run(36.0), 'kd_s1': run(36.2),
                                                              'dckd_s0': run(36.0), 'dckd_s1': run(36.2),
                                                              'dckd_s2': dict(error='exit -9')})))
    md = summarize([f])
    assert '| kd | 2 | 36.10 ± 0.14 |' in md, md
    assert '| dckd | 2 | 36.10 ± 0.14 |' in md and '+0.00 ± 0.00 |' in md, md   # gains paired by seed
    assert 'dckd seed 0: 4000/4000 iterations' in md and 'dckd_s2' in md and 'failed' in md, md
    # a run stopped short (by the device time limit) is not compared: the table refuses and says how to finish it
    f.write_text(json.dumps(dict(factor=10, wall_s=1, runs={'kd_s0': run(36.0), 'dckd_s0': run(36.1, 3900)})))
    with pytest.raises(SystemExit, match='dckd_s0 .*3900/4000'): summarize([f])

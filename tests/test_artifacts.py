"""The stage-artifact contract (issue 14): `dckd.artifacts` is the one place that names the files stages hand each
other. A stage notebook, another dckd module or a profile that spells one of those names fails here; and what each
stage writes loads back."""
import json, re
from pathlib import Path
import pytest, torch, yaml
import dckd.artifacts as A
from dckd.archs import build_net, resolve_arch

ROOT = Path(__file__).resolve().parents[1]

# --- no file name of another stage's output outside dckd.artifacts ---
# Every public upper-case string constant of dckd.artifacts is a name of the contract ('models/net_g_latest.pth'
# gives 'models' and 'net_g_latest.pth'). A name with an extension is a file: found anywhere in a file (comments
# included). A name without one is a folder of a layout ('HR', 'LR', 'models'): found where code joins it into a
# path (`out/'HR'`, 'train/HR', f'train/LR/X{s}'), not in prose ('HR/LR pairs') or as a label (`hr='HR'`); folder names are
# looked for in Python code only, since the shell profiles name the user's benchmark folders (`Set5/HR`) as inputs.
NAMES = sorted({part for k, v in vars(A).items() if k.isupper() and not k.startswith('_') and isinstance(v, str)
                for part in v.split('/')})
FILES = [n for n in NAMES if '.' in n]
DIRS = [n for n in NAMES if '.' not in n]

def _file_re(n): return re.compile(rf'(?<![\w.-]){re.escape(n)}(?![\w-])')
def _dir_re(n):
    e = re.escape(n)
    return re.compile(rf"""/\s*['"]{e}['"/]|/{e}(?=['"/])""")

def spelled(text:str, code:bool=True)->list:
    "The contract's names that `text` spells (folder names only when `code`)."
    return sorted({n for n in FILES if _file_re(n).search(text)} | ({n for n in DIRS if _dir_re(n).search(text)} if code else set()))

# The contract itself, and nbdev's index of it (which quotes its source).
EXCLUDED = {'dckd/artifacts.py', 'dckd/_modidx.py'}
def _sources():
    "(path, text, is code) of every file the contract covers: stage notebooks (code cells), dckd, profiles."
    for p in sorted((ROOT/'nbs'/'pipeline').glob('*.ipynb')):
        cells = json.loads(p.read_text())['cells']
        yield p, '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'code'), True
    for p in sorted((ROOT/'dckd').glob('*.py')): yield p, p.read_text(), True
    for p in sorted((ROOT/'profiles').iterdir()):
        if p.is_file(): yield p, p.read_text(errors='replace'), p.suffix == '.py'

def test_the_names_come_from_the_module():
    assert {'teacher.pth', 'arch.json', 'vqgan.json', 'vqgan.pth', 'config.yaml', 'net_g_latest.pth', 'summary.json'} <= set(FILES)
    assert {'HR', 'LR', 'models'} <= set(DIRS)

def test_the_checker_can_fail():
    assert spelled("w = Path(teacher_dir)/'teacher.pth'") == ['teacher.pth']
    assert spelled("# the teacher stage's folder (teacher.pth, arch.json)") == ['arch.json', 'teacher.pth']
    assert spelled('cp "$r/config.yaml" "$r/summary.json" out/', code=False) == ['config.yaml', 'summary.json']
    assert spelled("lr = data/'train'/'LR'/f'X{scale}'") == ['LR']
    assert spelled("str(data/f'train/LR/X{scale}')") == ['LR'] and spelled("list_images(d/'val/HR')") == ['HR']
    assert spelled("run/'models'/'net_g_latest.pth'") == ['models', 'net_g_latest.pth']
    # what is not a spelling of the contract: prose, labels, other files that share a stem
    assert spelled("> HR/LR pairs of the images; hr:str='HR', lr='LR'; f'HR/LR size mismatch'") == []
    assert spelled("write_json(out/'history.json', h); run_summary.json; my_config.yaml") == []

def test_no_file_spells_a_stage_file_name():
    found = {}
    for p, text, code in _sources():
        rel = p.relative_to(ROOT).as_posix()
        if rel in EXCLUDED: continue
        if names := spelled(text, code): found[rel] = names
    assert not found, f'files spell names that only dckd.artifacts may (use its constants and functions): {found}'

# --- what a stage writes loads back ---
EDSR = dict(type='EDSR', num_in_ch=3, num_out_ch=3, num_feat=8, num_block=1, img_range=1.)

def _same(a, b): return a.state_dict().keys() == b.state_dict().keys() and all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())

def test_teacher_round_trip(tmp_path):
    arch = resolve_arch(EDSR, None, 2, 'teacher.arch')
    torch.manual_seed(0); net = build_net(arch)
    assert A.save_teacher(tmp_path/'t', net, arch) == tmp_path/'t'
    spec = A.teacher_spec(tmp_path/'t')
    assert spec == dict(teacher=arch, teacher_weights=str(tmp_path/'t'/A.TEACHER_WEIGHTS), teacher_key='params')
    assert _same(A.load_teacher(tmp_path/'t'), net)
    (tmp_path/'t'/A.TEACHER_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{tmp_path/'t'}: no {A.TEACHER_WEIGHTS} here")): A.load_teacher(tmp_path/'t')

def test_feature_space_round_trip(tmp_path):
    from dckd.vqgan import VQAutoencoder, VQGAN, load_taming
    torch.manual_seed(0)
    ae = VQAutoencoder(ch=32, ch_mult=[1, 1, 2, 1, 1], num_res_blocks=1, attn_resolutions=[], z_channels=16, embed_dim=16, n_embed=32)
    spec = A.save_feature_space(tmp_path/'vq', ae, last={'it': 3})
    assert json.loads((tmp_path/'vq'/A.FEATURE_SPACE_SPEC).read_text()) == spec == dict(kind='vq', path=str(tmp_path/'vq'/A.FEATURE_SPACE_WEIGHTS), last={'it': 3})
    assert A.feature_space_spec(tmp_path/'vq') == dict(vqgan_kind='vq', vqgan_weights=spec['path'])
    assert _same(A.load_feature_space(tmp_path/'vq'), ae.as_vqgan())
    torch.save(ae.as_vqgan().state_dict(), tmp_path/'taming.ckpt')
    vq = VQGAN(16, 32, ae.ddconfig); rep = load_taming(vq, tmp_path/'taming.ckpt')
    A.save_feature_space(tmp_path/'tm', vq, taming=tmp_path/'taming.ckpt', report=rep)
    assert not (tmp_path/'tm'/A.FEATURE_SPACE_WEIGHTS).exists()   # referenced, not copied
    assert A.feature_space_spec(tmp_path/'tm')['vqgan'] == dict(embed_dim=16, n_embed=32, ddconfig=ae.ddconfig)
    assert _same(A.load_feature_space(tmp_path/'tm'), ae.as_vqgan())

def test_run_folder_round_trip(tmp_path):
    from dckd.checkpoint import save_weights
    from dckd.core import atomic_write_text
    run = tmp_path/'abl'/'kd_s1'
    atomic_write_text(run/A.RUN_CONFIG, yaml.safe_dump(dict(scale=2, student=EDSR, seed=1)))
    torch.manual_seed(1); s, e = (build_net(resolve_arch(EDSR, None, 2, 'student')) for _ in range(2))
    save_weights(A.run_weights(run), s, e)
    assert _same(A.load_run_net(run), e) and _same(A.load_run_net(run, key='params'), s)
    assert A.run_summaries(tmp_path/'abl') == {}
    A.write_run_summary(run, 'kd', 1, {'val/psnr': 30.25})
    assert A.run_summaries(tmp_path/'abl') == {run: dict(variant='kd', seed=1, **{'val/psnr': 30.25})}
    with pytest.raises(FileNotFoundError, match='not a dckd.distill run folder'): A.load_run_net(tmp_path/'abl')

def test_the_trainer_writes_a_run_folder_of_the_contract(tmp_path):
    "A real (one-iteration) run: its folder is what `run_config`, `run_weights` and `load_run_net` read."
    from dckd.distill import train, tiny_config
    from dckd.pipeline import demo_prepared
    prep = demo_prepared(tmp_path/'prep')
    d = A.pairs_spec(prep, 2)
    train(tiny_config(iters=1, train_hr=d['train_hr'], train_lr=d['train_lr'], out_dir=str(tmp_path/'run')))
    assert A.run_config(tmp_path/'run')['iters'] == 1 and A.run_weights(tmp_path/'run').is_file()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad(): assert A.load_run_net(tmp_path/'run').eval()(x).shape == (1, 3, 16, 16)

def test_pipeline_reexports_what_moved():
    import dckd.pipeline as P
    assert P.load_run_net is A.load_run_net and P.write_json is A.write_json and P.lr_folder is A.lr_folder

def test_import_is_light():
    import subprocess, sys
    out = subprocess.run([sys.executable, '-c', 'import sys, dckd.artifacts; print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "numpy", "yaml") or m.startswith("dckd.")))'],
                         capture_output=True, text=True, check=True).stdout
    assert eval(out) == ['dckd.artifacts', 'dckd.core'], out


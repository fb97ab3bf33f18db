#!/usr/bin/env python
"""The committed notebooks carry their outputs: figures, tables and printed results, made on the embedded data.

    python .ci/nb_outputs.py write [NB ...]   # execute notebooks in place as `nbdev_test` does, keep stable outputs
    python .ci/nb_outputs.py check            # every cell that draws has its figure in the committed file

`write` runs each notebook exactly the way `nbdev_test` runs it (same skipped cells: `#| eval: false`, the
`notest` flag, `nbdev_export()` calls; working directory = the notebook's folder; IN_TEST=1), then keeps only the
outputs that do not change from run to run: stderr (warnings, progress bars) is dropped, and so is any printed line
with a timing, an absolute path or a memory address. Then run `nbdev_clean` (it strips metadata and execution
counts, and keeps outputs). `check` lists every notebook with the number of figures its committed file holds and
fails when a cell that draws (matplotlib, seaborn or a `dckd.plots` figure as its result) has no image output.
"""
from __future__ import annotations
import json, os, re, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT/'nbs'
# a cell draws when its source builds or shows a figure
DRAWS = re.compile(r'(plt\.|\bFigure\(|\bsns\.|\bfig\s*$|\bfig\s*=|plots\.(contrastive_state|training_curves|gradient_share|code_maps|'
                   r'delta_chart|ablation_chart|crops|crop_panel)\(|\.imshow\()', re.M)
VOLATILE = [re.compile(p) for p in (
    r'\b\d+(\.\d+)?\s*(s|ms|sec|secs|seconds|min)\b(?!\w)',   # timings
    r'\d+(\.\d+)?\s*it/s|s/it\b',                               # progress rates
    r'(?<![\w.])/(tmp|work|root|home|check|usr|var)/',         # absolute paths
    r'\b0x[0-9a-f]{6,}\b',                                      # memory addresses
    r'\bwall\b|\belapsed\b|\btook\b',                           # wording of timings
)]

def notebooks()->list[Path]:
    return sorted(p for p in NBS.rglob('*.ipynb') if '_out' not in p.parts and '.ipynb_checkpoints' not in p.parts
                  and not p.name.startswith('_'))

def _volatile(line:str)->bool: return any(p.search(line) for p in VOLATILE)

def _keep(outputs:list)->list:
    kept = []
    for o in outputs:
        t = o.get('output_type')
        if t == 'stream':
            if o.get('name') != 'stdout': continue
            text = o['text'] if isinstance(o['text'], str) else ''.join(o['text'])
            lines = [l for l in text.splitlines(keepends=True) if not _volatile(l)]
            if lines: kept.append({**o, 'text': lines})
        elif t in ('execute_result', 'display_data'):
            data = dict(o.get('data', {}))
            plain = data.get('text/plain')
            if plain is not None and _volatile(plain if isinstance(plain, str) else ''.join(plain)):
                if len(data) == 1: continue
                data.pop('text/plain')
            kept.append({**o, 'data': _small(data)})
        elif t == 'error': raise RuntimeError('a cell failed: ' + '\n'.join(o.get('traceback', []))[-2000:])
    return kept

def _small(data:dict, limit:int=120_000)->dict:
    "A large PNG (a photo panel) is stored as a JPEG of quality 85: a fifth of the size, the same picture."
    png = data.get('image/png')
    if png is None or len(png) <= limit: return data
    import base64, io
    from PIL import Image
    im = Image.open(io.BytesIO(base64.b64decode(png))).convert('RGB')
    buf = io.BytesIO(); im.save(buf, format='JPEG', quality=85, optimize=True)
    if len(buf.getvalue()) * 4 // 3 >= len(png): return data
    out = {k: v for k, v in data.items() if k != 'image/png'}
    out['image/jpeg'] = base64.b64encode(buf.getvalue()).decode()
    return out

def write(paths:list[Path]):
    from execnb.shell import CaptureShell
    from execnb.nbio import write_nb
    from fastcore.xtras import working_directory
    from nbdev.process import NBProcessor
    from nbdev.frontmatter import FrontmatterProc
    os.environ['IN_TEST'] = '1'
    for fn in paths:
        fn = Path(fn).resolve()
        nb = NBProcessor(fn, procs=FrontmatterProc, process=True).nb
        def skip(cell):
            if cell.cell_type != 'code': return True
            if 'nbdev_export' + '(' in cell.source: return True
            d = getattr(cell, 'directives_', {}) or {}
            return d.get('eval:', [''])[0].lower() == 'false' or 'notest' in d
        for c in nb.cells:
            if c.cell_type == 'code': c.outputs, c.execution_count = [], None
        k = CaptureShell(fn, mpl_format='png')   # inline pyplot figures as 1x PNG (retina would double the file)
        with working_directory(fn.parent): k.run_all(nb, exc_stop=True, preproc=skip)
        raw = json.loads(fn.read_text())   # write back into the original JSON: only the outputs change
        by_id = {c.get('id'): c for c in nb.cells}
        for c in raw['cells']:
            if c['cell_type'] != 'code': continue
            src = by_id.get(c.get('id'))
            c['outputs'] = _keep([dict(o) for o in (src.get('outputs') or [])]) if src is not None else []
            c['execution_count'] = None
        fn.write_text(json.dumps(raw, indent=1, ensure_ascii=False) + '\n')
        print(f'{fn.relative_to(ROOT)}: {count(raw)[0]} figures')

def _directives(src:str)->dict:
    return {m.group(1): m.group(2).strip() for m in re.finditer(r'^#\|\s*([\w-]+):?\s*(.*)$', src, re.M)}

def count(nb:dict)->tuple[int, list]:
    "Figures in a notebook's committed outputs, and the drawing cells that have none."
    n, missing = 0, []
    for i, c in enumerate(nb['cells']):
        if c['cell_type'] != 'code': continue
        imgs = sum(any(m in o.get('data', {}) for m in ('image/png', 'image/jpeg', 'image/svg+xml')) for o in c.get('outputs', []))
        n += imgs
        src = ''.join(c['source']); d = _directives(src)
        if d.get('eval', '').lower() == 'false' or {'export', 'exports', 'exporti', 'notest'} & d.keys(): continue
        code = '\n'.join(l for l in src.splitlines() if not l.lstrip().startswith('#'))
        if DRAWS.search(code) and not imgs: missing.append((i, c.get('id'), src.strip().splitlines()[-1][:80]))
    return n, missing

def check()->int:
    bad, total = [], 0
    print(f'{"notebook":40} figures  size')
    for p in notebooks():
        nb = json.loads(p.read_text()); n, missing = count(nb); total += p.stat().st_size
        print(f'{str(p.relative_to(ROOT)):40} {n:7d}  {p.stat().st_size/1024:7.0f} KiB')
        bad += [f'{p.relative_to(ROOT)}: cell {i} (id {cid}) draws a figure but has no image output: {last}' for i, cid, last in missing]
    print(f'{"all notebooks":40} {"":7}  {total/1024:7.0f} KiB')
    if bad:
        print('\n'.join(bad)); print('run `python .ci/nb_outputs.py write <notebook>` and `nbdev_clean`, and commit the notebook')
        return 1
    return 0

if __name__ == '__main__':
    cmd, *rest = sys.argv[1:] or ['check']
    if cmd == 'write': write([Path(p) for p in rest] or notebooks())
    elif cmd == 'check': sys.exit(check())
    else: sys.exit(f'unknown command {cmd!r}: write [NB ...] | check')

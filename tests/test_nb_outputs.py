"""The committed notebooks carry their figures: `.ci/nb_outputs.py` (run by `.ci/run`) finds a drawing cell without
an image, and keeps no output that changes from run to run."""
import importlib.util, json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location('nb_outputs', ROOT/'.ci'/'nb_outputs.py')
nbo = importlib.util.module_from_spec(spec); spec.loader.exec_module(nbo)

def _nb(*cells): return {'cells': [dict(cell_type='code', id=f'c{i}', source=s, outputs=o, metadata={}) for i, (s, o) in enumerate(cells)]}
PNG = {'output_type': 'display_data', 'data': {'image/png': 'iVBORw0KGgo=', 'text/plain': '<Figure size 640x480 with 1 Axes>'}, 'metadata': {}}

def test_a_drawing_cell_without_its_figure_is_found():
    n, missing = nbo.count(_nb(('fig, ax = plt.subplots()\nax.plot([1, 2])', []), ('x = 1', [])))
    assert n == 0 and [m[1] for m in missing] == ['c0']
    n, missing = nbo.count(_nb(('fig, ax = plt.subplots()\nax.plot([1, 2])', [PNG]), ('fig = plots.delta_chart(rows)\nfig', [PNG])))
    assert n == 2 and missing == []

def test_cells_not_run_and_exported_code_are_not_drawing_cells():
    assert nbo.count(_nb(('#| eval: false\nfig = plots.gradient_share(run)\nfig', []),
                         ('#| export\ndef f():\n    fig = Figure()\n    return fig', [])))[1] == []

def test_volatile_outputs_are_dropped():
    outs = [{'output_type': 'stream', 'name': 'stderr', 'text': ['100%|##########| 4/4 [00:01<00:00, 3.1it/s]\n']},
            {'output_type': 'stream', 'name': 'stdout', 'text': ['max |diff| 0.0\n', 'took 1.23 s\n', 'wrote /tmp/x/y.png\n']},
            {'output_type': 'execute_result', 'data': {'text/plain': '<function f at 0x7f95d44fc900>'}, 'metadata': {}},
            {'output_type': 'execute_result', 'data': {'text/plain': "{'psnr': 31.2}"}, 'metadata': {}}]
    kept = nbo._keep(outs)
    assert [o['output_type'] for o in kept] == ['stream', 'execute_result']
    assert kept[0]['text'] == ['max |diff| 0.0\n'] and kept[1]['data']['text/plain'] == "{'psnr': 31.2}"

def test_every_committed_notebook_that_draws_has_its_figures():
    bad = {str(p.relative_to(ROOT)): m for p in nbo.notebooks() if (m := nbo.count(json.loads(p.read_text()))[1])}
    assert not bad, f'cells that draw but have no figure in the committed file (python .ci/nb_outputs.py write): {bad}'

"""dvc.yaml `plots:` and the offline page of `dvc plots show` / `diff` (profiles/plots_page.sh): every curve has a title
and axis labels, plots files the pipeline writes, and DVC fills the templates; no Chromium needed (the script checks
the rendering and takes the screenshot, docs/plots/)."""
import json, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT/'profiles'/'plots_template.html'
SCRIPT = ROOT/'profiles'/'plots_page.sh'
CURVES = ROOT/'.dvc'/'plots'/'dckd_curves.json'
REPORT_NB = ROOT/'nbs'/'pipeline'/'60_report.ipynb'
ANCHORS = ('DATA', 'TITLE', 'X', 'Y', 'X_LABEL', 'Y_LABEL')

pytest.importorskip('dvc', reason='dvc is not installed')


def plots_section() -> list:
    return yaml.safe_load((ROOT/'dvc.yaml').read_text())['plots']


def curves() -> dict:
    "{id: props} of the data-series plots (the others are image paths)."
    out = {}
    for p in plots_section():
        if isinstance(p, dict):
            (k, v), = p.items()
            out[k] = v
    return out


def images() -> list:
    return [p for p in plots_section() if isinstance(p, str)]


def stage_outs() -> dict:
    "{stage address: [out paths]} as DVC resolves dvc.yaml (matrix expanded, ${...} filled from params.yaml)."
    from dvc.repo import Repo
    with Repo(str(ROOT)) as repo:
        return {s.addressing: [o.def_path for o in s.outs] for s in repo.index.stages}


def owner(path: str, outs: dict):
    "(stage, out) whose output folder or file holds `path`, else None."
    for st, os_ in outs.items():
        for o in os_:
            if path == o or path.startswith(o.rstrip('/') + '/'): return st, o
    return None


# ---------------------------------------------------------------- the page template

def test_template_has_plot_divs_and_local_scripts():
    t = TEMPLATE.read_text()
    assert '{plot_divs}' in t, 'dvc plots --html-template needs the {plot_divs} placeholder'
    # DVC replaces {scripts} anywhere in the file (comments included) with its CDN <script> tags: a blank page offline
    assert '{scripts}' not in t
    srcs = re.findall(r'<script\s+src="([^"]+)"', t)
    assert srcs == ['js/vega.min.js', 'js/vega-lite.min.js', 'js/vega-embed.min.js'], srcs
    # ... the three files plots_page.sh copies next to the page, from the npm packages it pins
    s = SCRIPT.read_text()
    assert 'for p in vega vega-lite vega-embed; do cp "$JS/node_modules/$p/build/$p.min.js" "$OUT/js/"' in s
    pins = dict(re.findall(r'\[([a-z-]+)\]=(\d+\.\d+\.\d+)', s))
    assert set(pins) == {'vega', 'vega-lite', 'vega-embed'} and pins['vega'].startswith('5.') \
        and pins['vega-lite'].startswith('5.') and pins['vega-embed'].startswith('6.'), pins


def test_template_accepted_by_dvc_render(tmp_path):
    "DVC's own HTML writer takes the template and leaves no CDN <script> in the page."
    dvc_render = pytest.importorskip('dvc_render')
    from dvc_render import VegaRenderer, render_html
    r = VegaRenderer([{'step': 1, 'pix': 0.5, 'rev': 'workspace'}, {'step': 2, 'pix': 0.4, 'rev': 'workspace'}], 'pix',
                     x='step', y='pix', title='t', x_label='iteration', y_label='loss')
    out = tmp_path/'index.html'
    render_html([r], out, html_template=str(TEMPLATE))
    html = out.read_text()
    assert 'vegaEmbed(' in html and '{plot_divs}' not in html
    assert 'cdn.jsdelivr' not in html and not re.search(r'<script[^>]+src="(https?:)?//', html), html[:800]


def test_script_parses():
    bash = shutil.which('bash')
    if not bash: pytest.skip('no bash')
    r = subprocess.run([bash, '-n', str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- dvc.yaml plots:

def test_curves_have_title_and_axis_labels():
    cs = curves()
    assert len(cs) >= 4, cs
    for name, p in cs.items():
        for k in ('title', 'x_label', 'y_label'):
            assert isinstance(p.get(k), str) and p[k].strip(), f'{name}: no {k}'
        assert p['x_label'] != p.get('x') and p['y_label'] not in p['y'].values(), f'{name}: labels are bare column names'
        assert p.get('x') == 'step', name
        assert p.get('template') == 'dckd_curves', f'{name}: the curve template (colour = curve, dash = revision)'
        assert isinstance(p['y'], dict) and p['y'], name
        for f, col in p['y'].items():
            assert f.endswith('.tsv') and isinstance(col, str), (name, f, col)


def test_curve_template_has_dvc_anchors():
    t = CURVES.read_text()
    spec = json.loads(t)
    assert spec['$schema'].endswith('vega-lite/v5.json')
    for a in ANCHORS: assert f'<DVC_METRIC_{a}>' in t, a
    # DVC fills the data anchor only where it is a whole JSON value
    assert spec['data'] == {'values': '<DVC_METRIC_DATA>'}


def test_plotted_files_are_pipeline_outputs():
    "Every tsv is inside the ablation stage's out of the report's run (dckd, base.seed); every image in the report's."
    params = yaml.safe_load((ROOT/'params.yaml').read_text())
    seed = params['base']['seed']
    assert 'dckd' in params['ablation']['variants'] and seed in params['ablation']['seeds']
    outs = stage_outs()
    run = f'results/ablation/dckd_s{seed}'
    for name, p in curves().items():
        for f in p['y']:
            got = owner(f, outs)
            assert got, f'{name}: {f} is no stage output'
            assert got == (f'ablation@dckd-{seed}', run), f'{name}: {f} belongs to {got}, not to the DCKD run {run}'
            assert f.startswith(run + '/live/plots/metrics/'), f   # DVCLive's layout (dckd.distill's logger)
    nb = REPORT_NB.read_text()
    for im in images():
        assert owner(im, outs) == ('report', 'results/report'), im
        assert Path(im).suffix in ('.png', '.svg', '.jpg'), im
        assert Path(im).name in nb, f'{im}: the report notebook does not write {Path(im).name}'


@pytest.fixture(scope='module')
def fake_ws(tmp_path_factory) -> Path:
    "A DVC project with only the plots: of dvc.yaml, a synthetic DCKD run written by dckd.distill's logger, stub figures."
    pytest.importorskip('dvclive', reason='dckd.distill logs with DVCLive (the tsv layout plots: names)')
    from dvc.repo import Repo
    from dckd.plots import synthetic_run
    w = tmp_path_factory.mktemp('plots_ws')
    Repo.init(str(w), no_scm=True).close()
    (w/'.dvc'/'plots').mkdir(exist_ok=True)
    shutil.copy(CURVES, w/'.dvc'/'plots'/CURVES.name)
    (w/'dvc.yaml').write_text(yaml.safe_dump({'plots': plots_section()}, sort_keys=False))
    seed = yaml.safe_load((ROOT/'params.yaml').read_text())['base']['seed']
    run, cwd = w/'results'/'ablation'/f'dckd_s{seed}', os.getcwd()
    os.chdir(w)   # DVCLive looks at the repository around the working directory (a git one without commits stops it)
    try: synthetic_run(run, iters=60, log_every=10, val_every=30, refresh_every=25)
    finally: os.chdir(cwd)
    if (run/'live'/'metrics.jsonl').is_file():
        pytest.skip("DVCLive did not start here, dckd.distill's logger fell back to live/metrics.jsonl (not plotted)")
    from PIL import Image
    for im in images():
        (w/im).parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (40, 30), (200, 80, 40)).save(w/im)
    return w


def test_logger_writes_every_plotted_column(fake_ws):
    "The files and columns plots: names are what dckd.distill's logger writes (a synthetic run through it)."
    w = fake_ws
    for name, p in curves().items():
        for f, col in p['y'].items():
            path = w/f
            assert path.is_file(), f'{name}: the logger writes no {f}'
            head, *rows = path.read_text().splitlines()
            assert head.split('\t') == [p['x'], col], (f, head)
            assert len(rows) >= 2, f


def test_dvc_plots_show_fills_titles_and_labels(fake_ws):
    "`dvc plots show` on the synthetic run: one chart per curve plot, DVC's anchors filled, titles and axis labels from dvc.yaml."
    w = fake_ws
    r = subprocess.run([sys.executable, '-m', 'dvc', 'plots', 'show', '--json'], cwd=w, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert not got.get('errors'), got['errors']
    data = got['data']
    for name, p in curves().items():
        (plot,) = data[name]
        assert plot['type'] == 'vega', name
        spec = plot['content']
        s = json.dumps(spec)
        assert '<DVC_METRIC' not in s, (name, re.findall(r'<DVC_METRIC_\w+>', s))
        assert spec['title']['text'] == p['title']
        assert spec['encoding']['x']['title'] == p['x_label']
        ys = {json.dumps(l['encoding']['y']['title']) for l in spec['layer'] if 'y' in l.get('encoding', {})}
        assert ys == {json.dumps(p['y_label'])}, (name, ys)
        vals = spec['data']['values']
        assert {v['filename'] for v in vals} and len(vals) >= 2*len(p['y']), name
    for im in images():
        assert any(im in k for k in data), (im, list(data))
    # the page as plots_page.sh writes it: our template, no CDN, one vegaEmbed per curve plot
    r = subprocess.run([sys.executable, '-m', 'dvc', 'plots', 'show', '-o', 'page', '--html-template', str(TEMPLATE)],
                       cwd=w, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    html = (w/'page'/'index.html').read_text()
    assert 'cdn.jsdelivr' not in html and html.count('vegaEmbed(') == len(curves())
    assert html.count('<img src="static/') == len(images())

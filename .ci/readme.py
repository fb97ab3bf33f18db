"""Generate README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which these machines cannot install).

`python .ci/readme.py` writes README.md; `python .ci/readme.py --check` exits 1 when README.md is stale.
Markdown cells are copied as they are; code cells (except `#| hide` ones) become ```python blocks,
followed by their text output."""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n'


def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text())
    parts = []
    for c in nb['cells']:
        src = ''.join(c['source']).strip('\n')
        if c['cell_type'] == 'markdown': parts.append(src)
        elif c['cell_type'] == 'code' and src and not src.lstrip().startswith(('#| hide', '#|hide')):
            parts.append(f'```python\n{src}\n```')
            outs = [''.join(o.get('text', '')) or ''.join(o.get('data', {}).get('text/plain', ''))
                    for o in c.get('outputs', [])]
            if any(outs): parts.append('    ' + '\n'.join(outs).rstrip('\n').replace('\n', '\n    '))
    return HEADER + '\n\n'.join(parts) + '\n'


def main(argv):
    text, readme = render(ROOT / 'nbs' / 'index.ipynb'), ROOT / 'README.md'
    if '--check' in argv:
        if not readme.exists() or readme.read_text() != text:
            print('README.md is stale: run `python .ci/readme.py` and commit it'); return 1
        return 0
    readme.write_text(text); return 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))

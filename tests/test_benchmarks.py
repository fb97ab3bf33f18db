"""The step-cost benchmark script runs and prints its table (a smoke run: figures from one step are noise)."""
import re, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_cost_smoke():
    out = subprocess.run([sys.executable, str(ROOT / 'benchmarks/step_cost.py'), '--config', 'B', '--sets', 'pix,+kd,full',
                          '--steps', '1', '--warmup', '1', '--rounds', '2'], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert 'FAILED' not in out.stdout, out.stdout
    rows = {m[0]: m for m in re.findall(r'^B\s+(\S+)\s+([\d.]+)\s+([\d.]+)-([\d.]+)\s+([\d.]+)', out.stdout, re.M)}
    assert set(rows) == {'pix', '+kd', 'full'}, out.stdout
    for name, med, lo, hi, mn in rows.values():
        assert 0 < float(mn) <= float(lo) <= float(med) <= float(hi), out.stdout
    assert len(re.findall(r'^# round [12]/2: B ', out.stdout, re.M)) == 6
    # the full step's ratio to the official one, and each target met or not
    full = re.search(r'^B\s+full\s+([\d.]+).*\s([\d.]+)\s+([\d.]+)\s+<=0\.85x (ok|ABOVE), <=0\.5x (ok|ABOVE)$', out.stdout, re.M)
    assert full, out.stdout
    med, ref, ratio = map(float, full.groups()[:3])
    assert abs(med / ref - ratio) <= 0.006 and (full[5] == 'ok') == (med <= 0.5 * ref), out.stdout

#!/usr/bin/env bash
# `dvc plots show` / `dvc plots diff` as a page that renders offline, checked and photographed in headless Chromium.
#
#   bash profiles/plots_page.sh                            # dvc plots show -> dvc_plots/index.html + docs/plots/dvc_plots_show.png
#   bash profiles/plots_page.sh diff HEAD my-exp           # dvc plots diff HEAD my-exp -> dvc_plots_diff/index.html + docs/plots/dvc_plots_diff.png
#   PNG= bash profiles/plots_page.sh                       # the page and its check only, no screenshot
#   OUT=/tmp/p PNG=/tmp/p.png bash profiles/plots_page.sh diff HEAD   # other page folder / screenshot path
#
# DVC's own page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net, so without internet it is blank. Here
# they come from npm (pinned below) into $JS (default .plots_js/, git-ignored); the page is written with
# profiles/plots_template.html (`--html-template`: DVC's {plot_divs} placeholder, <script> tags for js/*.min.js),
# and the three files are copied to <page folder>/js/, so the folder is self-contained (open it from anywhere).
# The training curves use the vega-lite template .dvc/plots/dckd_curves.json (dvc.yaml: `template: dckd_curves`).
# Check: Chromium's DOM after 10 s of virtual time must hold one rendered vega chart (canvas) per vega plot of the
# page, else this fails. The screenshot is the page's top $WIDTH x $HEIGHT pixels, blank bottom trimmed, palette PNG
# shrunk until it is under $MAX_KB. Needs: dvc, npm (first run only), a Chromium (chromium / chromium-browser /
# google-chrome, or CHROMIUM=...) and Pillow.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-show}; [ $# -gt 0 ] && shift
case $mode in
  show) OUT=${OUT:-dvc_plots} ;;
  diff) OUT=${OUT:-dvc_plots_diff} ;;
  *) echo "plots_page.sh: the first argument is show or diff (then diff's revisions), not '$mode'" >&2; exit 2 ;;
esac
PNG=${PNG-docs/plots/dvc_plots_$mode.png}
JS=${JS:-.plots_js}
WIDTH=${WIDTH:-1300}; HEIGHT=${HEIGHT:-4000}; MAX_KB=${MAX_KB:-400}
TEMPLATE=profiles/plots_template.html
declare -A PIN=([vega]=5.33.1 [vega-lite]=5.23.0 [vega-embed]=6.29.0)   # the page's <script>s; vega-embed 6 needs vega 5
start=$(date +%s)

need=()
for p in "${!PIN[@]}"; do
  v=$(node -p "require(require('path').resolve('$JS/node_modules/$p/package.json')).version" 2>/dev/null || true)
  [ "$v" = "${PIN[$p]}" ] || need+=("$p@${PIN[$p]}")
done
if [ ${#need[@]} -gt 0 ]; then
  command -v npm >/dev/null || { echo "plots_page.sh: npm not found (needed once, to install ${need[*]} into $JS)" >&2; exit 2; }
  echo "plots_page.sh: npm install ${need[*]} into $JS"
  npm install --prefix "$JS" --no-save --no-audit --no-fund --loglevel=error \
    "vega@${PIN[vega]}" "vega-lite@${PIN[vega-lite]}" "vega-embed@${PIN[vega-embed]}"
fi

rm -rf "$OUT"
dvc plots "$mode" -o "$OUT" --html-template "$TEMPLATE" "$@"
[ -f "$OUT/index.html" ] || { echo "plots_page.sh: dvc wrote no $OUT/index.html (no plots?)" >&2; exit 1; }
mkdir -p "$OUT/js"
for p in vega vega-lite vega-embed; do cp "$JS/node_modules/$p/build/$p.min.js" "$OUT/js/"; done
if grep -q 'cdn.jsdelivr' "$OUT/index.html"; then
  echo "plots_page.sh: $OUT/index.html still loads scripts from a CDN ({scripts} in $TEMPLATE?)" >&2; exit 1
fi

CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$CHROMIUM" ]; then
  echo "plots_page.sh: no Chromium found: $OUT/index.html written but neither checked nor photographed" >&2; exit 3
fi
page="file://$(realpath "$OUT")/index.html"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --virtual-time-budget=10000)
dom=$(mktemp); trap 'rm -f "$dom" "$dom.png"' EXIT
timeout 180 "$CHROMIUM" "${flags[@]}" --dump-dom "$page" > "$dom" 2>/dev/null
n_vega=$(grep -o 'vegaEmbed(' "$OUT/index.html" | wc -l)
n_drawn=$(grep -o '<canvas[^>]*class="marks"' "$dom" | wc -l)
n_img=$(grep -o '<img src="static/' "$OUT/index.html" | wc -l)
echo "plots_page.sh: $OUT/index.html: $n_drawn of $n_vega vega charts drawn by Chromium, $n_img images"
[ "$n_vega" -gt 0 ] && [ "$n_drawn" -eq "$n_vega" ] || { echo "plots_page.sh: not every chart rendered" >&2; exit 1; }

if [ -n "$PNG" ]; then
  mkdir -p "$(dirname "$PNG")"
  timeout 180 "$CHROMIUM" "${flags[@]}" --window-size="$WIDTH,$HEIGHT" --screenshot="$dom.png" "$page" 2>/dev/null >/dev/null
  python - "$dom.png" "$PNG" "$MAX_KB" <<'EOF'
import io, sys
from PIL import Image, ImageChops
src, dst, max_kb = sys.argv[1], sys.argv[2], int(sys.argv[3])
im = Image.open(src).convert('RGB')
box = ImageChops.difference(im, Image.new('RGB', im.size, 'white')).getbbox()   # trim the blank page bottom
if box: im = im.crop((0, 0, im.width, min(im.height, box[3] + 16)))
scale = 1.
while True:
    out = im if scale == 1. else im.resize((round(im.width*scale), round(im.height*scale)), Image.LANCZOS)
    buf = io.BytesIO(); out.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, 'PNG', optimize=True)
    if buf.tell() <= max_kb*1024 or scale < 0.3: break
    scale *= 0.9
open(dst, 'wb').write(buf.getvalue())
print(f'plots_page.sh: {dst}: {out.width}x{out.height}, {buf.tell()//1024} KB')
EOF
fi
echo "plots_page.sh: $mode done in $(( $(date +%s) - start )) s"

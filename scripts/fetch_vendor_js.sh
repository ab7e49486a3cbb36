#!/usr/bin/env bash
# (Re)create the JavaScript the built book needs so that it renders offline:
#   - RequireJS                        (AMD loader the ipywidgets embed bundle needs)
#   - @jupyter-widgets/html-manager    (embed-amd.js: renders saved widget state)
#   - MathJax 3                        (tex-chtml-full.js + its CHTML woff fonts)
# The files are committed under book/_static/vendor/, so building the book needs
# neither Node nor the network. This script is only needed to bump a version or
# to restore deleted files; it uses `npm pack` (npm registry only) at pinned
# versions and checks every file against book/_static/vendor/SHA256SUMS.
#
# Usage: scripts/fetch_vendor_js.sh           # fetch only if a file is missing or differs
#        scripts/fetch_vendor_js.sh --check   # verify checksums, never fetch
#        scripts/fetch_vendor_js.sh --force   # fetch again (after bumping a version below)
#        scripts/fetch_vendor_js.sh --update-sums  # fetch, then rewrite SHA256SUMS
set -euo pipefail

# Pinned versions. html-manager 1.0.x is the ipywidgets 8 line (widget model
# @jupyter-widgets/controls 2.0.0); keep it in step with ipywidgets in requirements.lock.
REQUIREJS_VERSION=2.3.8
HTML_MANAGER_VERSION=1.0.15
MATHJAX_VERSION=3.2.2

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENDOR="$ROOT/book/_static/vendor"
SUMS="$VENDOR/SHA256SUMS"
mode="${1:-}"

check() {  # exit status 0 when every listed file exists with the recorded checksum
    [[ -s "$SUMS" ]] || return 1
    (cd "$VENDOR" && sha256sum --quiet --check SHA256SUMS) >/dev/null 2>&1
}

case "$mode" in
    --check)
        if check; then echo "vendor JS: OK ($VENDOR)"; exit 0; fi
        echo "vendor JS: missing or modified files under $VENDOR; run $0" >&2
        exit 1 ;;
    "")
        if check; then echo "vendor JS: up to date"; exit 0; fi ;;
    --force|--update-sums) ;;
    *) echo "usage: $0 [--check|--force|--update-sums]" >&2; exit 2 ;;
esac

command -v npm >/dev/null || { echo "npm is needed to fetch $VENDOR (apt-get install npm)" >&2; exit 1; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
npm pack --silent "requirejs@$REQUIREJS_VERSION" \
                  "@jupyter-widgets/html-manager@$HTML_MANAGER_VERSION" \
                  "mathjax@$MATHJAX_VERSION" >/dev/null
for pkg in requirejs html-manager mathjax; do
    mkdir "$pkg"
    tar -xzf ./*"$pkg"-*.tgz -C "$pkg" --strip-components=1
done

# Write into a fresh tree, then swap it in (README.md and SHA256SUMS are kept).
new="$tmp/vendor"
mkdir -p "$new/requirejs" "$new/html-manager" "$new/mathjax/es5/output/chtml/fonts"

# RequireJS: one file, licence header included.
cp requirejs/require.js "$new/requirejs/"

# html-manager: the AMD embed bundle carries base/controls/output widgets and
# their CSS; Font Awesome fonts are fetched next to the script (webpack public
# path) only when a widget shows an icon. Modern browsers only use the woff2
# files, so the eot/ttf/woff/svg variants are left out.
cp html-manager/dist/embed-amd.js html-manager/dist/embed.js.LICENSE.txt "$new/html-manager/"
cp html-manager/dist/*.woff2 "$new/html-manager/"

# MathJax: the "full" combined component bundles every TeX package, so nothing
# is autoloaded from the network; CHTML output needs the woff-v2 fonts.
cp mathjax/LICENSE "$new/mathjax/"
cp mathjax/es5/tex-chtml-full.js "$new/mathjax/es5/"
cp -r mathjax/es5/output/chtml/fonts/woff-v2 "$new/mathjax/es5/output/chtml/fonts/"

for keep in README.md SHA256SUMS; do
    [[ -f "$VENDOR/$keep" ]] && cp "$VENDOR/$keep" "$new/"
done
rm -rf "$VENDOR"
mv "$new" "$VENDOR"

if [[ "$mode" == "--update-sums" ]]; then
    (cd "$VENDOR" && find . -type f ! -name SHA256SUMS ! -name README.md -printf '%P\n' \
        | LC_ALL=C sort | xargs sha256sum > SHA256SUMS)
    echo "vendor JS: wrote $SUMS"
fi
if check; then
    echo "vendor JS: fetched and verified ($(du -sh "$VENDOR" | cut -f1))"
else
    echo "vendor JS: checksum mismatch after fetch; if you bumped a version run $0 --update-sums" >&2
    exit 1
fi

#!/usr/bin/env bash
# Screenshot a run's report page (RUN_DIR/report/index.html, written by `alcgap report RUN_DIR`)
# with headless Chromium, to look at what a person sees.
#
#   scripts/screenshot_report.sh RUN_DIR [OUT.png]
#
# OUT.png defaults to RUN_DIR/report/screenshot.png. The window is 1500 px wide and
# SCREENSHOT_HEIGHT px tall (default 6000): a longer page is cut there, so raise it for a long
# campaign. Chromium comes from Debian (`apt-get install chromium`); CHROMIUM names another binary.
set -euo pipefail

if [ "$#" -lt 1 ] || [ "$#" -gt 2 ]; then
    echo "usage: $0 RUN_DIR [OUT.png]" >&2
    exit 2
fi
run_dir="$1"
page="$run_dir/report/index.html"
if [ ! -f "$page" ]; then
    echo "$0: no report at $page (write it with: alcgap report $run_dir)" >&2
    exit 2
fi
out="${2:-$run_dir/report/screenshot.png}"
mkdir -p "$(dirname "$out")"
out="$(cd "$(dirname "$out")" && pwd)/$(basename "$out")"
page="$(cd "$(dirname "$page")" && pwd)/$(basename "$page")"

browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}"
if [ -z "$browser" ] || [ ! -x "$browser" ]; then
    echo "$0: no chromium found (apt-get install chromium, or set CHROMIUM)" >&2
    exit 2
fi

# a profile of its own, so that a browser already open elsewhere is not reused and nothing is kept
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
rm -f "$out"
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --disable-background-networking \
    --disable-component-update --no-first-run --user-data-dir="$profile" \
    --screenshot="$out" --window-size=1500,"${SCREENSHOT_HEIGHT:-6000}" "file://$page" >"$profile/log" 2>&1 || true
if [ ! -s "$out" ]; then  # chromium's exit status says little (dbus warnings fail it): the file does
    echo "$0: chromium wrote no screenshot to $out; it said:" >&2
    tail -n 20 "$profile/log" >&2
    exit 1
fi
echo "$out"

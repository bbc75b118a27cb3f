#!/usr/bin/env bash
# Regenerates the README's console screenshots (docs/img/console-*.png): runs
# the browser tests, which save them when TOLLGATE_SCREENSHOTS names a folder.
# Needs what `./dev deps` installs (chromium, chromium-driver, the .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --tests
TOLLGATE_SCREENSHOTS=docs/img TOLLGATE_BIN="${CARGO_TARGET_DIR:-target}/debug/tollgate" \
    .venv/bin/python -m pytest tests/python/test_console.py -q "$@"
ls -l docs/img/console-*.png

#!/usr/bin/env bash
# Type-check the board drivers against the MicroPython ESP32 stubs (firmware/mypy.ini). The stubs
# live in their own folder, .venv/mpy-stubs, so they never leak into the host's CPython mypy run.
set -euo pipefail
cd "$(dirname "$0")/.."
STUBS=.venv/mpy-stubs
if [ ! -f "$STUBS/machine.pyi" ] || [ ! -f "$STUBS/stdlib/VERSIONS" ]; then
    .venv/bin/pip install --quiet --target "$STUBS" --no-deps \
        micropython-esp32-stubs==1.29.0.post1 micropython-stdlib-stubs==1.29.0.post2
fi
.venv/bin/mypy --config-file firmware/mypy.ini

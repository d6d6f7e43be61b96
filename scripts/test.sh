#!/usr/bin/env bash
# Lint, type-check and run the test suite (real redis-server and Celery worker processes,
# started by the tests themselves). Extra arguments go to pytest.
#
#   scripts/test.sh          everything (what CI runs)
#   scripts/test.sh --fast   lint, types and the pure-logic layer only: no redis-server, no worker,
#                            no Hub stand-in, no embedded run (marker `service`), no model run in
#                            the test process (marker `model`) and nothing that takes tens of
#                            seconds on its own (marker `slow`); see README, "Tests"
set -euo pipefail
cd "$(dirname "$0")/.."
fast=()
if [ "${1:-}" = "--fast" ]; then
  shift
  fast=(-m "not service and not model and not slow")
fi
.venv/bin/ruff check fleet orchestrator workers tests bench scripts
.venv/bin/ruff format --check fleet orchestrator workers tests bench scripts
.venv/bin/mypy
.venv/bin/mypy --strict fleet orchestrator
.venv/bin/python -m pytest "${fast[@]}" "$@"

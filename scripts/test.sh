#!/usr/bin/env bash
# Lint, type-check and run the test suite (real redis-server and Celery worker processes,
# started by the tests themselves). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check fleet orchestrator workers tests bench scripts
.venv/bin/ruff format --check fleet orchestrator workers tests bench scripts
.venv/bin/mypy
.venv/bin/mypy --strict fleet orchestrator
.venv/bin/python -m pytest "$@"

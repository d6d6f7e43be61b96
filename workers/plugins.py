"""Extra checks a deployment adds: FLEET_PLUGINS names modules (comma-separated) that call
workers.checks.register(). Only the worker's own environment can name them, never a
catalog or a job, so no input sent over the broker can bring code in."""

from __future__ import annotations

import importlib
import os

_loaded: set[str] = set()


def load() -> None:
    for name in filter(None, (m.strip() for m in os.environ.get("FLEET_PLUGINS", "").split(","))):
        if name not in _loaded:
            importlib.import_module(name)
            _loaded.add(name)

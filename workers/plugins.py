"""Extra checks a deployment adds: Settings.plugins ($FLEET_PLUGINS) names modules that declare
CHECKS and define register() (see fleet.names). Only the worker's own environment can name
them, never a catalog or a job, so no input sent over the broker can bring code in."""

from __future__ import annotations

from fleet import names
from fleet.errors import FleetError
from workers import checks

_loaded: set[str] = set()


def load(modules: tuple[str, ...]) -> None:
    for module in modules:
        if module in _loaded:
            continue
        mod = names.plugin(module)
        before = set(checks.registered())
        mod.register()
        after = set(checks.registered())
        missing, undeclared = set(mod.CHECKS) - after, (after - before) - set(mod.CHECKS)
        if missing or undeclared:
            raise FleetError(
                f"plugin {module}: register() must add exactly its CHECKS: "
                f"missing {sorted(missing)}, undeclared {sorted(undeclared)}"
            )
        _loaded.add(module)

"""The benchmark plugin (FLEET_PLUGINS=bench.plugin): torch-free at the top level, as
fleet.names requires; the checks themselves are in bench/plugins.py."""

from __future__ import annotations

CHECKS = ("noop", "spin")


def register() -> None:
    from bench import plugins

    plugins.register_all()

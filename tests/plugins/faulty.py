"""The test plugin: checks that misbehave on purpose (FLEET_PLUGINS=tests.plugins.faulty).

Torch-free at the top level, as fleet.names requires: the control plane imports it to learn the
check names; workers call register().
"""

from __future__ import annotations

CHECKS = ("hang", "oom", "crash", "slow", "raises", "tracked", "flaky", "stepped")


def register() -> None:
    from tests.plugins import faulty_checks

    faulty_checks.register_all()

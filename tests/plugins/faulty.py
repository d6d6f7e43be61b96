"""The test plugin: checks that misbehave on purpose (FLEET_PLUGINS=tests.plugins.faulty).

Torch-free at the top level, as fleet.names requires: the control plane imports it to learn the
check names; workers call register().
"""

from __future__ import annotations

CHECKS = ("hang", "oom", "crash", "slow", "raises", "tracked", "flaky", "stepped", "device_fault")


def register() -> None:
    import os
    import sys

    from tests.plugins import faulty_checks

    faulty_checks.register_all()
    version = os.environ.get("FLEET_TEST_TRANSFORMERS_VERSION")
    if version:
        # A worker with another transformers release, simulated at the boundary: the version the
        # library reports. transformers replaces its module object in sys.modules while it loads,
        # so early importers hold another object than late ones: set it on both.
        import transformers

        for mod in (transformers, getattr(sys.modules.get("workers.devices"), "transformers", None)):
            if mod is not None:
                mod.__version__ = version

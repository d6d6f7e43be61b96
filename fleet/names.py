"""The names a catalog may use for checks and synthetic builders.

The control plane validates catalogs without importing torch, so the names live here; the
worker registries (workers.checks, workers.tiny.synthetic) check at import that they hold exactly
these names (verify()), so the two sides cannot drift apart.

Extra checks come from plugins (Settings.plugins, $FLEET_PLUGINS): a plugin module is imported
on both sides, so its top level must not import torch. It declares `CHECKS` (names) and
`register()` (called in workers only; imports the heavy code and registers the checks). The
worker checks that register() added exactly the declared CHECKS.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from types import ModuleType

from fleet.errors import BadInput, FleetError

CHECKS = ("causal_lm", "seq2seq", "ctc", "video_text", "embedding", "forward", "generate")
SYNTHETIC_BUILDERS = ("llama", "t5", "wav2vec2", "xclip", "bert")
NO_SYNTHETIC = "none"
# Architecture jobs (workers/architectures.py): family "arch:<Class>", synthetic "auto:<Class>".
ARCH_FAMILY_PREFIX = "arch:"
AUTO_SYNTHETIC_PREFIX = "auto:"
# Ad hoc jobs (orchestrator submit --model ORG/NAME[@REV]): family "model:<id>", its check
# chosen on the worker from the config's architecture.
AUTO_CHECK = "auto"
MODEL_FAMILY_PREFIX = "model:"


def plugin(module: str) -> ModuleType:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BadInput(f"plugin {module!r} (FLEET_PLUGINS) cannot be imported: {exc}") from None
    declared = getattr(mod, "CHECKS", None)
    if not isinstance(declared, tuple) or not all(isinstance(n, str) for n in declared):
        raise BadInput(f"plugin {module!r} must declare CHECKS, a tuple of check names")
    if not callable(getattr(mod, "register", None)):
        raise BadInput(f"plugin {module!r} must define register()")
    return mod


def check_names(plugins: Iterable[str] = ()) -> tuple[str, ...]:
    """Built-in checks plus those the plugins declare."""
    extra: list[str] = []
    for module in plugins:
        extra.extend(plugin(module).CHECKS)
    return CHECKS + tuple(extra)


def verify(kind: str, expected: Iterable[str], registered: Iterable[str]) -> None:
    """Raise when a worker registry and the names here disagree (a programming error)."""
    want, have = set(expected), set(registered)
    if want != have:
        raise FleetError(
            f"{kind} registry out of step with fleet.names: missing {sorted(want - have)}, "
            f"undeclared {sorted(have - want)}"
        )

"""A test plugin that registers an attention function with transformers' AttentionInterface under
the name "crash" which kills its own process with SIGSEGV, as a compiled kernel that reads out of
bounds does (flex_attention on cpu for DogeModel). A variant `attention:crash` must end `error` /
`crashed` on the job's next delivery, and the job keep the status its check earned
(FLEET_PLUGINS=tests.plugins.crashing_attention).

Torch-free at the top level, as fleet.names requires; it adds no check."""

from __future__ import annotations

import os
import signal
from typing import Any

CHECKS: tuple[str, ...] = ()
NAME = "crash"


def crashing_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    os.kill(os.getpid(), signal.SIGSEGV)
    raise AssertionError("unreachable: the process was sent SIGSEGV")


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, crashing_attention)

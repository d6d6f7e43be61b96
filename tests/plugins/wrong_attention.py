"""A test plugin that registers a deliberately wrong attention function with transformers'
AttentionInterface under the name "wrong": SDPA's output scaled by 1.5. A variant
`attention:wrong` must come out `mismatch`, with its figures (FLEET_PLUGINS=tests.plugins.wrong_attention).

Torch-free at the top level, as fleet.names requires; it adds no check."""

from __future__ import annotations

from typing import Any

CHECKS: tuple[str, ...] = ()
NAME = "wrong"
FACTOR = 1.5


def wrong_attention(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return output * FACTOR, weights


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, wrong_attention)

"""The registry of checks, keyed by the names the catalog uses."""

from __future__ import annotations

from fleet import names
from fleet.errors import CheckFailure, ErrorKind
from workers.checks.base import Bundle, Check
from workers.checks.causal_lm import CausalLMCheck
from workers.checks.ctc import CTCCheck
from workers.checks.embedding import EmbeddingCheck
from workers.checks.forward import ForwardCheck, GenerateCheck
from workers.checks.seq2seq import Seq2SeqCheck
from workers.checks.video_text import VideoTextCheck

_REGISTRY: dict[str, Check] = {
    c.name: c
    for c in (
        CausalLMCheck(),
        Seq2SeqCheck(),
        CTCCheck(),
        VideoTextCheck(),
        EmbeddingCheck(),
        ForwardCheck(),
        GenerateCheck(),
    )
}


names.verify("check", names.CHECKS, _REGISTRY)


def register(check: Check) -> None:
    """Add a check (used by plugins named in FLEET_PLUGINS)."""
    _REGISTRY[check.name] = check


def registered() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def get_check(name: str) -> Check:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise CheckFailure(
            ErrorKind.INTERNAL, f"unknown check {name!r} (available: {', '.join(sorted(_REGISTRY))})"
        ) from None


__all__ = ["Bundle", "Check", "get_check", "register", "registered"]

"""Tiny models built locally: seeded random weights of a small config, the last resort of a
resolution (catalog families) and the whole model of an architecture job. Results from them
are always SYNTHETIC.

Modules: synthetic (the catalog's builders and the entry point `build`), shrink (a default
config made small), build (a shrunk model of any transformers class), inputs (seeded inputs
per modality), tasks (the task of an architecture class). Here: what they share.
"""

from __future__ import annotations

from fleet.errors import CheckFailure, ErrorKind

SEED = 1234  # every tiny model's weights and inputs are seeded with it: identical on every device


class Unsupported(CheckFailure):
    """The harness cannot build or feed this model (its gap, not the model's failure)."""

    def __init__(self, message: str) -> None:
        # one line: a missing backend's ImportError starts with a newline (the reason read empty)
        super().__init__(ErrorKind.HARNESS_UNSUPPORTED, " ".join(message.split())[:500])

"""What the markdown and HTML renderers share: the Jinja2 environment over templates/
(orchestrator.templates), the status globals, and number formatting."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import jinja2

from fleet.protocol import FAILING, RANK, STATUSES


def number(value: Any, digits: int = 2, empty: str = "-") -> str:
    if value is None or value == "":
        return empty
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def environment(autoescape: bool, filters: dict[str, Callable[..., Any]], **globals_: Any) -> jinja2.Environment:
    """A strict environment (undefined names fail) with the status ranking every report shows."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("orchestrator.templates"))),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(filters)
    env.globals.update(RANK=RANK, STATUSES=STATUSES, FAILING=[str(s) for s in FAILING], **globals_)
    return env

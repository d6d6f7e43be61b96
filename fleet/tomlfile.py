"""Parsing TOML a user gives (catalogs, pins, expectations): every way it can fail to parse is
one error naming the file, deep nesting included (tomllib recurses: RecursionError)."""

from __future__ import annotations

import tomllib
from typing import Any

from fleet.errors import FleetError


def loads(text: str, source: str, error: type[FleetError]) -> dict[str, Any]:
    """The parsed document, or `error` saying "SOURCE: not valid TOML: why"."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML: {exc}") from None
    except RecursionError:
        raise error(f"{source}: not valid TOML: arrays or tables nested too deeply") from None

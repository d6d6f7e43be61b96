"""`pkg:NAME[/SUB/DIR]` candidate paths: a directory inside an installed Python package. The one
parser, used by the trust policy (workers.trust, before anything is read) and by the resolver
(workers.resolver, to find the directory).

The rule: NAME is a single top-level package name (ASCII letters, digits and underscores, not
starting with a digit or "__"; no dots, no separators), found in the interpreter's
site-packages directories without importing anything (never the working directory or
sys.path[0]: a package dropped there does not count). SUB is a relative path of plain segments
(no empty, "." or ".." segment, no backslash or control character), and the directory it names,
with every symlink resolved, stays inside the package's own directory. A spec that breaks the
rule is refused with kind not_allowed (data {"rule": RULE}); a well-formed name that is not
installed is not_found.
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import site
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from fleet.errors import CheckFailure, ErrorKind

PREFIX = "pkg:"
RULE = "pkg_path"
RULE_TEXT = (
    "a pkg: path is pkg:NAME[/SUB/DIR]: NAME a single installed top-level package name (no dots, no '..', "
    "no separators), SUB a relative path that stays inside the package's directory; a directory elsewhere is "
    "a plain path, read only by a worker started with --allow-path DIR"
)
NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
SEGMENT_RE = re.compile(r"[^\x00-\x1f\x7f\\/]{1,255}")


@dataclass(frozen=True)
class PackageDir:
    """A pkg: spec resolved: the package's name and directory, the path inside it as written,
    and the directory it names (symlinks resolved, inside root)."""

    name: str
    root: Path
    sub: str
    path: Path


def is_pkg(spec: str) -> bool:
    return spec.startswith(PREFIX)


def refuse(spec: str, why: str) -> CheckFailure:
    return CheckFailure(ErrorKind.NOT_ALLOWED, f"{spec[:200]!r}: {why}; {RULE_TEXT}", {"rule": RULE})


def parse(spec: str) -> tuple[str, str]:
    """(NAME, SUB) of a pkg: spec, or CheckFailure(not_allowed) naming the rule it breaks."""
    if not is_pkg(spec):
        raise refuse(spec, "not a pkg: path")
    name, sep, sub = spec[len(PREFIX) :].partition("/")
    if not NAME_RE.fullmatch(name) or name.startswith("__"):
        raise refuse(spec, f"{name[:100]!r} is not a single top-level package name")
    if sep and not sub:
        raise refuse(spec, "an empty path after the package name")
    segments = sub.split("/") if sub else []
    for segment in segments:
        if not segment:
            raise refuse(spec, "an empty path segment (or an absolute path after the package name)")
        if segment in (".", ".."):
            raise refuse(spec, f"a {segment!r} segment")
        if not SEGMENT_RE.fullmatch(segment):
            raise refuse(spec, "a path segment with a backslash, a control character or over 255 characters")
    return name, sub


def site_dirs() -> list[str]:
    """The interpreter's site-packages directories, the user's own included where the
    interpreter reads it (never the working directory or sys.path[0])."""
    paths = sysconfig.get_paths()
    found = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    if site.ENABLE_USER_SITE:
        found.append(site.getusersitepackages())
    return [d for d in dict.fromkeys(os.path.realpath(p) for p in found) if os.path.isdir(d)]


def package_root(name: str) -> Path | None:
    """The directory of the installed top-level package `name`, found without importing it."""
    found = importlib.machinery.PathFinder.find_spec(name, site_dirs())
    if found is None or not found.submodule_search_locations:
        return None  # not installed, or a module rather than a package
    return Path(os.path.realpath(next(iter(found.submodule_search_locations))))


def resolve(spec: str) -> PackageDir:
    """The directory a pkg: spec names. not_allowed when the spec breaks the rule (checked
    before any lookup), not_found when the package is not installed."""
    name, sub = parse(spec)
    root = package_root(name)
    if root is None:
        raise CheckFailure(ErrorKind.NOT_FOUND, f"{spec[:200]}: Python package {name!r} is not installed")
    path = Path(os.path.realpath(root / sub)) if sub else root
    if path != root and root not in path.parents:
        raise refuse(spec, f"the path leaves the package's directory {root} (to {path})")
    return PackageDir(name, root, sub, path)

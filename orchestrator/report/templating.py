"""What the markdown and HTML renderers share: the Jinja2 environment over templates/
(orchestrator.templates), the status globals, and number formatting.

The templates compiled are kept in the state folder (FLEET_HOME, else ~/.local/state/model-fleet,
under templates/; not the cache folder, which worker hosts may share: the compiled code runs):
compiling them costs a report about 0.07 s each time. A kept template is used only when its
source, Jinja2, Python, the environment's options and the files of its filters are those it was
compiled with (a checksum of all of them); anything else, an unreadable or corrupt file
included, compiles the template again. The folder must be the user's own and closed to others,
else nothing is kept."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from types import BuiltinMethodType
from typing import Any

import jinja2
import jinja2.runtime
import markupsafe
from jinja2.bccache import Bucket

from fleet.protocol import FAILING, PASSED, RANK, STATUSES
from fleet.settings import home_folder


def number(value: Any, digits: int = 2, empty: str = "-") -> str:
    if value is None or value == "":
        return empty
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def quality_verdict(q: Any) -> str:
    """What a quality record (workers/quality.py) says, in words: passed, failed, information
    only, or "no gate: <reason>" when no bound was checked. Any record renders, with or without
    a bound."""
    if not isinstance(q, dict):
        return "no quality record"
    passed, reason = q.get("passed"), q.get("reason")
    if passed is None and reason:
        return f"no gate: {reason}" + (" (synthetic weights)" if q.get("informational") else "")
    if q.get("informational"):
        return "information only (synthetic weights)"
    if passed is None:
        return "no gate: no bound was checked"
    if passed is True:
        return "passed"
    return f"failed: {reason}" if reason else "failed"


def template_dir() -> str:
    """templates/ of the checkout this module was imported from (a source tree or a git worktree),
    else the installed package data (orchestrator.templates)."""
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return str(checkout)
    return str(resources.files("orchestrator.templates"))


# From this many results a report summarises: the jobs that need a look are listed (not passing,
# regressed or improved, unexpected, flaky), the others counted; every job is in the JSON report.
COMPACT_FROM = 500


def notable(row: dict[str, Any]) -> bool:
    """Whether a summarised report lists this job."""
    return (
        row["status"] not in PASSED
        or row.get("change") in ("regressed", "improved")
        or bool(row.get("unexpected") or row.get("flaky"))
    )


_DICT_ATTRIBUTES = frozenset(dir(dict))


class _Context(jinja2.runtime.Context):
    """`row.get("x")` called at once: Jinja2 first asks any callable whether it wants the
    context passed (about 1 µs, tens of thousands of times a report); a method of a built-in
    type (dict.get, str.startswith) cannot want it. Same outcome otherwise."""

    def call(__self, __obj: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if type(__obj) is BuiltinMethodType:
            kwargs.pop("_block_vars", None)
            kwargs.pop("_loop_vars", None)
            try:
                return __obj(*args, **kwargs)
            except StopIteration:  # as Jinja2 does
                return __self.environment.undefined(
                    "value was undefined because a callable raised a StopIteration exception"
                )
        return super().call(__obj, *args, **kwargs)


class _Environment(jinja2.Environment):
    """`row.status` on a plain dict looked up as a key at once: Jinja2 tries the attribute first,
    and the AttributeError it catches costs more than the lookup (a report's templates read
    hundreds of thousands of fields). Same outcome: a dict's own attributes (`row.get`) still
    win, a missing key is undefined. Calls through _Context."""

    context_class = _Context

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_ATTRIBUTES:
            try:
                return obj[attribute]
            except KeyError:
                return self.undefined(obj=obj, name=attribute)
        return super().getattr(obj, attribute)


class _CompiledTemplates(jinja2.FileSystemBytecodeCache):
    """Jinja2's cache of compiled templates, checksummed with what the compiled code depends on
    beyond the source (`stamp`), and never in the way: a file it cannot read or load compiles
    the template again, one it cannot write is not kept."""

    def __init__(self, directory: str, stamp: str) -> None:
        super().__init__(directory, "%s.jinja")
        self.stamp = stamp

    def get_source_checksum(self, source: str) -> str:
        return hashlib.sha256(f"{self.stamp}\0{source}".encode()).hexdigest()

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # a corrupt file (pickle and marshal raise many kinds): compiled again
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def _private_folder(path: Path) -> bool:
    """Whether path is (now) a folder of this user's that nobody else can write or read."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700


def _stamp(env: jinja2.Environment) -> str:
    """What a template's compiled code depends on besides its source: Jinja2 and Python, the
    options that change lexing and code generation, and the files of the filters and tests
    (Jinja2's optimizer calls them on constants while compiling)."""
    files = {markupsafe.__file__}  # escape(), called on constants too
    for f in (*env.filters.values(), *env.tests.values()):
        name = getattr(getattr(f, "func", f), "__module__", None) or ""  # func: a functools.partial's
        source = getattr(sys.modules.get(name), "__file__", None)
        if source and not name.startswith("jinja2"):  # Jinja2's own: its version below
            files.add(source)
    h = hashlib.sha256()
    options = (
        jinja2.__version__,
        sys.version,
        type(env).__qualname__,
        env.autoescape,
        env.trim_blocks,
        env.lstrip_blocks,
        env.keep_trailing_newline,
        env.newline_sequence,
        env.optimized,
        sorted(env.extensions),
        sorted(env.filters),
        sorted(env.tests),
    )
    h.update(repr(options).encode())
    for name in sorted(files):
        h.update(name.encode() + b"\0" + Path(name).read_bytes())
    return h.hexdigest()


def environment(autoescape: bool, filters: dict[str, Callable[..., Any]], **globals_: Any) -> jinja2.Environment:
    """A strict environment (undefined names fail) with the status ranking every report shows."""
    env = _Environment(
        loader=jinja2.FileSystemLoader(template_dir()),
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters.update(filters)
    env.bytecode_cache = _kept_templates(env)
    env.globals.update(
        RANK=RANK, STATUSES=STATUSES, FAILING=[str(s) for s in FAILING], quality_verdict=quality_verdict, **globals_
    )
    return env


def _kept_templates(env: jinja2.Environment) -> _CompiledTemplates | None:
    """The compiled templates kept in $FLEET_HOME/templates; None where that folder cannot be had
    or is not the user's own and closed to others."""
    try:
        kept = home_folder(os.environ) / "templates"
    except RuntimeError:  # no home folder to be found (Path.home())
        return None
    return _CompiledTemplates(str(kept), _stamp(env)) if _private_folder(kept) else None

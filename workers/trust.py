"""The worker's trust policy: what a job message may make this worker do.

Whoever can write to Redis can enqueue a job, and a job carries its family's candidates.
A worker therefore never imports a repository's own code, reads a local directory or
unpickles weights just because a message asks: each needs the worker to have been started to
allow it (fleet-worker --trust-remote-code, --allow-pickle, --allow-path DIR). `pkg:` paths
inside installed Python packages are allowed by default (installing a package already trusts
it) under the rule of workers.pkgpath: an installed top-level package's name, found without
importing anything, and no way out of its directory; no flag allows more. A refused candidate
is passed over with kind not_allowed, naming the flag that would allow it (or the pkg: rule);
the resolver goes on to the next candidate.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

from fleet.catalog import Candidate
from fleet.errors import CheckFailure, ErrorKind
from fleet.settings import Settings
from workers import pkgpath


def require_allowed(cand: Candidate, settings: Settings) -> None:
    """Raise CheckFailure(not_allowed) when this worker's policy does not allow the candidate."""
    if cand.trust_remote_code and not settings.trust_remote_code:
        _refuse(cand, "asks for trust_remote_code (running the repository's own code)", "--trust-remote-code")
    if cand.allow_pickle and not settings.allow_pickle:
        _refuse(cand, "asks for allow_pickle (unpickling weights can run code)", "--allow-pickle")
    if cand.path:
        _require_path(cand, cand.path, settings)


def _refuse(cand: Candidate, what: str, flag: str) -> NoReturn:
    raise CheckFailure(
        ErrorKind.NOT_ALLOWED,
        f"{cand.name}: {what}; this worker does not allow it (start it with fleet-worker {flag})",
        {"flag": flag},
    )


def _require_path(cand: Candidate, spec: str, settings: Settings) -> None:
    if pkgpath.is_pkg(spec):
        try:
            pkgpath.resolve(spec)  # not_allowed when the spec breaks the pkg: rule
        except CheckFailure as exc:
            if exc.kind == ErrorKind.NOT_FOUND:
                return  # the resolver reports it as not_found
            raise CheckFailure(exc.kind, f"{cand.name}: {exc.message}", exc.data) from None
        return
    target = Path(os.path.realpath(Path(spec).expanduser()))  # symlinks resolved, '..' collapsed
    allowed = [Path(os.path.realpath(p)) for p in settings.allow_paths]
    if not _inside(target, allowed):
        _refuse(cand, f"reads the local directory {target}", f"--allow-path {target}")


def _inside(target: Path, roots: list[Path]) -> bool:
    return any(target == root or root in target.parents for root in roots)

"""Expected outcomes per job (expectations.toml), and which outcomes of a run were unexpected.

    [expect]
    "xclip@cuda" = "FAILED: kernel gap, until transformers 5.30"
    "*@cuda" = "SKIPPED: no GPU in CI"
    "llama@cpu" = "REAL"

Keys are job ids or fnmatch patterns; an exact key wins over patterns, and among patterns the
first in the file wins. The value is a status, optionally followed by ": reason". A reason that
ends in "until LIBRARY VERSION" makes the expectation lapse once the result's environment
has LIBRARY at VERSION or later (the gap was meant to be closed by then).

Unexpected outcomes: a status other than the expected one, unexpected passes included (an
expected FAILED that came out REAL). A job with no expectation is expected to pass or be
skipped: FAILED, LOST and FLAKY are unexpected.

A key may name a capability variant after `#` (docs/variants.md): its value is a verdict
(works, mismatch, error, not_applicable), an error optionally with its kind in parentheses,
then optionally ": reason" ("until" works the same). A job that ran the variant with another
verdict (or another error kind) is unexpected ("unexpected variant"); one that did not run it
is not judged on it:

    "llama@cuda#bf16" = "works"
    "*@cpu#flash" = "not_applicable: no FlashAttention on cpu"
    "t5@cpu#compile" = "error(compile_error): graph break in the cache, until transformers 5.30"
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

from fleet import records, tomlfile
from fleet.errors import BadInput, FileMissing
from fleet.protocol import FAILING, STATUSES, Result, Status
from fleet.variants import ERROR_KINDS, VERDICTS, VariantError
from fleet.variants import parse as parse_variants

UNTIL = re.compile(r"until\s+([A-Za-z0-9_.-]+)\s+([0-9][0-9A-Za-z.+-]*)\s*$")
VARIANT_VALUE = re.compile(r"^([a-z_]+)\s*(?:\(\s*([a-z_]+)\s*\))?$")  # verdict, error(kind)


@dataclass(frozen=True)
class Expectation:
    pattern: str
    status: str
    reason: str
    until: tuple[str, str] | None = None  # (library, version)
    variant: str | None = None  # a capability variant's canonical name: status is then a verdict
    kind: str | None = None  # an expected `error` verdict's kind; None: any kind

    @property
    def outcome(self) -> str:
        """The expected outcome as written: a status, a verdict, or error(kind)."""
        return f"{self.status}({self.kind})" if self.kind else self.status

    def lapsed(self, result: Result) -> bool:
        if self.until is None:
            return False
        library, version = self.until
        have = (result.get("environment") or {}).get(library)
        if not have:
            return False
        try:
            return Version(str(have)) >= Version(version)
        except InvalidVersion:
            return False

    def as_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "status": self.status, "reason": self.reason}


class Expectations:
    def __init__(self, entries: list[Expectation], source: str = "expectations") -> None:
        self.entries = [e for e in entries if e.variant is None]
        self.variant_entries = [e for e in entries if e.variant is not None]
        self.source = source
        self.exact = {e.pattern: e for e in self.entries if not _is_pattern(e.pattern)}

    def lookup(self, job_id: str) -> Expectation | None:
        if job_id in self.exact:
            return self.exact[job_id]
        patterns = (e for e in self.entries if _is_pattern(e.pattern))
        return next((e for e in patterns if fnmatch.fnmatchcase(job_id, e.pattern)), None)

    def judge(self, result: Result) -> dict[str, Any]:
        """{expected, reason, pattern, unexpected, lapsed, kind} for one result."""
        status = str(result["status"])
        exp = self.lookup(result["job_id"])
        lapsed = exp is not None and exp.lapsed(result)
        if exp is None or lapsed:
            unexpected = status in (*FAILING, Status.FLAKY)
            verdict: dict[str, Any] = {"expected": None, "reason": None, "pattern": None, "unexpected": unexpected}
            if lapsed and exp is not None:
                verdict.update(lapsed=exp.as_dict())
        else:
            unexpected = status != exp.status
            verdict = {"expected": exp.status, "reason": exp.reason, "pattern": exp.pattern, "unexpected": unexpected}
        verdict["kind"] = _kind(verdict["expected"], status) if unexpected else "expected"
        missed, matched = self._variants(result)
        if matched:
            verdict["variants_expected"] = matched
        if missed:
            verdict["variants"] = missed
            if not unexpected:
                verdict.update(unexpected=True, kind="unexpected variant")
        return verdict

    def _variants(self, result: Result) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The variants the result ran with another verdict than expected, and those as expected
        (per variant, an exact key first, then the first pattern). A variant the job did not run
        is not judged."""
        record: Any = result.get("variants")
        ok = record is not None and records.variants_problem(record) is None  # a malformed one: the report says so
        ran = {v["variant"]: v for v in record["results"]} if ok else {}
        jid, seen = result["job_id"], set()
        missed: list[dict[str, Any]] = []
        matched: list[dict[str, Any]] = []
        ordered = sorted(self.variant_entries, key=lambda e: _is_pattern(e.pattern))
        for e in ordered:
            if e.variant in seen or e.variant not in ran or e.lapsed(result):
                continue
            if e.pattern != jid and not (_is_pattern(e.pattern) and fnmatch.fnmatchcase(jid, e.pattern)):
                continue
            seen.add(e.variant)
            entry = ran[e.variant]
            got = str(entry["verdict"])
            if got == "error" and entry.get("kind"):
                got = f"error({entry['kind']})"
            same = entry["verdict"] == e.status and (e.kind is None or entry.get("kind") == e.kind)
            row = {"variant": e.variant, "expected": e.outcome, "got": got, "reason": e.reason, "pattern": e.pattern}
            (matched if same else missed).append(row)
        return missed, matched


def _kind(expected: str | None, status: str) -> str:
    """unexpected pass (better than expected), unexpected failure (worse), or unexpected (other)."""
    from fleet.protocol import RANK

    if expected is None:
        return "unexpected failure"
    if RANK[status] > RANK[expected]:
        return "unexpected pass"
    return "unexpected failure"


def _is_pattern(key: str) -> bool:
    return any(c in key for c in "*?[")


def parse(text: str, source: str) -> Expectations:
    data = tomlfile.loads(text, source, BadInput)
    unknown = set(data) - {"expect"}
    if unknown:
        raise BadInput(f"{source}: unknown table(s) {sorted(unknown)}; expected only [expect]")
    table = data.get("expect")
    if not isinstance(table, dict):
        raise BadInput(f'{source}: missing [expect] table (e.g. "llama@cpu" = "REAL")')
    entries = []
    for key, value in table.items():
        if not isinstance(value, str):
            raise BadInput(f'{source}: [expect] "{key}": expected a string "STATUS[: reason]", got {value!r}')
        if not key.strip():
            raise BadInput(f"{source}: [expect] has an empty key")
        status, _, reason = value.partition(":")
        status, reason = status.strip().upper(), reason.strip()
        key, hashed, variant_name = key.partition("#")
        variant = kind = None
        if hashed and not variant_name.strip():
            raise BadInput(f'{source}: [expect] "{key}#": no variant named after "#" (e.g. "{key}#bf16")')
        if variant_name:
            variant, status, kind = _variant_value(f'{source}: [expect] "{key}#{variant_name}"', variant_name, value)
        elif status not in STATUSES:
            raise BadInput(f'{source}: [expect] "{key}": unknown status {status!r}; one of {", ".join(STATUSES)}')
        m = UNTIL.search(reason)
        until = None
        if m:
            try:
                Version(m.group(2))
            except InvalidVersion:
                raise BadInput(f'{source}: [expect] "{key}": bad version {m.group(2)!r} after "until"') from None
            until = (m.group(1), m.group(2))
        entries.append(Expectation(key, status, reason, until, variant, kind))
    return Expectations(entries, source)


def _variant_value(where: str, name: str, value: str) -> tuple[str, str, str | None]:
    """(canonical variant name, verdict, error kind or None) of a `job#variant` entry."""
    try:
        (parsed,) = parse_variants([name], where=where)
    except VariantError as exc:
        raise BadInput(exc.message) from None
    except ValueError:  # "all" or "default": several variants
        raise BadInput(f"{where}: name one variant, not a list or a group ({name!r})") from None
    written = value.partition(":")[0].strip()
    m = VARIANT_VALUE.match(written.lower())
    if m is None or m.group(1) not in VERDICTS:
        raise BadInput(
            f"{where}: unknown verdict {written!r}; one of {', '.join(VERDICTS)} "
            '(an error may name its kind: "error(compile_error)"), then optionally ": reason"'
        )
    verdict, kind = m.group(1), m.group(2)
    if kind is not None and verdict != "error":
        raise BadInput(f"{where}: only an error has a kind; {written!r} gives one to {verdict}")
    if kind is not None and kind not in ERROR_KINDS:
        raise BadInput(f"{where}: unknown error kind {kind!r}; one of {', '.join(ERROR_KINDS)}")
    return parsed.name, verdict, kind


def load(path: str | Path | None) -> Expectations | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise FileMissing(f"expectations file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"expectations file {p}: cannot read it: {exc}") from None
    return parse(text, str(p))


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


def dumps(results: list[Result], run_id: str) -> str:
    """An expectations file that expects each job's outcome in this run."""
    lines = [
        f"# Expectations written by `orchestrator expect {run_id}`: each job's outcome in that run.",
        '# Edit reasons; keys may be fnmatch patterns ("*@cuda"). Use with --expectations FILE.',
        "[expect]",
    ]
    for r in sorted(results, key=lambda r: r["job_id"]):
        status = str(r["status"])
        err: dict[str, Any] = dict(r.get("error") or {})
        why = f"{err.get('kind')}: {err.get('message', '')}"[:120] if err and status != Status.FLAKY else ""
        if status == Status.FLAKY:
            why = f"pass ratio {r.get('pass_ratio')}"
        reason = f"seen in run {run_id}" + (f" ({why})" if why else "")
        reason = UNTIL.sub("", reason.replace(":", " -"))  # keep the value parseable as STATUS: reason
        lines.append(f"{_toml_string(r['job_id'])} = {_toml_string(f'{status}: {reason}')}")
    return "\n".join(lines) + "\n"


def unexpected(results: list[Result], expectations: Expectations) -> list[Result]:
    return [r for r in results if expectations.judge(r)["unexpected"]]

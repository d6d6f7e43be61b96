"""Known-answer pins, the part both sides share: how a pin is keyed and how an output's
fingerprint is compared with it. No torch: the worker and the control plane both use it.

A pin is plain data: {model, revision, weights_sha256, device_type, variant, check, expected,
tolerance, source}. `expected` is a check's fingerprint of a REAL output (workers/checks:
Check.fingerprint); `tolerance` gives an absolute tolerance per field, and a field without one
must be equal exactly. `variant` (None: the job's own run) scopes a pin to a capability variant
(fleet/variants.py: a precision and/or an attention, no feature): the same check's output with
the model re-cast and re-dispatched, judged by workers/variants.py.
"""

from __future__ import annotations

import math
from typing import Any

from fleet.devices import Device
from fleet.errors import CheckFailure, ErrorKind, IntegrityFailure

KEY_FIELDS = ("model", "revision", "weights_sha256", "device_type", "variant")


def device_type(device: str | Device) -> str:
    """cpu | cuda: pins hold per device type, not per GPU index."""
    return (device if isinstance(device, Device) else Device.parse(device)).type


def key(pin: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(pin.get(f) for f in KEY_FIELDS)


def find(
    pins: list[dict[str, Any]],
    model: str,
    revision: str | None,
    weights: str | None,
    dev_type: str,
    variant: str | None = None,
) -> tuple[dict[str, Any], str] | None:
    """The pin for these weights on this device type (and variant), and how it was found:
    "exact" (model, revision, digest); else "same_weights", a pin for the same bytes under
    another name; else "same_model_revision", a pin for the same model and revision with other
    bytes (not for a variant: the job's own pin judges the bytes)."""
    pins = [p for p in pins if p.get("variant") == variant]
    wanted = (model, revision, weights, dev_type, variant)
    # A pin without a revision holds for every revision of its model (results always name theirs:
    # keyed strictly, it matched nothing, guarded nothing, and called its own bytes another model).
    exact = next((p for p in pins if key(_any_revision(p, revision)) == wanted), None)
    if exact is not None:
        return exact, "exact"
    same_bytes = next(
        (p for p in pins if weights and p.get("weights_sha256") == weights and p.get("device_type") == dev_type), None
    )
    if same_bytes is not None:
        return same_bytes, "same_weights"
    if variant is not None:
        return None
    same_model = next(
        (
            p
            for p in pins
            if p.get("model") == model and p.get("revision") in (revision, None) and p.get("device_type") == dev_type
        ),
        None,
    )
    return (same_model, "same_model_revision") if same_model is not None else None


def _any_revision(pin: dict[str, Any], revision: str | None) -> dict[str, Any]:
    return pin if pin.get("revision") is not None else {**pin, "revision": revision}


def differences(expected: dict[str, Any], got: dict[str, Any], tolerance: dict[str, float]) -> dict[str, str]:
    """Field -> why it differs; empty when every expected field matches."""
    out: dict[str, str] = {}
    for name, want in expected.items():
        if name not in got:
            out[name] = "missing from the output"
            continue
        atol = tolerance.get(name)
        if atol is None:
            if got[name] != want:
                out[name] = "not equal"
            continue
        a, b = _numbers(want), _numbers(got[name])
        if a is None or b is None or len(a) != len(b):
            out[name] = "not comparable as numbers of the same length"
            continue
        worst = max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)
        if not math.isfinite(worst) or worst > atol:
            out[name] = f"max abs diff {worst:.3g} > tolerance {atol:g}"
    return out


def judge(
    pins: list[dict[str, Any]],
    model: str,
    revision: str | None,
    weights: str | None,
    device: str,
    fingerprint: dict[str, Any],
    tolerance: dict[str, float],
    alias: str | None = None,
    converted: bool = False,
    variant: str | None = None,
) -> dict[str, Any]:
    """output["known_answer"] for a passing result. Strict: a pin for these bytes under another
    name (not the candidate's declared alias) is identity_mismatch, the bytes are another model's;
    a pin for this model and revision with other bytes is weights_corrupt, whatever the output,
    except for weights converted from a GGUF file (`converted`: a re-conversion may change bytes
    and nothing else; the GGUF file itself is held to the lock); a differing output is
    known_answer_mismatch. `variant`: only the pins scoped to that variant (the output is the
    variant's)."""
    found = find(pins, model, revision, weights, device_type(device), variant)
    base: dict[str, Any] = {"fingerprint": fingerprint, "tolerance": tolerance}
    if found is None:
        return {"pinned": False, "matched": None, **base}
    pin, how = found
    if how == "same_weights" and pin.get("model") not in (model, alias):  # the same name is the same model
        raise CheckFailure(
            ErrorKind.IDENTITY_MISMATCH,
            f"{model}: the bytes loaded ({weights}) are pinned as {pin.get('model')}@{pin.get('revision')}, "
            "another model (declare alias_of in the catalog if it is the same one)",
            {"pinned_as": pin.get("model"), "revision": pin.get("revision"), "weights": weights},
        )
    if how == "same_model_revision" and not converted:
        raise IntegrityFailure(
            ErrorKind.WEIGHTS_CORRUPT,
            f"{model}@{revision} is pinned with weights {pin.get('weights_sha256')}, the bytes loaded are {weights}",
            {"pinned_weights": pin.get("weights_sha256"), "loaded_weights": weights},
        )
    diff = differences(pin["expected"], fingerprint, pin.get("tolerance", {}))
    if diff:
        why = "; ".join(f"{k}: {v}" for k, v in diff.items())
        if how == "same_model_revision":
            why += f"; the weights loaded ({weights}) are not the pinned ones ({pin.get('weights_sha256')})"
        raise CheckFailure(
            ErrorKind.KNOWN_ANSWER_MISMATCH,
            f"{model}: output{f' in variant {variant}' if variant else ''} differs from the pinned known answer "
            f"({why})",
            {
                "expected": pin["expected"],
                "got": fingerprint,
                "tolerance": pin.get("tolerance", {}),
                "fields": diff,
                "pinned_by": how,
                "pinned_weights": pin.get("weights_sha256"),
                "loaded_weights": weights,
            },
        )
    if how == "same_weights" and pin.get("model") != model:
        how = "alias"
    return {"pinned": True, "matched": True, "pin_source": pin.get("source", ""), "pinned_by": how, **base}


def _numbers(v: Any) -> list[float] | None:
    items = v if isinstance(v, list) else [v]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in items):
        return None
    return [float(x) for x in items]

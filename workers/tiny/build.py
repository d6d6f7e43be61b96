"""A shrunk model of any transformers class (architecture jobs, synthetic "auto:<Class>"):
the first shrink variant that builds, takes our inputs and runs one forward pass."""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Any

import torch

from fleet.errors import CheckFailure, ErrorKind
from workers.tiny import SEED, Unsupported
from workers.tiny.inputs import PLANS, make_inputs
from workers.tiny.shrink import MAX_UNSHRUNK_WIDTH, VARIANTS, tiny_config, width


def class_info(class_name: str) -> tuple[type, str]:
    """The model class and its model_type, from transformers' own mappings."""
    import transformers
    from transformers.models.auto import modeling_auto

    from workers.architectures import TASKS, class_names

    model_type = None
    for mapping in (*TASKS.values(), *(n for n in dir(modeling_auto) if n.endswith("_MAPPING_NAMES"))):
        for mt, value in getattr(modeling_auto, mapping, {}).items():
            if class_name in class_names(value):
                model_type = mt
                break
        if model_type:
            break
    if model_type is None:
        raise CheckFailure(ErrorKind.UNSUPPORTED_ARCHITECTURE, f"{class_name} is in no transformers task mapping")
    try:
        cls = getattr(transformers, class_name)
    except (AttributeError, ImportError, RuntimeError) as exc:
        raise Unsupported(f"{class_name} cannot be imported: {type(exc).__name__}: {exc}") from None
    return cls, model_type


def _uses_mrope(cls: type) -> bool:
    try:
        return "mrope_section" in inspect.getsource(inspect.getmodule(cls))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False


def build_model(class_name: str, device: torch.device, task: str = "") -> tuple[Any, str]:
    """The first shrink variant that builds, takes our inputs and runs one forward pass. When
    none runs, the first that built (the check then shows the model's own error); when none
    builds, Unsupported with the first variant's reason."""
    cls, model_type = class_info(class_name)
    config_class: Any = getattr(cls, "config_class", None)
    own_type = getattr(config_class, "model_type", None)
    if isinstance(own_type, str) and own_type:  # the class's own config, not a type that reuses the class
        model_type = own_type
    first_error: Unsupported | None = None
    built: tuple[Any, str] | None = None
    mrope = _uses_mrope(cls)
    for number, values in enumerate(VARIANTS):
        try:
            config = tiny_config(model_type, values, config_class, mrope)
            if getattr(config, "pad_token_id", 0) is None:  # batches of 2 need a padding token
                config.pad_token_id = 0
            if number == len(VARIANTS) - 1 and width(config) > MAX_UNSHRUNK_WIDTH:
                continue
            torch.manual_seed(SEED)
            try:
                model = cls(config).to(device).eval()
            except Exception as exc:
                raise Unsupported(
                    f"{class_name} could not be built from a shrunk config: {type(exc).__name__}: {exc}"
                ) from None
            digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
            inputs = make_inputs(model, device, task, PLANS[0])
        except Unsupported as exc:
            first_error = first_error or exc
            continue
        except Exception as exc:
            first_error = first_error or Unsupported(f"inputs for {class_name}: {type(exc).__name__}: {exc}")
            continue
        built = built or (model, digest)
        for plan in PLANS:
            try:
                inputs = inputs if plan == PLANS[0] else make_inputs(model, device, task, plan)
                with torch.inference_mode():
                    model(**inputs)
            except Exception:
                continue
            model.fleet_inputs = plan  # the check makes the same inputs (make_inputs reads it)
            model.fleet_variant = number
            return model, digest
    if built is not None:
        return built
    assert first_error is not None
    raise first_error


def describe(model: Any) -> str:
    """How the builder made this model, for the attempt's detail."""
    variant = getattr(model, "fleet_variant", None)
    if variant is None:  # no variant ran a forward pass: the check shows the model's own error
        return "shrunk default config (no variant ran a forward pass; first that built)"
    return f"shrunk default config (variant {variant}, inputs {getattr(model, 'fleet_inputs', PLANS[0])})"

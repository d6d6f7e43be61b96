"""A shrunk model of any transformers class (architecture jobs, synthetic "auto:<Class>"):
the first shrink variant that builds, takes our inputs and runs one forward pass."""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass
from typing import Any

import torch

from fleet.errors import CheckFailure, ErrorKind
from workers.tiny import SEED, Unsupported, missing_package
from workers.tiny.inputs import PLANS, make_inputs
from workers.tiny.shrink import MAX_REPAIRS, MAX_UNSHRUNK_WIDTH, VARIANTS, repair_from_error, tiny_config, width


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
    if _not_exported(transformers, class_name):
        # a task mapping names a class the package does not export (transformers 5.25: VoxtralRealtimeTextModel)
        raise CheckFailure(
            ErrorKind.LOAD_ERROR,
            f"{class_name} is named by transformers' {model_type!r} mapping but transformers does not export it: "
            f"{LIBRARY}",
        )
    try:
        cls = getattr(transformers, class_name)
        getattr(cls, "config_class", None)  # a placeholder class of a missing backend raises here
    except (AttributeError, ImportError, RuntimeError) as exc:
        raise Unsupported(f"{class_name} cannot be imported: {type(exc).__name__}: {exc}") from None
    return cls, model_type


LIBRARY = "the library's"  # orchestrator.report.coverage.LIBRARY: a miss the library causes


def _not_exported(module: Any, name: str) -> bool:
    """The package has no such name (not one whose import fails: a missing backend, the harness's to report)."""
    try:
        getattr(module, name)
    except AttributeError:
        return True
    except Exception:
        return False
    return False


def _uses_mrope(cls: type) -> bool:
    try:
        return "mrope_section" in inspect.getsource(inspect.getmodule(cls))  # type: ignore[arg-type]
    except (OSError, TypeError):
        return False


def build_model(class_name: str, device: torch.device, task: str = "", variants: Any = VARIANTS) -> tuple[Any, str]:
    """The first shrink variant that builds, takes our inputs and runs one forward pass.

    When no variant runs, whose fault that is: the class's own unshrunk default config is built
    (when it is small enough, MAX_DEFAULT_PARAMS) and tried with the same inputs. If it runs, it
    is the twin (the shrinker got a width wrong, never the model's failure); if it fails too, the
    first shrunk model that built is returned, marked so, and the check shows the model's own
    error (the library's); if it cannot be tried, the miss is the harness's (Unsupported)."""
    cls, model_type = class_info(class_name)
    if getattr(cls, "forward", None) is torch.nn.Module.forward:  # BarkModel, GLM-Image's VQ-VAE
        raise Unsupported(
            f"{class_name} defines no forward() of its own (nn.Module's): it runs only through its own "
            "methods (generate, encode, decode), which a forward check does not call"
        )
    config_class: Any = getattr(cls, "config_class", None)
    own_type = getattr(config_class, "model_type", None)
    if isinstance(own_type, str) and own_type:  # the class's own config, not a type that reuses the class
        model_type = own_type
    first_error: Unsupported | None = None
    unfed: Exception | None = None  # an input the harness does not make: no config would help
    failed: str | None = None  # the first shrunk model's error in forward
    built: tuple[Any, str] | None = None
    mrope = _uses_mrope(cls)
    # the repair pass with the first variant only: one more try where every plain variant failed (a
    # class that runs only unshrunk pays for it before its default twin)
    tries = [*((number, values, False) for number, values in enumerate(variants)), (0, variants[0], True)]
    for number, values, repair in tries:
        try:
            last = number == len(variants) - 1
            model, digest = _shrunk(cls, model_type, values, config_class, mrope, device, class_name, last, repair)
        except _Skip:
            continue
        except Unsupported as exc:
            if exc.any_config:  # a package not installed: every config needs it
                raise
            first_error = first_error or exc
            continue
        try:
            inputs = make_inputs(model, device, task, PLANS[0])
        except Exception as exc:
            if isinstance(exc, Unsupported) and exc.any_config:  # an input kind not made: any config alike
                raise
            unfed = unfed or (exc if isinstance(exc, Unsupported) else Unsupported(f"inputs: {_text(exc)}"))
            continue
        error = _run_plans(model, device, task, inputs)
        switched = _switched_on(model, error, device, class_name) if error is not None else None
        if switched is not None:  # a submodule the checkpoints' configs switch on: built with it
            (model, digest), error = switched, _run_plans(switched[0], device, task)
        built = built or (model, digest)
        if error is None:
            model.fleet_variant = number
            return model, digest
        if _harness(error):
            unfed = unfed or error
        else:
            failed = failed or _text(error)
    if unfed is not None and failed is None:  # the harness cannot feed it, whatever the config
        raise unfed if isinstance(unfed, Unsupported) else Unsupported(f"inputs for {class_name}: {_text(unfed)}")
    why = failed or (first_error.message if first_error else "no variant")
    default = _default_twin(cls, model_type, config_class, device, task, class_name)
    if default.model is not None and not default.why:
        default.model[0].fleet_shrunk_failed = why[:200]
        return default.model
    if default.model is not None:  # fails in forward too: the library's; the check shows its error
        failing = built or default.model
        failing[0].fleet_default = default.why
        return failing
    if built is not None:
        raise Unsupported(f"every shrunk config fails in forward ({why[:200]}); {default.why}")
    if default.why.startswith(BUILD_FAILS_TOO):  # the class cannot be built at all: the library's
        raise CheckFailure(ErrorKind.LOAD_ERROR, f"{default.why}: the library's (shrunk: {why[:200]})")
    raise Unsupported(f"{why[:300]}; {default.why}")


MISSING_MODULE = re.compile(r"^'(\w+)' object has no attribute '(\w+)'$")
GATE = re.compile(r"^\s*if (?:self\.)?config\.(\w+)\s*:\s*$")


def _switched_on(model: Any, error: Exception, device: torch.device, class_name: str) -> tuple[Any, str] | None:
    """A forward that reads a submodule its config did not build: the module's __init__ builds it
    only under a boolean switch the default config leaves off and the checkpoints turn on
    (BLIP-2's image-text retrieval reads its Q-Former layers' text feed-forward, built only
    `if config.use_qformer_text_input:`). The model built again with the switch on, else None."""
    from workers.tiny.shrink import config_tree

    match = MISSING_MODULE.match(str(error)) if isinstance(error, AttributeError) else None
    owner = next((m for m in model.modules() if match and type(m).__name__ == match.group(1)), None)
    flag = _gate(type(owner), match.group(2)) if match and owner is not None else None
    switched = False
    for cfg, _ in config_tree(model.config) if flag else ():
        if vars(cfg).get(flag) is False:
            setattr(cfg, str(flag), True)
            switched = True
    if not switched:
        return None
    try:
        return _instantiate(type(model), model.config, device, class_name, "a shrunk config")
    except Unsupported:
        return None


def _gate(module: type, attribute: str) -> str | None:
    """The config switch a module's __init__ assigns `self.<attribute>` under (`if config.X:`)."""
    try:
        lines = inspect.getsource(module.__init__).splitlines()  # type: ignore[misc]
    except (OSError, TypeError):
        return None
    assign = re.compile(rf"^(\s*)self\.{re.escape(attribute)}\s*=")
    found = next((m for m in map(assign.match, lines) if m), None)
    if found is None:
        return None
    depth = len(found.group(1))
    for line in reversed(lines[: lines.index(found.string)]):
        if line.strip() and len(line) - len(line.lstrip()) < depth:  # the block the assignment is in
            gate = GATE.match(line)
            return gate.group(1) if gate else None
    return None


class _Skip(Exception):
    """A try not worth making: the depth-only variant of a config too wide to run unshrunk, or a
    repair pass that changes nothing."""


def _shrunk(
    cls: type,
    model_type: str,
    values: Any,
    config_class: Any,
    mrope: bool,
    device: torch.device,
    name: str,
    last: bool,
    repair: bool,
) -> tuple[Any, str]:
    """One variant's model. With repair (the last try, after every plain variant failed): what a
    default config leaves unset that a checkpoint's sets (workers.tiny.shrink.REPAIRS), tried only
    where it changes the config (_Skip else). Either way, a config the model refuses while being
    built is repaired where the error says how (_instantiate: repair_from_error)."""
    config = tiny_config(model_type, values, config_class, mrope, repair)
    if repair:
        try:
            plain = tiny_config(model_type, values, config_class, mrope).to_dict()
        except Unsupported:
            plain = None
        if plain == config.to_dict():
            raise _Skip
    if last and width(config) > MAX_UNSHRUNK_WIDTH:
        raise _Skip
    model, digest = _instantiate(cls, config, device, name, "a shrunk config")
    model.fleet_repaired = repair
    return model, digest


@dataclass
class Default:
    """What the class's own unshrunk default config did: its model (when it built and could be
    fed) and, unless it ran a forward pass, why not."""

    model: tuple[Any, str] | None
    why: str = ""


# The unshrunk default config is built (seeded) to tell whose fault a failing shrunk model is,
# and is the twin when it runs: at most this many parameters (400 MB of float32), counted on
# the meta device first.
MAX_DEFAULT_PARAMS = 100_000_000
# The image side the unshrunk default config gets when it names none (32 pixels are the shrunk
# models'; a detector or OCR backbone at its default depth pools them away).
DEFAULT_IMAGE_SIDE = 224
FAILS_TOO = "the unshrunk default config fails too"
BUILD_FAILS_TOO = "the class cannot be built from its own default config either"


def _instantiate(cls: type, config: Any, device: torch.device, class_name: str, what: str) -> tuple[Any, str]:
    _pad_token(config)
    _read_token_ids(cls, config)
    try:
        model = _construct(cls, config).to(device).eval()
        make = GENERATION.get(str(getattr(config, "model_type", "")))
        if make is not None and getattr(model, "generation_config", None) is not None:
            for key, value in make(config).items():
                setattr(model.generation_config, key, value)
    except Exception as exc:
        missing = missing_package(exc)
        text = missing or f"{type(exc).__name__}: {exc}"
        raise Unsupported(f"{class_name} could not be built from {what}: {text}", any_config=bool(missing)) from None
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode()).hexdigest()
    return model, digest


def _pad_token(config: Any) -> None:
    """Batches of 2 need a padding token: 0 where the config or its text config leaves it unset
    (a classifier of a multimodal model reads its text config's), and where a text config names
    one outside its vocabulary (Idefics3's and SmolVLM's default Llama text config: 128002 of
    32000, an embedding that cannot be built; a top-level one is left alone: MusicGen's decoder
    embeds its padding token as vocab_size)."""
    text: Any = getattr(config, "text_config", None)
    for cfg in (config, text):
        if cfg is not None and getattr(cfg, "pad_token_id", 0) is None:
            cfg.pad_token_id = 0
    pad, vocab = getattr(text, "pad_token_id", None), getattr(text, "vocab_size", None)
    if type(pad) is int and type(vocab) is int and not 0 <= pad < vocab:
        text.pad_token_id = 0


# A special token's id the modeling code reads from its config: `self.config.vision_start_token_id`.
CONFIG_TOKEN = re.compile(r"self\.config\.(\w+_token_id)\b")
# Tokens of generation, which a generation config may hold instead: never guessed.
GENERATION_TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id")


def _read_token_ids(cls: type, config: Any) -> None:
    """A special token's id that the class's modeling code reads from its config but the default
    config does not define (Qwen2.5-Omni's and Qwen3-Omni's thinker read vision_start_token_id,
    which only their talker config names; a checkpoint's config carries it): set, as a checkpoint
    would, to an id at the top of the vocabulary, which no text the harness makes uses (3..99)."""
    module = getattr(cls, "__module__", "")
    try:  # the class's own methods and its bases' in its module (not the module's other models)
        source = "".join(inspect.getsource(c) for c in cls.__mro__ if c.__module__ == module)
    except (OSError, TypeError):
        return
    text: Any = getattr(config, "text_config", None)
    vocab = getattr(text, "vocab_size", None) or getattr(config, "vocab_size", None)
    top = vocab - 1 if type(vocab) is int and vocab > 200 else 1000
    for name in dict.fromkeys(n for n in CONFIG_TOKEN.findall(source) if n not in GENERATION_TOKENS):
        try:
            getattr(config, name)
        except AttributeError:
            try:
                setattr(config, name, top)
                top -= 1
            except (ValueError, TypeError):
                pass


def _run_plans(model: Any, device: torch.device, task: str, inputs: dict[str, Any] | None = None) -> Exception | None:
    """Try the input plans in order; None when one ran a forward pass (the model remembers it),
    else the first plan's error."""
    first: Exception | None = None
    for plan in PLANS:
        try:
            if plan != PLANS[0] or inputs is None:
                inputs = make_inputs(model, device, task, plan)
            with torch.inference_mode():
                model(**inputs)
        except Exception as exc:
            first = first or exc
            continue
        model.fleet_inputs = plan  # the check makes the same inputs (make_inputs reads it)
        return None
    return first


def _text(exc: Exception) -> str:
    return exc.message if isinstance(exc, Unsupported) else f"{type(exc).__name__}: {exc}"


def _harness(exc: Exception) -> bool:
    """The harness's gap rather than the model's failure: an input kind we do not make, or
    forward() wanting arguments we do not give (as workers.checks.forward reports them)."""
    return isinstance(exc, Unsupported) or (isinstance(exc, TypeError) and "argument" in str(exc))


def _default_twin(
    cls: type, model_type: str, config_class: Any, device: torch.device, task: str, class_name: str
) -> Default:
    """The class's own default config, unshrunk: its model when it builds, and why it is no
    twin when it does not run (FAILS_TOO when it fails in forward: the library's)."""
    from workers.tiny.shrink import default_config

    try:
        try:
            config = default_config(model_type, config_class)
            params = _count(cls, config)
        except Exception as first:
            # what the repair pass fills in (and the table's values for fields a default leaves unset), unshrunk:
            # a class whose shrunk twins fail in forward is judged by the same model at its own size
            try:
                config = tiny_config(model_type, {}, config_class, repair=True)
                params = _count(cls, config)
            except Exception:
                raise first from None
    except Exception as exc:
        text = f"{type(exc).__name__}: {str(exc)[:200]}"
        if isinstance(exc, ImportError) or "install" in str(exc).lower():  # an optional package: ours to add
            return Default(None, f"an optional package is missing ({text})")
        if "meta" in str(exc).lower():  # the count needs real tensors: cannot tell cheaply
            return Default(None, f"the default config cannot be sized on the meta device ({text})")
        return Default(None, f"{BUILD_FAILS_TOO} ({text})")
    if params > MAX_DEFAULT_PARAMS:
        size = f"{params / 1e6:.0f} M parameters"
        return Default(None, f"the unshrunk default config ({size}) is too large to tell whose fault it is")
    try:
        model, digest = _instantiate(cls, config, device, class_name, "its default config")
        model.fleet_unshrunk = True
        model.fleet_image_side = DEFAULT_IMAGE_SIDE  # a config that names no image size: a real one
    except Unsupported as exc:
        return Default(None, f"{BUILD_FAILS_TOO} ({exc.message[:200]})")
    error = _run_plans(model, device, task)
    if error is None:
        model.fleet_variant = "default"
        return Default((model, digest))
    if _harness(error):
        return Default(None, f"the unshrunk default config cannot be fed either ({_text(error)[:200]})")
    return Default((model, digest), f"{FAILS_TOO} ({_text(error)[:200]}): the library's")


def _count(cls: type, config: Any) -> int:
    """The parameters of the class built from this config, on the meta device (nothing allocated)."""
    _pad_token(config)
    with torch.device("meta"):
        return sum(p.numel() for p in _construct(cls, config).parameters())


def _construct(cls: type, config: Any) -> Any:
    """The class built from the config, seeded, the config repaired where the model's refusal says
    how to make it consistent (shrink.repair_from_error), at most MAX_REPAIRS times."""
    for _ in range(MAX_REPAIRS):
        torch.manual_seed(SEED)
        try:
            return cls(config)
        except Exception as exc:
            if not repair_from_error(config, exc):
                raise
    torch.manual_seed(SEED)
    return cls(config)


# What a model's own generate() reads from the checkpoint's generation_config.json, by model_type:
# Pop2Piano conditions on a composer, one embedding per entry of composer_to_feature_token.
GENERATION: dict[str, Any] = {
    "pop2piano": lambda c: {"composer_to_feature_token": {f"composer{i + 1}": i for i in range(c.composer_vocab_size)}},
}


def describe(model: Any) -> str:
    """How the builder made this model, for the attempt's detail."""
    variant = getattr(model, "fleet_variant", None)
    plan = getattr(model, "fleet_inputs", PLANS[0])
    if variant == "default":
        shrunk = getattr(model, "fleet_shrunk_failed", "")
        return f"unshrunk default config (inputs {plan}; every shrunk variant failed: {shrunk})"
    if variant is None:  # no variant ran a forward pass: the check shows the model's own error
        why = getattr(model, "fleet_default", "")
        if getattr(model, "fleet_unshrunk", False):
            return f"unshrunk default config (no shrunk config built; {why})"
        return f"shrunk default config (no variant ran a forward pass; first that built; {why})"
    repaired = " with the repair pass" if getattr(model, "fleet_repaired", False) else ""
    return f"shrunk default config (variant {variant}{repaired}, inputs {plan})"

"""Tiny models built locally: seeded random weights of a small config, the last resort of a
resolution (catalog families) and the whole model of an architecture job. Results from them
are always SYNTHETIC.

Modules: synthetic (the catalog's builders and the entry point `build`), shrink (a default
config made small), build (a shrunk model of any transformers class), inputs (seeded inputs
per modality), tasks (the task of an architecture class). Here: what they share.
"""

from __future__ import annotations

import re
from typing import Any

from fleet.errors import CheckFailure, ErrorKind

SEED = 1234  # every tiny model's weights and inputs are seeded with it: identical on every device


class Unsupported(CheckFailure):
    """The harness cannot build or feed this model (its gap, not the model's failure)."""

    def __init__(self, message: str, any_config: bool = False) -> None:
        # one line: a missing backend's ImportError starts with a newline (the reason read empty)
        super().__init__(ErrorKind.HARNESS_UNSUPPORTED, " ".join(message.split())[:500])
        # True where no other config could help (a package not installed, an input kind the
        # harness does not make): the builder stops trying shrink variants and default configs
        self.any_config = any_config


# Optional packages some classes need that the project does not install, and why (the miss
# reason says it instead of the ImportError's "pip install" advice). timm: it imports torchvision
# at import time and transformers requires torchvision for timm too; the torchvision wheel PyPI
# has for this torch (0.28.0 for 2.13.0) is the CUDA build (its _C.so links libtorch_cuda, and on
# the CPU torch `import torchvision` fails: "operator torchvision::nms does not exist"); the CPU
# wheel is only on PyTorch's own index, which the project's machines do not reach. And torchvision
# installed would switch transformers' image processors to the torchvision ones (the X-CLIP
# family's CLIPImageProcessorPil would become CLIPImageProcessor): the catalog would change.
NOT_INSTALLED = {
    "timm": (
        "it needs torchvision, whose PyPI wheel for this torch is the CUDA build and does not import on "
        "the CPU torch; torchvision would also switch the catalog's image processors to the torchvision ones"
    ),
    # VibeVoice's generate() builds its default noise scheduler from diffusers
    "diffusers": "a diffusion library no model of the catalog needs; the project does not depend on it",
}


def missing_package(exc: BaseException) -> str | None:
    """The one-line reason for an ImportError of a package the project does not install, else None."""
    if isinstance(exc, ImportError):
        for package, why in NOT_INSTALLED.items():
            if f"the {package} library" in str(exc) or f"requires `{package}`" in str(exc):
                return f"needs {package}, which the project does not install: {why}"
    return None


CONFIG_ATTRIBUTE = re.compile(r"^'(\w+Config)' object has no attribute '(\w+)'$")


def default_config_lacks(model: Any, exc: BaseException) -> str | None:
    """A twin that ran its forward pass, then failed reading an attribute of its config (generate's
    cache, BltForCausalLM: 'BltConfig' object has no attribute 'num_hidden_layers') that the class's
    own unshrunk default config lacks too: the library's, with that as the reason; else None."""
    config = getattr(model, "config", None)
    match = CONFIG_ATTRIBUTE.match(str(exc)) if isinstance(exc, AttributeError) else None
    if config is None or match is None or type(config).__name__ != match.group(1):
        return None
    try:
        default = type(config)()
    except Exception:
        return None
    if hasattr(default, match.group(2)):
        return None
    return (
        f"AttributeError: {exc}; the class's own default config ({match.group(1)}()) has no "
        f"{match.group(2)!r} either: the library's"
    )

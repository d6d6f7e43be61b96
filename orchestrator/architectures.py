"""Architecture jobs: a catalog made from the classes the workers' transformers knows.

`--architectures all|TASK[,TASK]|CLASS[,...]` becomes one family per class, named
"arch:<Class>", with the check its task decides ("forward", or "generate" where the task
generates), synthetic builder "auto:<Class>", no candidates, repeats 1.

Where the list comes from (the control plane has no torch): an embedded run asks its own
interpreter (`python -m workers.architectures --json`, a subprocess, since the workers run
here too); `submit` reads what a live worker published in Redis at start
(fleet.store.registry, see workers.app).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

from fleet.catalog import Candidate, Catalog, Family, revision_problem
from fleet.errors import BadInput, FleetError
from fleet.names import ARCH_FAMILY_PREFIX, AUTO_CHECK, AUTO_SYNTHETIC_PREFIX, MODEL_FAMILY_PREFIX, NO_SYNTHETIC
from fleet.store import Registry

# A shrunk model runs in well under a second (median 0.1 s); a few default configs stay huge
# (measured: up to 14 GB RSS and 144 s before these limits): the limits keep one such class
# from holding a pool process or the host's memory. Past the memory limit: oom, or
# harness_unsupported when it happens while the builder shrinks and builds.
TIME_LIMIT_S = 60.0
MEMORY_LIMIT_MB = 4096.0


def local_listing() -> dict[str, Any]:
    """The listing of the transformers installed with this interpreter (the embedded workers')."""
    proc = subprocess.run(
        [sys.executable, "-m", "workers.architectures", "--json"], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise FleetError(f"could not list architectures: {proc.stderr.strip()[-300:]}")
    listing: dict[str, Any] = json.loads(proc.stdout)
    return listing


def published_listing(registry: Registry) -> dict[str, Any]:
    """The newest listing a live worker published in Redis."""
    listing = registry.newest_architectures()
    if listing is None:
        raise BadInput("no worker has published its architectures yet (start a worker, then submit again)")
    return listing


def select(listing: dict[str, Any], spec: str) -> list[dict[str, str]]:
    """Rows for "all", task names and class names (comma-separated); unknown names are refused."""
    rows: list[dict[str, str]] = listing["classes"]
    tasks = {r["task"] for r in rows}
    by_class = {r["class"]: r for r in rows}
    chosen: dict[str, dict[str, str]] = {}
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item == "all":
            chosen.update(by_class)
        elif item in tasks:
            chosen.update({r["class"]: r for r in rows if r["task"] == item})
        elif item in by_class:
            chosen[item] = by_class[item]
        else:
            raise BadInput(
                f"--architectures: {item!r} is neither 'all', a task ({', '.join(sorted(tasks))}) "
                f"nor a class known to transformers {listing.get('transformers')}"
            )
    if not chosen:
        raise BadInput("--architectures selects nothing")
    return sorted(chosen.values(), key=lambda r: (r["task"], r["class"]))


def family(row: dict[str, str]) -> Family:
    return Family(
        name=f"{ARCH_FAMILY_PREFIX}{row['class']}",
        check=row["check"],
        architectures=(row["class"],),
        synthetic=f"{AUTO_SYNTHETIC_PREFIX}{row['class']}",
        description=f"{row['task']} ({row['model_type']})",
        time_limit_s=TIME_LIMIT_S,
        memory_limit_mb=MEMORY_LIMIT_MB,
        repeats=1,
    )


def catalog(listing: dict[str, Any], spec: str) -> Catalog:
    source = f"transformers {listing.get('transformers')} task mappings"
    return Catalog(source=source, families={f.name: f for f in map(family, select(listing, spec))})


def task_of(family_name: str, description: str = "") -> str:
    """The task an architecture family's description starts with ('' for catalog families)."""
    if not family_name.startswith(ARCH_FAMILY_PREFIX):
        return ""
    return description.split(" ", 1)[0]


MODEL_RE = re.compile(r"^(?P<id>[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95})(?:@(?P<rev>[\w./-]{1,200}))?$")
ADHOC_TIME_LIMIT_S = 600.0


def adhoc_catalog(models: list[str]) -> Catalog:
    """`submit --model ORG/NAME[@REV]`: a family per model, its check chosen on the worker from
    the config's architecture (check "auto"), resolved, validated and evidenced like any candidate."""
    families: dict[str, Family] = {}
    for spec in models:
        m = MODEL_RE.match(spec)
        if not m or ".." in spec:
            raise BadInput(f"--model {spec[:200]!r}: expected ORG/NAME or ORG/NAME@REVISION")
        problem = revision_problem(m["rev"]) if m["rev"] else None
        if problem:  # the worker would refuse the job (fleet.jobs): say so now
            raise BadInput(f"--model {spec[:200]!r}: {problem}")
        fam = Family(
            name=f"{MODEL_FAMILY_PREFIX}{m['id']}",
            check=AUTO_CHECK,
            architectures=(),
            synthetic=NO_SYNTHETIC,
            candidates=(Candidate(id=m["id"], revision=m["rev"]),),
            time_limit_s=ADHOC_TIME_LIMIT_S,
            repeats=3,
        )
        families[fam.name] = fam
    return Catalog(source="ad hoc (--model)", families=families)

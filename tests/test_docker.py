"""docker/ cannot be built here (no engine): check what can be checked without one."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from fleet.devices import GPU_QUEUE
from orchestrator.cli import build_parser
from orchestrator.submit import hard_time_limit

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            out.append((op.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", ["Dockerfile.worker-cpu", "Dockerfile.worker-gpu", "Dockerfile.orchestrator"])
def test_dockerfile_copies_existing_files_and_runs_our_commands(name: str) -> None:
    ins = _instructions(DOCKER / name)
    assert ins[0][0] == "FROM"
    for op, rest in ins:
        if op == "COPY":
            *sources, _dest = shlex.split(rest)
            for src in sources:
                assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
    entry = next(rest for op, rest in ins if op == "ENTRYPOINT")
    cmd = next(rest for op, rest in ins if op == "CMD")
    import json

    program = json.loads(entry)[0]
    assert program in SCRIPTS, f"{name}: {program} is not a console script of the package"
    args = json.loads(cmd)
    if program == "fleet-worker":
        res = subprocess.run(
            [sys.executable, "-m", "fleet.launcher", *args, "--dry-run"],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "0"},
        )
        assert res.returncode == 0, res.stderr
    else:
        build_parser().parse_args(args)


def test_compose_services_and_redis_durability() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "cpu-worker", "gpu-worker", "beat", "flower"} <= set(services)
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--maxmemory-policy noeviction" in redis_cmd
    gpu = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["count"] == 1
    for svc in services.values():
        if "build" in svc:
            assert (DOCKER / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
    build_parser().parse_args(services["beat"]["command"])  # the beat command is one the CLI accepts


def test_kubernetes_grace_period_and_keda_trigger() -> None:
    deployment = yaml.safe_load((DOCKER / "k8s" / "gpu-worker.yaml").read_text())
    spec = deployment["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] >= hard_time_limit(600)
    container = spec["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    scaled, _auth = yaml.safe_load_all((DOCKER / "k8s" / "keda-scaledobject.yaml").read_text())
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis" and trigger["metadata"]["listName"] == GPU_QUEUE
    assert trigger["metadata"]["addressFromEnv"] in {e["name"] for e in container["env"]}

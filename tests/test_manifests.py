"""The deployment manifests against their schemas, offline: Kubernetes objects against the
Kubernetes JSON schemas shipped by kubernetes-validate (strict: no unknown field), compose
against the compose-spec schema shipped by check-jsonschema, KEDA's objects field by field (no
package ships KEDA's CRD schema). Then the probes and Flower's start command are run for real."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from fleet.devices import GPU_QUEUE
from fleet.launcher import command_line
from fleet.store import keys
from tests.helpers import ROOT

DOCKER = ROOT / "docker"
KUBERNETES_VERSION = "1.30.0"  # the oldest minor still supported upstream when this was written


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _deployment() -> dict[str, Any]:
    (doc,) = _docs(DOCKER / "k8s" / "gpu-worker.yaml")
    return doc


def _container() -> dict[str, Any]:
    container: dict[str, Any] = _deployment()["spec"]["template"]["spec"]["containers"][0]
    return container


def test_kubernetes_objects_match_the_kubernetes_schema() -> None:
    doc = _deployment()
    assert kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True) == "1.30"
    broken = json.loads(json.dumps(doc))
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["periodSecond"] = 30  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_keda_objects_have_keda_fields_only() -> None:
    scaled, auth = _docs(DOCKER / "k8s" / "keda-scaledobject.yaml")
    assert (scaled["apiVersion"], scaled["kind"]) == ("keda.sh/v1alpha1", "ScaledObject")
    assert (auth["apiVersion"], auth["kind"]) == ("keda.sh/v1alpha1", "TriggerAuthentication")
    # ScaledObject spec fields (KEDA 2.x docs, "ScaledObject specification")
    allowed = {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "fallback",
        "advanced",
        "triggers",
    }
    assert set(scaled["spec"]) <= allowed
    deployment = _deployment()
    assert scaled["spec"]["scaleTargetRef"] == {"name": deployment["metadata"]["name"]}
    assert 0 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]
    assert all(isinstance(scaled["spec"][k], int) for k in ("pollingInterval", "cooldownPeriod"))
    triggers = scaled["spec"]["triggers"]
    for trigger in triggers:
        assert set(trigger) <= {"type", "metadata", "authenticationRef", "name", "useCachedMetrics", "metricType"}
    redis_scaler = {
        "address",
        "addressFromEnv",
        "host",
        "hostFromEnv",
        "port",
        "portFromEnv",
        "usernameFromEnv",
        "passwordFromEnv",
        "listName",
        "listLength",
        "activationListLength",
        "databaseIndex",
        "enableTLS",
        "unsafeSsl",
    }
    lists = {}
    for trigger in triggers:
        meta = trigger["metadata"]
        assert trigger["type"] == "redis" and set(meta) <= redis_scaler
        assert all(isinstance(v, str) for v in meta.values())  # trigger metadata is a map of strings
        assert int(meta["listLength"]) >= 1
        assert meta["addressFromEnv"] in {e["name"] for e in _container()["env"]}
        # the trigger's authentication is the TriggerAuthentication here, reading the secret the pods read
        assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
        lists[trigger["name"]] = meta["listName"]
    # queued plus running GPU jobs: the queue's list and the list workers keep of their running jobs
    assert lists == {"queued": GPU_QUEUE, "running": keys.running(GPU_QUEUE)}
    modifiers = scaled["spec"]["advanced"]["scalingModifiers"]
    assert set(modifiers) <= {"formula", "target", "activationTarget", "metricType"}
    assert modifiers["formula"].replace(" ", "") == "queued+running" and modifiers["target"] == "1"
    assert modifiers["metricType"] == "AverageValue"  # one job per pod: pods = queued + running
    pod_secrets = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in _container()["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for ref in auth["spec"]["secretTargetRef"]:
        assert set(ref) == {"parameter", "name", "key"} and ref["parameter"] in {"password", "username"}
        assert ref["name"] in {name for name, _ in pod_secrets}


def test_compose_matches_the_compose_spec_schema() -> None:
    schema_file = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    jsonschema.validators.validator_for(schema)(schema).validate(compose)
    broken = json.loads(json.dumps(compose))
    broken["services"]["flower"]["port"] = ["5555:5555"]  # a typo
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validators.validator_for(schema)(schema).validate(broken)
    flower = compose["services"]["flower"]
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])  # not published beyond the host
    assert flower["secrets"] == ["flower_basic_auth"] and "flower_basic_auth" in compose["secrets"]
    # the metrics beside each other: celery-exporter, and the fleet's fleet.prom where the beat writes it
    services = compose["services"]
    assert "--broker-url=redis://redis:6379/0" in services["celery-exporter"]["command"]
    beat = services["beat"]
    reports_dir = beat["command"][beat["command"].index("--reports-dir") + 1]
    textfile = services["fleet-metrics"]["command"]
    assert f"--collector.textfile.directory={reports_dir}" in textfile
    (beat_volume,) = beat["volumes"]
    (metrics_volume,) = services["fleet-metrics"]["volumes"]
    assert metrics_volume == beat_volume + ":ro"  # the same volume, read only
    for name in ("celery-exporter", "fleet-metrics"):
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"])


def _flower_command(secret: Path) -> str:
    """Flower's command as compose runs it: $$ is a literal $, the secret at its path here."""
    (cmd,) = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["flower"]["command"]
    return str(cmd).replace("$$", "$").replace("/run/secrets/flower_basic_auth", str(secret))


def test_flower_starts_only_with_basic_auth_from_the_secret(tmp_path: Path) -> None:
    # celery (the boundary) is stood in by a script that shows what Flower would get
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "celery").write_text('#!/bin/sh\necho "auth=$FLOWER_BASIC_AUTH args=$*"\n')
    (bin_dir / "celery").chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FLEET_REDIS_URL": "redis://redis:6379/0"}
    secret = tmp_path / "flower_basic_auth"
    for content in ("", "\n", "no-colon\n"):
        secret.write_text(content)
        res = subprocess.run(["/bin/sh", "-c", _flower_command(secret)], capture_output=True, text=True, env=env)
        assert res.returncode == 1 and "user:password" in res.stderr and "auth=" not in res.stdout
    secret.write_text("ops:s3cret\n")
    res = subprocess.run(["/bin/sh", "-c", _flower_command(secret)], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "auth=ops:s3cret args=--broker=redis://redis:6379/0 flower --port=5555"


def _probe(name: str) -> list[str]:
    command: list[str] = _container()[name]["exec"]["command"]
    return command


def test_probes_against_a_real_worker(redis_url: str, start_worker) -> None:
    container = _container()
    assert container["args"][:2] == ["--devices", "cuda"]
    assert "inspect ping" in " ".join(_probe("startupProbe"))
    assert "inspect" not in " ".join(_probe("livenessProbe") + _probe("readinessProbe"))  # ping: startup only
    start_worker(redis_url, name="probe")
    node = "cpu@probe"  # this test's worker is a cpu worker; the pod's is gpu0@POD_NAME
    celery_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, FLEET_REDIS_URL=redis_url, PYTHONPATH=str(ROOT), PATH=f"{celery_dir}:/usr/bin:/bin")
    env["CUDA_VISIBLE_DEVICES"] = "0"  # the launcher refuses cuda:0 when that GPU is not visible

    def run(name: str, fleet_node: str) -> int:
        cmd = [c.replace("python", sys.executable) if c == "python" else c for c in _probe(name)]
        res = subprocess.run(cmd, env=env | {"FLEET_NODE": fleet_node}, capture_output=True, cwd=ROOT, timeout=60)
        return res.returncode

    assert run("startupProbe", node) == 0
    assert run("startupProbe", "gpu0@nowhere") != 0
    assert run("readinessProbe", node) == 0
    assert run("readinessProbe", "gpu0@nowhere") != 0
    assert run("livenessProbe", node) == 0  # a workers.app celery process runs (the one started here)
    # the liveness pattern finds the worker's command line and not the probe's own
    (script,) = [c for c in _probe("livenessProbe") if "grep" in c]
    pattern = re.search(r"'(.+?)'", script)
    assert pattern is not None
    dry = subprocess.run(
        [*command_line(redis_url, "cuda:0", "pod"), "--dry-run"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert dry.returncode == 0 and "gpu0@pod" in dry.stdout + dry.stderr  # FLEET_NODE's form: gpu0@POD_NAME
    assert re.search(pattern.group(1), dry.stdout + dry.stderr)  # the celery command the launcher starts
    assert not re.search(pattern.group(1), script)

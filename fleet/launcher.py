"""fleet-worker: start the Celery workers for this host's devices and supervise them.

One worker process for the CPU (prefork, concurrency fitted to the cores) and one per GPU,
pinned with CUDA_VISIBLE_DEVICES, prefork with concurrency 1. The launcher itself never
imports torch. SIGTERM/SIGINT are passed on; when one worker exits, the others are stopped
and the launcher exits with its code, so a supervisor (systemd, Kubernetes) restarts all.
Each worker starts with a clean signal mask and gets SIGTERM (a warm shutdown) should the
launcher itself die (fleet.children), so a killed launcher leaves no worker behind.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType

from fleet.children import tethered
from fleet.devices import CPU_QUEUE, GPU_QUEUE, Device
from fleet.errors import BadInput, FleetError, SelectionError
from fleet.settings import Settings, redact_url
from fleet.witness import normalize as endpoint_url


@dataclass
class WorkerSpec:
    label: str  # cpu | gpu0 | gpu1 ...
    queue: str
    device: str  # cpu | cuda
    concurrency: int
    cuda_visible: str | None  # physical GPU index for GPU workers


def visible_gpus() -> list[str]:
    """GPU indices visible to this host, without initialising CUDA anywhere."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in (x.strip() for x in env.split(",")) if g and g != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, re.M)]


def plan(devices: str, cpu_concurrency: int | None) -> list[WorkerSpec]:
    """Worker processes for a --devices value: the fleet's device names, plus `auto` (the CPU
    and every visible GPU). `cuda` means every visible GPU; `cuda:N` the N-th physical GPU."""
    specs: list[WorkerSpec] = []
    gpus = visible_gpus()
    for name in (d.strip() for d in devices.split(",") if d.strip()):
        if name == "auto":
            specs.append(_cpu(cpu_concurrency))
            specs.extend(_gpu(g) for g in gpus)
            continue
        try:
            device = Device.parse(name)
        except SelectionError:
            raise SelectionError(f"unknown device {name!r} (expected cpu, cuda, cuda:N or auto)") from None
        if not device.is_gpu:
            specs.append(_cpu(cpu_concurrency))
        elif device.index is None:
            if not gpus:
                raise SelectionError("--devices cuda but no GPU is visible (nvidia-smi -L)")
            specs.extend(_gpu(g) for g in gpus)
        else:
            if str(device.index) not in gpus:
                shown = ", ".join(f"cuda:{g}" for g in gpus) or "none"
                raise SelectionError(f"--devices {name} but that GPU is not visible (visible: {shown})")
            specs.append(_gpu(str(device.index)))
    labels = [s.label for s in specs]
    return [s for i, s in enumerate(specs) if s.label not in labels[:i]]


def _cpu(concurrency: int | None) -> WorkerSpec:
    # Each check uses torch's intra-op threads; one job per two cores keeps them from fighting.
    n = concurrency or max(1, (os.cpu_count() or 1) // 2)
    return WorkerSpec("cpu", CPU_QUEUE, "cpu", n, None)


def _gpu(index: str) -> WorkerSpec:
    return WorkerSpec(f"gpu{index}", GPU_QUEUE, "cuda", 1, index)


def command(
    spec: WorkerSpec, name: str, args: argparse.Namespace, settings: Settings
) -> tuple[list[str], dict[str, str]]:
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "worker",
        "-Q",
        spec.queue,
        "-c",
        str(spec.concurrency),
        "-P",
        "prefork",
        "-n",
        name,
        "--loglevel",
        args.loglevel,
        "--without-gossip",
        "--without-mingle",
    ]
    if args.max_tasks_per_child:
        cmd += ["--max-tasks-per-child", str(args.max_tasks_per_child)]
    if args.max_memory_per_child_mb:
        cmd += ["--max-memory-per-child", str(int(args.max_memory_per_child_mb * 1024))]
    env = dict(os.environ)
    env.update(settings.policy_env())  # the trust policy: only what this launcher was told
    env.update(
        FLEET_REDIS_URL=settings.redis_url,
        FLEET_WORKER_NAME=name,
        FLEET_WORKER_QUEUES=spec.queue,
        FLEET_WORKER_DEVICES=spec.device,
        PYTORCH_NVML_BASED_CUDA_CHECK="1",
    )
    if spec.cuda_visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = spec.cuda_visible
    elif spec.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # a cpu worker never runs on a GPU by accident
    if spec.device == "cpu" and spec.concurrency > 1:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // spec.concurrency)))
    return cmd, env


def policy(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings with the trust policy of the command line added (flags only ever allow more)."""
    paths = []
    for raw in args.allow_path:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise BadInput(f"--allow-path {raw}: no such directory")
        paths.append(Path(os.path.realpath(path)))
    return replace(
        settings,
        trust_remote_code=settings.trust_remote_code or args.trust_remote_code,
        allow_pickle=settings.allow_pickle or args.allow_pickle,
        allow_paths=(*settings.allow_paths, *paths),
        trusted_endpoints=(*settings.trusted_endpoints, *(endpoint_url(u) for u in args.trust_endpoint)),
    )


def command_line(
    redis_url: str | None, devices: str = "cpu", name: str | None = None, concurrency: int | None = None, *extra: str
) -> list[str]:
    """The fleet-worker command, for code that starts workers as child processes. Without
    redis_url the workers read $FLEET_REDIS_URL (keeps a password off the command line)."""
    cmd = [sys.executable, "-m", "fleet.launcher", "--devices", devices]
    if redis_url:
        cmd += ["--redis-url", redis_url]
    if name:
        cmd += ["--name", name]
    if concurrency:
        cmd += ["--concurrency", str(concurrency)]
    return [*cmd, *extra]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fleet-worker",
        description="Start model-fleet Celery workers for this host's devices: one for the CPU and one per GPU.",
        epilog="exit codes: 0 stopped by a signal, 2 bad input (device, URL, flag), otherwise a worker's own code. "
        "Jobs may not import repository code, unpickle weights or read local directories unless a flag "
        "above allows it (README: Trust model).",
    )
    p.add_argument(
        "--devices", default="cpu", help="cpu, cuda (one worker per visible GPU), cuda:N, or auto (default: cpu)"
    )
    p.add_argument(
        "--redis-url", help="broker and result store (default: $FLEET_REDIS_URL or redis://127.0.0.1:6379/0)"
    )
    p.add_argument("--concurrency", type=int, help="CPU worker processes (default: cores / 2)")
    p.add_argument("--name", default=socket.gethostname(), help="worker name suffix (default: the host name)")
    p.add_argument("--max-tasks-per-child", type=int, default=0, help="replace a pool process after N jobs (0: reuse)")
    p.add_argument("--max-memory-per-child-mb", type=float, default=0, help="replace a pool process above this RSS")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let jobs whose candidate sets trust_remote_code run the repository's own code (default: refused)",
    )
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="let jobs whose candidate sets allow_pickle load pickle weights (default: refused)",
    )
    p.add_argument(
        "--allow-path",
        action="append",
        default=[],
        metavar="DIR",
        help="let jobs load local model directories under DIR (repeatable; default: only pkg: paths)",
    )
    p.add_argument(
        "--trust-endpoint",
        action="append",
        default=[],
        metavar="URL",
        help="take this Hub endpoint (HF_ENDPOINT) as a witness of identity like the official Hub "
        "(repeatable; default: only https://huggingface.co; any other endpoint is a mirror)",
    )
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=0,
        metavar="S",
        help="on SIGTERM/SIGINT, kill a worker still running a job S seconds later (default 0: wait for its jobs)",
    )
    p.add_argument("--loglevel", default="INFO")
    p.add_argument("--dry-run", action="store_true", help="print the worker commands and exit")
    args = p.parse_args(argv)
    try:
        settings = policy(Settings.from_env().with_redis_url(args.redis_url), args)
        if args.concurrency is not None and args.concurrency < 1:
            raise BadInput(f"--concurrency must be at least 1, got {args.concurrency}")
        if not args.stop_timeout >= 0:
            raise BadInput(f"--stop-timeout must be 0 or more seconds, got {args.stop_timeout}")
        specs = plan(args.devices, args.concurrency)
    except FleetError as exc:
        print(f"fleet-worker: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    procs: list[subprocess.Popen[bytes]] = []
    for spec in specs:
        cmd, env = command(spec, f"{spec.label}@{args.name}", args, settings)
        pinned = f" CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}" if spec.device != "cpu" else ""
        print(f"fleet-worker: {spec.label}:{pinned} {' '.join(cmd[1:])}", file=sys.stderr)
        if not args.dry_run:
            procs.append(subprocess.Popen(tethered(cmd), env=env))
    if args.dry_run:
        return 0
    print(f"fleet-worker: {len(procs)} worker(s) on {redact_url(settings.redis_url)}", file=sys.stderr)

    stopping = False
    stop_by = float("inf")  # with --stop-timeout: when workers still running are killed

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping, stop_by
        if not stopping and args.stop_timeout:
            stop_by = time.monotonic() + args.stop_timeout
        stopping = True
        for pr in procs:
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    code = 0
    died: int | None = None  # the code of a worker that exited before anyone asked the launcher to stop
    while procs:
        for pr in list(procs):
            rc = pr.poll()
            if rc is None:
                continue
            procs.remove(pr)
            code = code or rc
            if not stopping:
                print(f"fleet-worker: a worker exited with code {rc}; stopping the others", file=sys.stderr)
                died = rc
                stop(signal.SIGTERM, None)
        if time.monotonic() > stop_by:
            for pr in procs:
                if pr.poll() is None:
                    print(
                        f"fleet-worker: pid {pr.pid} still busy {args.stop_timeout:g} s after SIGTERM; killed",
                        file=sys.stderr,
                    )
                    pr.kill()  # its pool children follow (Celery gives them PDEATHSIG SIGKILL)
            stop_by = float("inf")
        time.sleep(0.1)
    if died:  # a worker died on its own (killed, out of memory, crashed): a failure, for a supervisor's restart
        return died if died > 0 else 128 - died  # killed by signal N: 128 + N, as a shell reports it
    return 0 if stopping and code in (0, -signal.SIGTERM, -signal.SIGKILL) else code


if __name__ == "__main__":
    sys.exit(main())

"""Attack 2: kill -9 at the moment a job starts (its delivery counted by begin.lua), then check
the run's accounting: the job must end with one result (not LOST, not counted twice).

MODE=child: kill -9 only the pool child (the worker's main process requeues the message).
MODE=main:  kill -9 the whole worker (launcher, main process, pool child) and start another.
MODE=mainonly: kill -9 the launcher and the main process only (the pool child lives on).
MODE=main_nohold: as main, its held-delivery record removed (a record not written: fleet:held of another type).
MODE=redis: restart Redis (no persistence: SHUTDOWN NOSAVE is not used; SAVE then restart) while
            the job runs, to see the result and ledger land after the restart.

Usage: REDIS_PORT=... MODE=child|main python scripts/adversary/kill_at_start.py  (starts its own workers
on DB 9 with FLEET_VISIBILITY_TIMEOUT=140; needs the redis-server on REDIS_PORT started with
--dir so that SAVE + restart keeps the data for MODE=redis)."""

import json
import os
import signal
import subprocess
import sys
import time

import redis

PORT = int(os.environ["REDIS_PORT"])
MODE = os.environ.get("MODE", "child")
URL = f"redis://127.0.0.1:{PORT}/9"
PY = sys.executable
env = {**os.environ, "FLEET_REDIS_URL": URL, "FLEET_VISIBILITY_TIMEOUT": "140", "HF_HUB_OFFLINE": "1"}
r = redis.Redis.from_url(URL, decode_responses=True)
r.flushdb()


def worker(name: str) -> subprocess.Popen:
    log = open(f"/tmp/adv/kill_{MODE}_{name}.log", "w")
    return subprocess.Popen(
        [PY, "-m", "fleet.launcher", "--devices", "cpu", "--concurrency", "1", "--name", name],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def tree(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    kids = [int(p) for p in out]
    return kids + [g for k in kids for g in tree(k)]


def orch(*args: str) -> str:
    p = subprocess.run([PY, "-m", "orchestrator", *args], env=env, capture_output=True, text=True, timeout=300)
    return p.stdout + p.stderr


a = worker("killA")
while not r.keys("fleet:worker:*"):
    time.sleep(0.5)
out = orch("submit", "--family", "llama", "--devices", "cpu", "--time-limit", "60", "--deadline", "420")
run_id = next(k for k in r.scan_iter("fleet:run:*:meta")).split(":")[2]
attempts, held = f"fleet:run:{run_id}:attempts", "fleet:held"
while not r.hlen(attempts):
    pass  # spin: the kill lands within a millisecond or so of begin.lua
t0 = time.time()
if MODE == "child":
    main_pid = tree(a.pid)[0]
    child = tree(main_pid)[0]
    os.kill(child, signal.SIGKILL)
    b = None
elif MODE in ("main", "main_nohold"):
    os.killpg(a.pid, signal.SIGKILL)
    held_at_kill = r.hgetall(held)
    print("held records at the kill:", held_at_kill)
    if MODE == "main_nohold":  # as if its record could not be written: the visibility backstop
        r.delete(held)
    b = worker("killB")
elif MODE == "mainonly":  # the launcher and the worker's main process die; the pool child lives on
    main_pid = tree(a.pid)[0]
    child = tree(main_pid)[0]
    os.kill(a.pid, signal.SIGKILL)
    os.kill(main_pid, signal.SIGKILL)
    print("pool child left running:", child)
    b = worker("killB")
else:  # redis: restart it while the job runs (data kept by SAVE)
    time.sleep(1.0)
    r.save()
    pid = int(r.info("server")["process_id"])
    os.kill(pid, signal.SIGKILL)
    time.sleep(3)
    subprocess.run(
        [
            "redis-server",
            "--port",
            str(PORT),
            "--dir",
            "/tmp/adv",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--logfile",
            "/tmp/adv/redis.log",
        ],
        check=True,
    )
    time.sleep(1)
    b = None
deadline = time.time() + 400
status = None
while time.time() < deadline:
    try:
        res = r.hgetall(f"fleet:run:{run_id}:results")
    except redis.ConnectionError:
        time.sleep(1)
        continue
    if res:
        status = {k: json.loads(v)["status"] for k, v in res.items()}
        break
    time.sleep(1)
took = time.time() - t0
time.sleep(5)
print(f"MODE={MODE} run={run_id} result={status} after {took:.0f} s")
print("attempts:", r.hgetall(attempts))
print("ledger:", r.hgetall(f"fleet:run:{run_id}:ledger"))
print(orch("status", run_id)[-800:])
rep = orch("report", run_id, "--format", "md", "--output", f"/tmp/adv/report_{MODE}.md")
print("report:", rep.strip()[-300:])
for p in (a, b):
    if p is not None:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
ok = status is not None and "LOST" not in status.values()
received = sum(int(v) for k, v in r.hgetall(f"fleet:run:{run_id}:ledger").items() if k.endswith("received"))
finished = sum(int(v) for k, v in r.hgetall(f"fleet:run:{run_id}:ledger").items() if k.endswith("finished"))
print(f"received={received} finished={finished}")
sys.exit(0 if ok and finished == 1 else 1)

"""The worker's Celery application: one thin task over workers.core, plus the heartbeat.

Start with `fleet-worker --devices cpu` (see fleet.launcher), which runs
`celery -A workers.app worker` with the right queues and environment.
The parent process imports torch and transformers (so pool children start warm) but never
initialises CUDA: models are loaded inside the task, in the pool child.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import socket
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

import billiard.process
import torch
import transformers
from celery import Task, signals
from celery.exceptions import TimeLimitExceeded
from celery.utils.time import maybe_iso8601
from celery.worker import state as worker_state
from celery.worker.request import Request

import workers.checks  # noqa: F401  (preload check modules in the parent)
from fleet import __version__
from fleet.broker import RUN_CHECK_TASK, lazy_app, refuse_remote_control
from fleet.devices import QUEUES
from fleet.errors import ErrorKind, FleetError, NotTheRunsJob, UnknownJob
from fleet.jobs import job_problem, same_job
from fleet.numbers import finite
from fleet.protocol import SEALED, Job, Status, terminal_result
from fleet.redelivery import OrphanWatch, restore_orphans
from fleet.redis_transport import hold_deliveries_as, last_poll
from fleet.settings import Settings
from fleet.store import ResultStore
from fleet.store.ledger import LEASE_RENEW_S, Taker, Unacked, lease_owner
from fleet.timing import MAX_TIME_LIMIT_S, hard_time_limit
from workers import reruns
from workers.core import leaves_process_unclean, run_job, worker_name
from workers.screen import ScreenMessages, consuming
from workers.tiny import synthetic

# Preload the modeling code of the built-in families so that every pool child starts warm.
for _mod in synthetic.modeling_modules():
    __import__(f"transformers.models.{_mod}", fromlist=["*"])

app = lazy_app()  # configured from the environment (fleet-worker sets it) when first used
app.steps["consumer"].add(ScreenMessages)  # every message is checked before Celery sees it
refuse_remote_control()  # only read-only inspect commands: a Redis writer cannot stop or slow a worker
logger = logging.getLogger("fleet.worker")
HEARTBEAT_S = 10.0
# This worker start, in its heartbeat and on every message it receives (fleet.redelivery).
# Pool children are forked from the main process and share it.
INSTANCE = uuid.uuid4().hex
STARTED_AT = round(time.time(), 3)  # this worker start, in its heartbeat (orchestrator.liveness)
# Every message this worker receives is recorded as held by INSTANCE (fleet.redelivery) in the
# transaction kombu records it as unacknowledged in (fleet.redis_transport): no round trip of its own.
hold_deliveries_as(INSTANCE)
# Everything imported so far lives as long as the process: keep it out of every later
# collection. The full gc.collect() after each job (freeing the model) then scans only what
# the job created: ~190 ms -> well under 1 ms with torch and transformers loaded.
gc.freeze()


@functools.cache
def settings() -> Settings:
    """This worker process's settings, read once (fleet-worker passes them in the environment)."""
    return Settings.from_env()


@functools.cache
def store() -> ResultStore:
    return ResultStore.from_settings(settings())


@functools.lru_cache(maxsize=64)
def _iso_time(text: str) -> Any:
    return maybe_iso8601(text)


def parse_header_time(value: Any) -> Any:
    """Celery's own reading of a message's `expires` (and `eta`) header (celery.utils.time.
    maybe_iso8601: dateutil's isoparse), once per distinct text: every message of a run carries
    the run's deadline, and parsing it again (with the time zone read from the app's settings)
    cost about 15 µs of the main process's CPU per job (BENCHMARKS.md, section 1). The datetime
    it gives is immutable, so one can stand for every message with that text;
    a text it cannot parse raises as before (a raise is never cached)."""
    if isinstance(value, str) and len(value) <= 64:  # screened so (fleet.messages); others as Celery does
        return _iso_time(value)
    return maybe_iso8601(value)


@functools.lru_cache(maxsize=8)
def _timezone(app: Any) -> Any:
    return app.conf.timezone


class RunCheckRequest(Request):
    """A run_check delivery in the worker's main process. When the pool process running it is
    gone (it died, was replaced or timed out; Celery calls on_failure here), the job's lease
    (fleet.store.ledger) is released before Celery requeues the message, so that the redelivery
    runs at once instead of finding the lease of a dead process and being taken as a duplicate.

    Its time limits are the job's own (time_limit_s, which the worker checks against the run's
    stored job), never the message's `timelimit` header: a copy of a job pushed with a limit of
    half a second would otherwise end the job FAILED timeout, and its reruns with it.

    Its `expires` header (the run's deadline, the same text in every job of a run) is parsed once
    per text (parse_header_time), and the app's time zone read once per app, not per message; an
    expired message revokes no other message with its id (maybe_expire)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("maybe_iso8601", parse_header_time)
        super().__init__(*args, **kwargs)

    @property
    def tzlocal(self) -> Any:
        return _timezone(self._app)

    def maybe_expire(self) -> bool | None:
        """Whether this message has expired. Celery's own also adds the message's task id to the
        worker's revoked ids, and every later message with that id is then discarded unrun: a
        copy of a queued job pushed first with an `expires` in the past (any Redis writer can)
        made the run's own message of that job be dropped when it came (the job never ran, LOST
        at the deadline). An expired message is discarded; it revokes nothing else."""
        expires = self.expires
        if not expires:
            return None
        return True if datetime.now(UTC if expires.tzinfo else None) > expires else None

    @property
    def time_limits(self) -> tuple[float | None, float | None]:
        args = self.args
        job = args[0] if isinstance(args, (list, tuple)) and args else None
        soft = finite(job.get("time_limit_s")) if isinstance(job, dict) else None
        if soft is None or not 0 < soft <= MAX_TIME_LIMIT_S:
            return None, None  # refused by job_problem before anything runs
        return hard_time_limit(soft), soft

    @time_limits.setter
    def time_limits(self, header: Any) -> None:
        pass  # the sender's claim (Celery sets it from the header): the job's limit decides

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> None:
        held = _lease_of(self)
        if held is not None:
            try:
                store().ledger.release_lease(*held)
            except Exception as exc:  # Redis away: the lease expires on its own (LEASE_S)
                logger.warning("could not release the lease of %s: %s", held[1], exc)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


def _unacked_entry(request: Any) -> Unacked | None:
    """(job id, delivery tag, kombu's unacked entry) of a run_check delivery, as kombu's Redis
    transport wrote it when the message was delivered (kombu.transport.redis.QoS.append), or None
    where the message cannot say (another transport)."""
    message = getattr(request, "message", None)
    raw, info = getattr(message, "_raw", None), getattr(message, "delivery_info", None) or {}
    tag = getattr(message, "delivery_tag", None)
    args = getattr(request, "args", None)
    if not isinstance(raw, dict) or not isinstance(tag, str) or not isinstance(args, (list, tuple)) or not args:
        return None
    entry = json.dumps([raw, info.get("exchange"), info.get("routing_key")])
    return str(args[0]["job_id"]), tag, entry


def _lease_of(request: Any) -> tuple[str, str, str] | None:
    """(run id, delivery counter, owner) of the lease a run_check delivery's pool process holds
    or may hold, or None for another task, a job that cannot be read, a delivery not yet running."""
    args, pid = getattr(request, "args", None), getattr(request, "worker_pid", None)
    if getattr(request, "name", None) != RUN_CHECK_TASK or not pid or not isinstance(args, (list, tuple)) or not args:
        return None
    job = args[0]
    if job_problem(job):
        return None
    return job["run_id"], reruns.counter(job), lease_owner(INSTANCE, pid)


class RunCheck(Task):
    """Writes a FAILED(timeout) result when the hard time limit kills the pool child.
    Celery calls on_failure for that in the worker's main process."""

    Request = RunCheckRequest

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        job = args[0]
        s = store()
        timed_out = terminal_result(
            job,
            Status.FAILED,
            ErrorKind.TIMEOUT,
            f"hard time limit reached ({exc}); the process running it was replaced",
            worker=worker_name(settings()),
        )
        s.retrying(lambda: s.put_result(timed_out, only_if_absent=True, sealed=SEALED))
        _finished(s, job)


def taker(job: Job) -> Taker:
    """This worker start, taking the job from its queue (the ledger's records, fleet.store.ledger)."""
    return Taker(job["queue"], worker_name(settings()), INSTANCE, os.getpid())


def _finished(s: ResultStore, job: Job) -> None:
    """Count the job's stored outcome for this worker, and drop it from the running jobs."""
    me = taker(job)
    _ledger(s, lambda: s.ledger.finished(job["run_id"], job["job_id"], me.queue, me.worker, me.instance))


def _ledger(s: ResultStore, write: Any) -> None:
    """The ledger's bookkeeping (fleet.store.ledger) rides out a Redis restart like every store
    call, but a key it cannot write (another type) never stops a job: logged, and the job goes on."""
    try:
        s.retrying(write)
    except FleetError as exc:
        logger.warning("could not write the ledger: %s", exc)


@app.task(name=RUN_CHECK_TASK, base=RunCheck, bind=True, acks_late=True)
def run_check(self: Task, job: Job) -> str:
    # Every store call rides out a Redis restart: a result is never dropped for a lost connection.
    s = store()
    problem = job_problem(job)
    if problem:
        logger.error("refused a job message: %s", problem)
        whose = _whose_problem(s, job)
        if whose is None:  # the run's own job, submitted so: the refusal is the job's result
            refused = terminal_result(job, Status.FAILED, ErrorKind.BAD_JOB, f"refused: {problem}")
            s.retrying(lambda: s.put_result(refused, only_if_absent=True, sealed=SEALED))
        else:  # a message no result can stand for (not the run's job, or bad in what it added)
            _dead_letter(self, s, job, f"bad job: {problem}{whose}")
        return "refused"
    run_id, job_id = job["run_id"], job["job_id"]
    me = taker(job)
    try:  # one round trip: the delivery counted and, on the first one, the ledger's record of who took it
        _check_rerun_claim(s, job)
        done, delivery, taken = s.retrying(lambda: s.begin_delivery(run_id, job_id, reruns.counter(job), me, job))
    except UnknownJob as exc:  # a made-up job of a real run, or another job under a real job's id:
        logger.error("refused a job message: %s", exc.message)  # its result would stand for the run's job
        _dead_letter(self, s, job, f"bad job: {exc.message}")
        return "refused"
    if done:  # a repeated delivery of a finished job, or a duplicate of one a live process runs
        return "already done"  # (counted as a duplicate by the store): nothing to run or count twice
    if delivery > 1 and reruns.rerun_number(job) < len(s.retrying(lambda: s.reruns(run_id, job_id))):
        return "already rerun"  # this run's outcome is kept and the next run was published
    if not taken:  # a redelivery: who took it now, and which earlier delivery died with its process
        _ledger(s, lambda: s.ledger.started(run_id, job_id, me.queue, me.worker, me.instance, delivery))
    if delivery > int(job.get("max_attempts", 3)):
        gave_up = terminal_result(
            job,
            Status.FAILED,
            ErrorKind.WORKER_LOST,
            f"the process running this job died on each of {delivery - 1} deliveries",
            worker=worker_name(settings()),
            delivery=delivery,
        )
        s.retrying(lambda: s.put_result(gave_up, sealed=SEALED))
        _finished(s, job)
        return "gave up"
    result = run_job(job, delivery=delivery, settings=settings())
    # What survived the job's collection is long-lived (modules the job imported, caches): out of
    # every later collection too, so the next one scans only its own job's objects (0.46 s of a
    # 0.53 s job measured on ViTModel once transformers had imported a few hundred modules).
    # Frozen objects are still freed by reference counting.
    gc.freeze()
    if reruns.wants_rerun(result, job):
        _rerun(self, s, job, result)  # the rerun starts in a fresh process (_replace_process)
        return "rerun published"
    if reruns.rerun_number(job):
        result = reruns.final(result, job, s.retrying(lambda: s.reruns(run_id, job_id)))
    s.retrying(lambda: s.put_result(result, sealed=SEALED, finished_by=me))  # with the ledger's count: one round trip
    why = leaves_process_unclean(result, settings())
    if why:
        logger.warning("replacing pool process %s after %s: %s", os.getpid(), job_id, why)
        _replace_process()
    return str(result["status"])


def _whose_problem(s: ResultStore, job: Any) -> str | None:
    """None when a refused message is the run's own job as submitted, bad in what the run stored
    (then its refusal is the job's result), or its run is gone (the store then keeps nothing);
    otherwise what the dead letter adds to the reason. A
    copy with other content, or one whose problem lies only in what a message adds (sent_at,
    rerun), must not decide the job's outcome: whoever can push onto a queue could otherwise fail
    any job of a run by sending its copy first."""
    if not isinstance(job, dict) or not all(isinstance(job.get(k), str) for k in ("run_id", "job_id")):
        return ""
    stored = s.retrying(lambda: s.stored_job(job["run_id"], job["job_id"]))
    if stored is None:
        if not s.retrying(lambda: s.job_count(job["run_id"])):
            return None  # a run that is gone (withdrawn, pruned): the store keeps nothing for it
        return f"; {UnknownJob(job['run_id'], job['job_id']).message}"
    if not same_job(stored, job):
        return "; it is not the run's job (its fields differ from the job the run stored)"
    return None if job_problem(stored) is not None else ""


def _check_rerun_claim(s: ResultStore, job: Job) -> None:
    """A message claiming rerun n of a job stands for it only once the run kept the outcome of run
    n - 1 (workers/reruns.py: the outcome is kept, then the rerun published). Raises NotTheRunsJob.
    Read only for reruns: a first run claims nothing."""
    n = reruns.rerun_number(job)
    if n and n > len(s.retrying(lambda: s.reruns(job["run_id"], job["job_id"]))):
        raise NotTheRunsJob(job["run_id"], job["job_id"], f"it claims rerun {n}, which the run never published")


def _dead_letter(task: Task, s: ResultStore, job: Any, reason: str) -> None:
    """Keep a job message no result can stand for in the dead-letter list, with the reason."""
    record = {"task": task.name, "id": task.request.id, "body": json.dumps(job, default=str)[:2048]}
    s.retrying(lambda: s.transport.dead_letter(reason, {**record, "worker": worker_name(settings())}))


def _rerun(task: Task, s: ResultStore, job: Job, result: Any) -> None:
    """Keep this outcome, publish the job's next run, and replace this pool process (see
    workers/reruns.py) once this delivery has ended."""
    n = reruns.rerun_number(job)
    s.retrying(lambda: s.add_rerun(job["run_id"], job["job_id"], n, reruns.record(result, job)))
    _finished(s, job)
    soft = job["time_limit_s"]  # the job's own limit (RunCheckRequest.time_limits)
    hard = hard_time_limit(soft)
    task.app.send_task(
        RUN_CHECK_TASK,
        args=[reruns.next_job(job)],
        queue=job["queue"],
        soft_time_limit=soft,
        time_limit=hard,
        argsrepr=f"[{job['job_id']} of {job['run_id']}, rerun {n + 1}]",
        kwargsrepr="{}",
        retry=True,
        ignore_result=True,  # results go to the fleet's store, never to a Celery result channel
    )
    logger.warning(
        "%s FAILED (%s): rerun %d published; replacing pool process %s",
        job["job_id"],
        (result.get("error") or {}).get("kind"),
        n + 1,
        os.getpid(),
    )
    _replace_process()


# -- replacing a pool process between jobs ---------------------------------------------------
# A pool process that must not run another job (a rerun must start fresh; a job left it unclean)
# ends its delivery normally, so the job is acknowledged with its outcome, and exits when its
# work loop next waits for a job, the way billiard's own max-tasks-per-child recycling exits:
# holding no job. Before, the task called os._exit(0) itself: billiard then failed the job with
# WorkerLostError('Worker exited prematurely: exitcode 0'), Celery requeued it, and a redelivery
# (counted, its lease taken, an ERROR traceback in the log) had to find the outcome and stop, for
# every rerun. Every job's end then hung on that requeue: a job lost there had no result.
_replacing = {"hooked": False, "due": False}


def _replace_process() -> None:
    """Have this pool process exit before its next job (see above). Outside a billiard pool
    process (the hook is not in place) it exits at once, as before."""
    if not _replacing["hooked"]:
        os._exit(0)
    _replacing["due"] = True


def _exit_between_jobs() -> None:
    """In a new pool process: its work loop's wait for a job ends the process when a job asked
    for that (SystemExit there is billiard's own way out of the loop: the loop first waits until
    the parent has read every result it sent, then worker_process_shutdown runs, _exit_now)."""
    worker = getattr(billiard.process.current_process(), "_target", None)
    receive = getattr(worker, "wait_for_job", None)
    if worker is None or not callable(receive):
        return

    def wait_for_job(*args: Any, **kwargs: Any) -> Any:
        if _replacing["due"]:
            raise SystemExit(0)
        return receive(*args, **kwargs)

    worker.wait_for_job = wait_for_job
    _replacing["hooked"] = True


# -- capabilities and heartbeat (worker main process) --------------------------------------
def capabilities() -> dict[str, Any]:
    queues = list(settings().worker_queues)
    info: dict[str, Any] = {
        "name": worker_name(settings()),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "instance": INSTANCE,
        "started_at": STARTED_AT,
        "queues": queues,
        "devices": list(settings().worker_devices),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "model_fleet": __version__,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        # Proof that the parent never initialised CUDA (children can fork safely).
        "parent_cuda_initialized": torch.cuda.is_initialized(),
        # Liveness that means work (orchestrator.liveness): when the consumer last had a reply
        # from the broker (a message or an idle poll), and how many jobs it holds (a worker
        # whose every slot is busy does not poll).
        "polled_at": last_poll(),
        "holding": len(worker_state.reserved_requests),
        "concurrency": _pool["concurrency"],
    }
    if "gpu" in queues:
        info["gpus"] = _nvidia_smi()
    return info


def _nvidia_smi() -> list[str]:
    """GPU names and memory without touching CUDA in this process."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


_pool: dict[str, Any] = {"concurrency": None}
_stop = threading.Event()
_beats: list[threading.Thread] = []
_watch = OrphanWatch()  # what this process has seen of other workers' held messages


def _beat_loop() -> None:
    while True:
        try:
            if not consuming():  # a worker whose consumer is down or flapping is not live
                logger.warning("not consuming: no heartbeat")
                store().registry.forget_worker(worker_name(settings()))
            else:
                store().registry.heartbeat(worker_name(settings()), capabilities(), ttl=int(HEARTBEAT_S * 3))
            restored = restore_orphans(store(), _watch)
            if restored:
                logger.warning("put %d message(s) of dead workers back on their queues", restored)
        except FleetError:
            _watch.lost_contact()  # Redis away: the next beat tries again, and observes afresh
        except Exception:  # anything else is logged: the heartbeat thread never dies (no beat: not live)
            logger.exception("the heartbeat or the check for dead workers' messages failed")
        try:  # the running jobs KEDA counts: those of gone worker starts and answered jobs dropped
            live = {w.get("instance") for w in store().registry.live_workers()}
            store().ledger.prune_running(QUEUES, {i for i in live if isinstance(i, str)} | {INSTANCE})
        except FleetError as exc:
            logger.warning("could not prune the running jobs: %s", exc)
        except Exception:
            logger.exception("could not prune the running jobs")
        if _stop.wait(HEARTBEAT_S):
            return


def _lease_loop() -> None:
    """Renew the leases of the jobs this worker's pool processes run (fleet.store.ledger): a
    second delivery of one of them is then a duplicate, not a redelivery. A duplicate's
    acknowledgement removes kombu's unacked entry of the running delivery (both carry the same
    tag): the renewal puts it back, so that the job is still restored if its process dies."""
    while not _stop.wait(LEASE_RENEW_S):
        try:
            running = [(h, r) for r in list(worker_state.active_requests) if (h := _lease_of(r)) is not None]
            store().ledger.renew_leases([h for h, _ in running], [_unacked_entry(r) for _, r in running])
        except RuntimeError:  # the set of requests changed while it was read: the next tick
            continue
        except Exception as exc:  # Redis away, a key of another type: the loop goes on
            logger.warning("could not renew the leases of running jobs: %s", exc)


@signals.worker_process_init.connect
def _freeze_child(**_: Any) -> None:
    """What the pool child set up for itself also lives as long as it: out of every collection.
    Its work loop also learns to end it between jobs (_exit_between_jobs)."""
    _exit_between_jobs()
    gc.freeze()


@signals.worker_process_shutdown.connect
def _exit_now(exitcode: int | None = None, **_: Any) -> None:
    """A pool child whose work loop is over (the pool closing, or its max tasks reached) exits at
    once. billiard would post DEATH, whose only use is to have the parent kill the child, and
    sleep one second waiting for that kill (billiard/pool.py, Worker._do_exit); in a warm
    shutdown the parent reads nothing then, so every stop of a worker waited that second. Every
    result was sent before this point (the pipe keeps what the parent has not read yet), and the
    child would end in the same os._exit."""
    os._exit(exitcode or 0)


def publish_architectures() -> None:
    """The classes this worker's transformers knows, for `orchestrator submit --architectures`."""
    from workers.architectures import listing

    data = listing()
    store().registry.publish_architectures(data)


@signals.worker_ready.connect
def _on_ready(sender: Any = None, **_: Any) -> None:
    _pool["concurrency"] = getattr(getattr(sender, "controller", None), "concurrency", None)
    try:
        publish_architectures()
    except FleetError as exc:
        logger.warning("could not publish the architecture list: %s", exc)
    loops = [
        threading.Thread(target=f, name=n, daemon=True)
        for f, n in ((_beat_loop, "fleet-heartbeat"), (_lease_loop, "fleet-leases"))
    ]
    _beats.extend(loops)
    for loop in loops:
        loop.start()


@signals.worker_shutdown.connect
def _on_shutdown(**_: Any) -> None:
    _stop.set()
    for beat in _beats:
        beat.join(5)  # a beat in flight lands before the heartbeat is removed, never after
    try:
        store().registry.forget_worker(worker_name(settings()))
    except FleetError:
        pass

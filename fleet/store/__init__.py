"""The fleet's Redis store, split by what it holds; every module opens with its purpose.

- results.py: runs, jobs, results, attempts, reruns, late attempts. ResultStore is the object
  callers hold: it owns the one connection and carries the other parts as attributes,
  .transport and .registry.
- transport.py: Celery transport bookkeeping (queue contents, held deliveries, restoring an
  unacknowledged message).
- registry.py: live workers, published architecture listings, schedule slots, saved reports.
- ledger.py: who took which job and what became of it (received, finished, died per worker;
  the jobs running now, per queue).
- summaries.py: per-job summaries (a job's recent outcomes, one small record each) and the
  counts of finished runs, so that reports never read whole earlier runs.
- keys.py: every key name, spelled once. connection.py: the client and its error translation.
- put_result.lua: the script that writes a result and finishes a run atomically.

Nothing outside this package holds a raw Redis client for the fleet's data.
"""

from fleet.store.ledger import Ledger
from fleet.store.registry import Registry
from fleet.store.results import ResultStore, new_run_id
from fleet.store.summaries import Summaries
from fleet.store.transport import Transport

__all__ = ["Ledger", "Registry", "ResultStore", "Summaries", "Transport", "new_run_id"]

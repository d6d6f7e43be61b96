"""Child processes that start clean and die with their parent.

`tethered(argv)` wraps a command line in a tiny exec shim (`python -I -S -c`, ~10 ms) that,
in the child and before exec'ing the real program:

- resets SIGINT, SIGTERM, SIGPIPE and SIGXFSZ to their default actions (Python ignores
  SIGPIPE/SIGXFSZ, and exec keeps an ignored signal ignored);
- clears the signal mask. A parent may spawn while it holds SIGINT/SIGTERM blocked (so that a
  Ctrl-C cannot land between the fork and recording the pid), and a blocked mask survives
  exec: the program would then never handle SIGTERM. The shim unblocks in the child, so no
  preexec_fn is needed (unsafe once the parent has threads: redis-py, Celery and kombu start some);
- asks the kernel for SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG, kept across exec),
  then checks that the parent is still the one that spawned it (it could have died before the
  prctl) and exits if not.

A signal sent to the child meanwhile stays pending until the mask is cleared and then takes
its default action, after the dispositions are reset: it is never lost.
"""

from __future__ import annotations

import os
import sys

# Runs in the child with -I -S: the standard library only, nothing of ours on sys.path.
SHIM = """\
import ctypes, os, signal, sys
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE, signal.SIGXFSZ):
    signal.signal(s, signal.SIG_DFL)
if sys.argv[2] != "-":
    ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[2]), 0, 0, 0)  # PR_SET_PDEATHSIG
signal.pthread_sigmask(signal.SIG_SETMASK, ())
if sys.argv[2] != "-" and os.getppid() != int(sys.argv[1]):
    os._exit(0)  # the parent died before the prctl: nothing to run for
try:
    os.execv(sys.argv[3], sys.argv[3:])
except OSError as exc:
    sys.stderr.write(f"cannot run {sys.argv[3]}: {exc}\\n")
    os._exit(127)
"""

PDEATHSIG = 15  # SIGTERM: every program started this way stops cleanly on it


def tethered(argv: list[str], die_with_parent: bool = True) -> list[str]:
    """The command line that runs argv (argv[0] an absolute path) with a clean signal mask and
    default dispositions, and, with die_with_parent, SIGTERM when this process dies. Spawn it
    from the thread that lives as long as the process (the main thread): the kernel ties the
    death signal to the spawning thread."""
    if not os.path.isabs(argv[0]):
        raise ValueError(f"tethered() needs an absolute program path, got {argv[0]!r}")
    sig = str(PDEATHSIG) if die_with_parent else "-"
    return [sys.executable, "-I", "-S", "-c", SHIM, str(os.getpid()), sig, *argv]

"""Named crash points: a process that kills itself where a test asks, to test recovery.

``LAKEHOUSE_KILL_AT=<pattern>`` makes the process send itself SIGKILL at the first crash point
whose name matches the ``fnmatch`` pattern; ``<pattern>#<n>`` at the n-th match. Nothing is
cleaned up, flushed or closed: the state left behind is what a power cut or an OOM killer
leaves. Without the variable a crash point costs one dictionary lookup.

The points are named ``<where>:<table or entity>``, for example ``append:bronze.customers_raw``
(a micro-batch's append is committed, its stream's checkpoint not yet) or ``silver:customers``
(an entity's silver build is done, gold not started).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import signal
import threading

log = logging.getLogger(__name__)

#: The environment variable naming the crash point.
KILL_AT_ENV = "LAKEHOUSE_KILL_AT"

_hits = 0
_guard = threading.Lock()


def crash_point(name: str) -> None:
    """SIGKILL this process here if :data:`KILL_AT_ENV` names this point (see the module)."""
    spec = os.environ.get(KILL_AT_ENV)
    if not spec:
        return
    pattern, _, nth = spec.partition("#")
    if not fnmatch.fnmatchcase(name, pattern):
        return
    global _hits
    with _guard:
        _hits += 1
        due = _hits == (int(nth) if nth.isdigit() else 1)
    if due:
        log.warning("crash point %s reached: killing this process (%s=%s)", name, KILL_AT_ENV, spec)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)

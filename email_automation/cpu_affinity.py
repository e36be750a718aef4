"""Keep a concurrent run's threads on one CPU while they send (SEND_ONE_CPU).

With several sends in flight, the run's thread (rendering, claiming, recording) and the workers
(smtplib, botocore) take turns holding CPython's GIL: only one of them runs Python at a time, so
spreading them over several CPUs buys no parallel work, only a wake-up on another CPU each time
the GIL changes hands (the "convoy effect", https://github.com/python/cpython/issues/52194).
One at a time, the run's thread and its one worker alternate with the relay, and one CPU made
that path slower, so only the concurrent path asks for it. Figures: docs/performance.md.

Linux only (`os.sched_setaffinity`); elsewhere, with a single CPU allowed, or when the kernel
refuses, it does nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

_STAT = Path("/proc/thread-self/stat")
_PROCESSOR_FIELD = 39  # proc(5), /proc/pid/stat: "(39) processor %d  CPU number last executed on."


def processor(stat: str) -> int | None:
    """The CPU a thread last ran on, from the text of its /proc/.../stat."""
    # Field 2 is the command name in parentheses, which may itself hold spaces and ")".
    fields = stat[stat.rfind(")") + 1:].split()
    try:
        return int(fields[_PROCESSOR_FIELD - 3])
    except (IndexError, ValueError):
        return None


def current_cpu() -> int | None:
    """The CPU this thread last ran on, if the system says (Linux's /proc)."""
    try:
        return processor(_STAT.read_text())
    except OSError:
        return None


class OneCpu:
    """Context manager: the calling thread, and every thread it starts meanwhile, on the CPU it runs
    on; afterwards the calling thread's CPUs as they were. Threads started meanwhile keep the one
    CPU: Linux sets the affinity per thread, and a new thread inherits its creator's."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.pinned_to: int | None = None
        self._before: set[int] | None = None

    def __enter__(self) -> OneCpu:
        if not self.enabled or not hasattr(os, "sched_setaffinity"):
            return self
        try:
            before = os.sched_getaffinity(0)
        except OSError:
            return self
        cpu = current_cpu()
        if cpu is None or cpu not in before or len(before) < 2:
            return self
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            return self
        self._before, self.pinned_to = before, cpu
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._before is None:
            return
        try:
            os.sched_setaffinity(0, self._before)
        except OSError:
            pass
        self._before, self.pinned_to = None, None

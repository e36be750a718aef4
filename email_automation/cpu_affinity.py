"""Keep a concurrent run's threads on one CPU while they send (SEND_ONE_CPU).

With several sends in flight, the run's thread (rendering, claiming, recording) and the workers
(smtplib, botocore) take turns holding CPython's GIL. What they do without it (socket calls,
SQLite's steps and fsync) is short, so a second CPU gives them little parallel work, and each
time the GIL changes hands between CPUs it costs a wake-up there (the "convoy effect",
https://github.com/python/cpython/issues/52194). One at a time, the run's thread and its one
worker alternate with the relay, and one CPU made that path slower, so only the concurrent path
asks for it. Figures: docs/performance.md.

Linux only (`os.sched_setaffinity`); elsewhere, with a single CPU allowed, without the GIL (a
free-threaded build), or when the kernel refuses, it does nothing.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

_STAT = Path("/proc/thread-self/stat")
_PROCESSOR_FIELD = 39  # proc(5), /proc/pid/stat: "(39) processor %d  CPU number last executed on."


def last_cpu(stat: bytes) -> int | None:
    """The CPU a thread last ran on, from its /proc/.../stat (bytes: the thread's name may be any)."""
    # Field 2 is the thread's name in parentheses, which may itself hold spaces and ")".
    fields = stat[stat.rfind(b")") + 1:].split()
    try:
        return int(fields[_PROCESSOR_FIELD - 3])
    except (IndexError, ValueError):
        return None


def current_cpu() -> int | None:
    """The CPU this thread last ran on, if the system says (Linux's /proc)."""
    try:
        return last_cpu(_STAT.read_bytes())
    except OSError:
        return None


def _gil_enabled() -> bool:
    return getattr(sys, "_is_gil_enabled", lambda: True)()


class OneCpu:
    """Context manager: the calling thread, and every thread it starts meanwhile, on the CPU it runs
    on (Linux sets the affinity per thread, and a new thread inherits its creator's). On the way
    out, the calling thread and the threads started meanwhile that still run (a watchdog started
    by the first send, a call abandoned at its deadline) get the CPUs the caller had."""

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.pinned_to: int | None = None
        self._before: set[int] | None = None
        self._threads_before: set[int | None] = set()

    def __enter__(self) -> OneCpu:
        if not self.enabled or not hasattr(os, "sched_setaffinity") or not _gil_enabled():
            return self
        try:
            before = os.sched_getaffinity(0)
        except OSError:
            return self
        cpu = current_cpu()
        if cpu is None or cpu not in before or len(before) < 2:
            return self
        self._before, self._threads_before = before, {t.native_id for t in threading.enumerate()}
        try:
            os.sched_setaffinity(0, {cpu})
            self.pinned_to = cpu
        except OSError:
            self._before = None
        except BaseException:  # Ctrl-C just after the call: no __exit__ follows a failed __enter__
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._before is None:
            return
        started = [t.native_id for t in threading.enumerate()
                   if t.native_id not in self._threads_before and t.is_alive()]
        for thread in [0, *started]:
            try:
                os.sched_setaffinity(thread or 0, self._before)
            except OSError:  # a thread that ended meanwhile; a kernel that refuses
                pass
        self._before = self.pinned_to = None

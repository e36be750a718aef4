"""Deadlines for whole network exchanges, not for one socket read.

A socket timeout bounds each read, so a server that answers one byte or one line at a time keeps
a blocking call alive for as long as it likes. These two helpers bound the whole exchange:

- `SocketWatchdog` shuts a connection's socket down when the deadline passes; the blocked read or
  write then fails at once and the caller classifies the failure by how far it had got.
- `call_with_deadline` runs a call (an SDK request, whose sockets are out of reach) in a worker
  thread and stops waiting for it at the deadline.

Only the standard library is imported here, so a dry run never loads boto3 through this module.
"""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_POLL_SECONDS = 0.05  # how often an expired watchdog looks for a socket opened after the deadline


class DeadlineExceeded(TimeoutError):
    """The call did not end within its time; what it did meanwhile is unknown."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"no complete answer within {seconds:g} s")
        self.seconds = seconds


class SocketWatchdog:
    """Cuts the socket that `current_socket()` returns once `seconds` have passed.

    Use it as a context manager around the exchange; `expired` tells whether a failure inside it
    came at or after the deadline (a cut, or a socket timeout, which is never set longer than the
    time left). It never touches a socket after the `with` block has ended, so a connection that
    finished in time can carry the next exchange. All watchdogs share one thread (`_Watcher`).
    """

    def __init__(self, seconds: float, current_socket: Callable[[], socket.socket | None]) -> None:
        self.seconds = seconds
        self._current_socket = current_socket
        self._done = False  # set once, under `_lock`
        self._lock = threading.Lock()  # `_done` and the cut are never interleaved
        self._ends_at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(0.0, self._ends_at - time.monotonic())

    @property
    def expired(self) -> bool:
        return time.monotonic() >= self._ends_at

    def __enter__(self) -> SocketWatchdog:
        self._ends_at = time.monotonic() + self.seconds
        _WATCHER.watch(self, self._ends_at)
        return self

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._done = True

    def _cut_now(self) -> bool:
        """Cut the current socket unless the exchange has ended; False once it has."""
        with self._lock:
            if self._done:
                return False
            _cut(self._current_socket())
            return True


class _Watcher:
    """One daemon thread that cuts every expired watchdog's socket, earliest deadline first.

    A thread started and joined per send cost more than the send itself on a loaded machine.
    An expired watchdog is cut again every `_POLL_SECONDS` until its exchange ends: a connection
    may be (re)opened after the deadline.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._queue: list[tuple[float, int, SocketWatchdog]] = []  # a heap of (when, order, watchdog)
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, dog: SocketWatchdog, when: float) -> None:
        with self._wake:
            # Exchanges that ended in time leave the heap here, not only when their deadline comes:
            # a run sends thousands within one SEND_TIMEOUT_SECONDS, and each held its watchdog,
            # socket getter and lock until then (7 MB for 10,000 messages).
            self._drop_finished()
            heapq.heappush(self._queue, (when, next(self._order), dog))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="send-deadlines", daemon=True)
                self._thread.start()
            if self._queue[0][2] is dog:  # a new earliest deadline: the thread must wait less
                self._wake.notify()

    def _drop_finished(self) -> None:
        """Pop the earliest deadlines whose exchange has ended (call holding `_wake`)."""
        while self._queue and self._queue[0][2]._done:
            heapq.heappop(self._queue)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._drop_finished()
                if not self._queue:
                    self._wake.wait()
                    continue
                when, _, dog = self._queue[0]
                wait = when - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._queue)
            if dog._cut_now():
                self.watch(dog, time.monotonic() + _POLL_SECONDS)


_WATCHER = _Watcher()


def _cut(sock: socket.socket | None) -> None:
    """Shut both directions down so a read blocked in another thread returns at once.

    The base-class method is called on purpose: ssl.SSLSocket.shutdown also drops its TLS state,
    which the blocked thread is still using.
    """
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:  # already closed or never connected: nothing left to cut
        pass


class _Outcome(Generic[T]):
    def __init__(self) -> None:
        self.lock = threading.Lock()  # "finished" and "given up on" are decided once, under it
        self.done = False
        self.abandoned = False
        self.value: T | None = None
        self.error: BaseException | None = None


def call_with_deadline(
    call: Callable[[], T], seconds: float, *, name: str = "bounded-call",
    on_late: Callable[[T | None, BaseException | None], None] | None = None,
) -> T:
    """`call()`'s result or exception, or DeadlineExceeded once `seconds` have passed.

    The call goes on in a daemon thread after the deadline (it cannot be interrupted), so only
    use this for calls whose late outcome is safe to ignore or is treated as unknown; the thread
    ends with the call's own socket timeout, or with the process. If it does end after the
    deadline, `on_late(value, error)` is called from that thread, so the late answer can be told.

    Raises:
        DeadlineExceeded: the call had not ended after `seconds`.
    """
    outcome: _Outcome[T] = _Outcome()
    finished = threading.Event()

    def work() -> None:
        try:
            outcome.value = call()
        except BaseException as err:  # handed to the waiting thread, which re-raises it
            outcome.error = err
        with outcome.lock:
            outcome.done = True
            late = outcome.abandoned
        finished.set()
        if late and on_late is not None:
            on_late(outcome.value, outcome.error)

    threading.Thread(target=work, name=name, daemon=True).start()
    finished.wait(seconds)
    with outcome.lock:
        if not outcome.done:
            outcome.abandoned = True
            raise DeadlineExceeded(seconds)
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]

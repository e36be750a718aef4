"""Several sends in flight at once, each on its own transport, at most `rate` started per second.

Only the sends run in worker threads. The caller keeps the ledger in its own thread (one SQLite
connection): it claims a message (a durable commit), hands it over with `submit`, and records
the outcomes `done` gives back. So every message still has exactly one claim before it leaves,
and the daily limit is checked by each claim as in a one-at-a-time run. A provider that takes
50 ms per message is kept busy by `len(transports)` messages at once instead of waiting for each.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .transports.base import Transport

K = TypeVar("K")


class RateLimiter:
    """Spaces events at least `1 / rate` seconds apart, so no one-second window holds more than `rate`.

    SES's MaxSendRate is "the maximum number of emails that Amazon SES can accept from your account
    each second" (https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_SendQuota.html).
    """

    def __init__(self, rate: float | None, *, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next: float | None = None

    def wait(self) -> None:
        """Return when the next event may start (at once when there is no rate)."""
        if not self.interval:
            return
        now = self._clock()
        if self._next is not None and now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


@dataclass(frozen=True)
class Done(Generic[K]):
    """One finished send: `value` is what the send returned, or `error` what it raised."""

    key: K
    value: Any = None
    error: BaseException | None = None


class ConcurrentSender(Generic[K]):
    """Runs `send(transport)` calls on one thread per transport; at most one call per transport at a time."""

    def __init__(self, transports: list[Transport]) -> None:
        self._idle: queue.SimpleQueue[Transport] = queue.SimpleQueue()
        for transport in transports:
            self._idle.put(transport)
        self.size = len(transports)
        self._work: queue.SimpleQueue[tuple[K, Callable[[Transport], Any]] | None] = queue.SimpleQueue()
        self._done: queue.SimpleQueue[Done[K]] = queue.SimpleQueue()
        self.in_flight = 0
        self._threads = [threading.Thread(target=self._worker, name=f"send-{n}", daemon=True)
                         for n in range(self.size)]
        for thread in self._threads:
            thread.start()

    def submit(self, key: K, send: Callable[[Transport], Any]) -> None:
        """Start `send` on a free transport; call only while `in_flight < size`."""
        assert self.in_flight < self.size, "wait for a send to finish first"
        self.in_flight += 1
        self._work.put((key, send))

    def done(self, *, block: bool) -> list[Done[K]]:
        """Finished sends: all there are now, waiting for at least one when `block` (and any is in flight)."""
        finished: list[Done[K]] = []
        if block and self.in_flight:
            finished.append(self._done.get())
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                break
        self.in_flight -= len(finished)
        return finished

    def close(self) -> None:
        """Stop the workers once the submitted sends are done (collect them with `done` first)."""
        for _ in self._threads:
            self._work.put(None)
        for thread in self._threads:
            thread.join()

    def _worker(self) -> None:
        while True:
            job = self._work.get()
            if job is None:
                return
            key, send = job
            transport = self._idle.get()
            try:
                self._done.put(Done(key, value=send(transport)))
            except BaseException as err:  # handed to the caller's thread, which decides
                self._done.put(Done(key, error=err))
            finally:
                self._idle.put(transport)

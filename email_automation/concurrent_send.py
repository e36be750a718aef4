"""Several sends in flight at once, each on its own transport, at most `rate` started per second.

Only the sends run in worker threads. The caller keeps the ledger in its own thread (one SQLite
connection): it claims a message (a durable commit), hands it over with `submit`, and records
the outcomes `done` gives back. So every message still has exactly one claim before it leaves,
and the daily limit is checked by each claim as in a one-at-a-time run. A provider that takes
50 ms per message is kept busy by `len(transports)` messages at once instead of waiting for each.

With `queued`, that many more claimed sends may wait behind the ones in flight, so the caller can
claim a whole group while the workers are busy. Then a worker takes a waiting send only while
every failed send it has handed back is settled by the caller (`settle`): once a refusal is handed
back, nothing waiting starts until the caller has recorded it and taken back (`cancel_queued`) what
must no longer go. (A send taken in the microseconds between another's failure and its hand-back
starts, as it would have just before the failure.)
"""

from __future__ import annotations

import queue
import threading
from collections import deque
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


class StopFlag:
    """Set once when a run stops; the sends waiting to retry a refusal wait on it.

    `threading.Event` would do, but its `set` takes its lock through `Condition.__exit__`, Python
    code that Ctrl-C or SIGTERM can interrupt before the release: the lock stays held, and the next
    `set` (the run's end sets it again) or a waiting send then waits for it for ever. Here `set`
    is one assignment and one C call, and the flag, not the lock, says whether it is set."""

    def __init__(self) -> None:
        self._set = False
        self._gate = threading.Lock()
        self._gate.acquire()  # released by `set`: every wait then returns

    def set(self) -> None:
        self._set = True
        try:
            self._gate.release()
        except RuntimeError:  # set already
            pass

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the flag is set, at most `timeout` seconds; whether it is."""
        if not self._set and self._gate.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            try:
                self._gate.release()  # for the next waiter
            except RuntimeError:  # `set` again meanwhile released it
                pass
        return self._set


@dataclass(frozen=True)
class Done(Generic[K]):
    """One finished send: `value` is what the send returned, or `error` what it raised."""

    key: K
    value: Any = None
    error: BaseException | None = None


class ConcurrentSender(Generic[K]):
    """Runs `send(transport)` calls on one thread per transport; at most one call per transport at a time,
    and up to `queued` more submitted calls waiting for a free transport."""

    def __init__(self, transports: list[Transport], *, queued: int = 0) -> None:
        self._idle: queue.SimpleQueue[Transport] = queue.SimpleQueue()
        for transport in transports:
            self._idle.put(transport)
        self.size = len(transports)
        self.capacity = self.size + queued
        self._jobs: deque[tuple[K, Callable[[Transport], Any]]] = deque()
        # Guards `_jobs`, `_unsettled` and `_closing`. The caller's thread, which Ctrl-C or SIGTERM
        # interrupts, takes `_lock` itself: a C lock's `with` releases it before any signal handler
        # can run, where Condition's own __exit__ (Python code) can be interrupted before its
        # release, leaving the lock held and the workers (and `close`) waiting for it for ever.
        self._lock = threading.Lock()
        self._turn = threading.Condition(self._lock)
        self._unsettled = 0  # failed sends the caller has not settled: no queued send starts meanwhile
        self._hold_after_failure = queued > 0
        self._closing = False
        self._taken_back: list[tuple[K, Callable[[Transport], Any]]] = []  # queued sends `close` took back
        self._running = 0  # sends a worker has taken and not finished
        # Finished sends stay here, not in a queue the caller pops, until the caller acknowledges
        # them: an interruption lands just after a C call returns (CPython checks for signals
        # there), and one landing as a `get` returned would lose the send it took, unrecorded.
        self._finished: list[Done[K]] = []
        self._woken: queue.SimpleQueue[None] = queue.SimpleQueue()  # one token per finished send
        self._threads = [threading.Thread(target=self._worker, name=f"send-{n}", daemon=True)
                         for n in range(self.size)]
        for thread in self._threads:
            thread.start()

    @property
    def in_flight(self) -> int:
        """Submitted and not yet acknowledged (`acknowledge`) or taken back (`cancel_queued`, `close`).
        Read under the lock: a send moving between the three while they are read would count twice."""
        with self._lock:
            return len(self._jobs) + self._running + len(self._finished)

    @property
    def unfinished(self) -> int:
        """Submitted and not yet finished: queued, or being sent (which closing the pool waits for)."""
        with self._lock:
            return len(self._jobs) + self._running

    @property
    def room(self) -> int:
        """How many more sends may be submitted now."""
        return self.capacity - self.in_flight

    def submit(self, key: K, send: Callable[[Transport], Any]) -> None:
        """Start `send` on a free transport, or queue it; call only while `room` > 0."""
        assert self.in_flight < self.capacity, "wait for a send to finish first"
        with self._lock:
            self._jobs.append((key, send))
            self._turn.notify()

    def done(self, *, block: bool) -> list[Done[K]]:
        """The finished sends not yet acknowledged, waiting for one when `block` and none is (and any
        is in flight). They stay in flight, given again by the next call, until `acknowledge`: so an
        interruption between this call and the caller's record of them loses none."""
        while block and not self._finished and (self._jobs or self._running):
            self._woken.get()  # a token left by a send acknowledged earlier only makes the loop look again
        with self._lock:
            return list(self._finished)

    def acknowledge(self, dones: list[Done[K]]) -> None:
        """The caller has dealt with these finished sends (recorded them): they leave the pool."""
        given = {id(done) for done in dones}
        with self._lock:  # one assignment: an interruption before it leaves them all here
            self._finished = [done for done in self._finished if id(done) not in given]

    def settle(self, failures: int) -> None:
        """The caller has dealt with that many failed sends from `done`; queued sends may start
        again once every failure so far is settled."""
        if not self._hold_after_failure:
            return
        with self._lock:
            self._unsettled -= failures
            if not self._unsettled:
                self._turn.notify_all()

    def cancel_queued(self, keep: Callable[[K], bool] = lambda key: False) -> list[K]:
        """Take back the queued sends that have not started and `keep` refuses; returns their keys.

        `keep` is asked outside the lock (it may read the database); a send that starts meanwhile
        is not taken back."""
        with self._lock:
            waiting = list(self._jobs)
        refused = {id(job) for job in waiting if not keep(job[0])}
        with self._lock:
            cancelled = [job for job in self._jobs if id(job) in refused]
            self._jobs = deque(job for job in self._jobs if id(job) not in refused)
        return [key for key, _ in cancelled]

    def close(self) -> list[K]:
        """Stop the workers once the sends in flight are done (collect them with `done` first); the
        queued sends that had not started never do: their keys are returned, by this call and any
        later one (a close cut short by Ctrl-C after it took them back loses none). `_closing` is set
        in the same locked step that takes them back, before any waiting worker is woken."""
        with self._lock:
            self._closing = True
            # Built first, then both stored with no call between them, where a signal could land.
            self._taken_back, self._jobs = self._taken_back + list(self._jobs), deque()
            self._turn.notify_all()
        for thread in self._threads:
            thread.join()
        return [key for key, _ in self._taken_back]

    def _worker(self) -> None:
        while True:
            with self._turn:
                while not self._closing and (self._unsettled or not self._jobs):
                    self._turn.wait()
                if self._closing:
                    return
                self._running += 1  # before the job leaves `_jobs`: `done`, which looks unlocked, always sees it
                key, send = self._jobs.popleft()
            transport = self._idle.get()
            try:
                finished = Done(key, value=send(transport))
            except BaseException as err:  # handed to the caller's thread, which decides
                finished = Done(key, error=err)
            finally:
                self._idle.put(transport)
            with self._turn:
                if finished.error is not None and self._hold_after_failure:
                    self._unsettled += 1  # before the caller can see it
                self._finished.append(finished)  # before `_running` drops, for the same reason
                self._running -= 1
            self._woken.put(None)

"""SEND_ONE_CPU: a concurrent run's threads share one CPU while they send, and let go afterwards."""

from __future__ import annotations

import os
import threading

import pytest

from email_automation import cpu_affinity
from email_automation.cpu_affinity import OneCpu, current_cpu, last_cpu

from .test_concurrent_send import Shared, Worker, run
from .test_run_daily import add_recipients

several_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or current_cpu() is None or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux's /proc and two CPUs or more")


@pytest.fixture(autouse=True)
def cpus_as_they_were():
    """A failing test must not leave the rest of the session on one CPU (where these would pass)."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before, put_back = os.sched_getaffinity(0), os.sched_setaffinity  # the real one, whatever a test fakes
    yield
    put_back(0, before)


def affinity_of_a_new_thread() -> set[int]:
    seen: list[set[int]] = []
    thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
    thread.start()
    thread.join()
    return seen[0]


def stat_line(name: bytes, cpu: int) -> bytes:
    later_fields = [b"S", *(str(n).encode() for n in range(4, 39)), str(cpu).encode(),
                    *(str(n).encode() for n in range(40, 53))]
    return b"4242 (" + name + b") " + b" ".join(later_fields) + b"\n"


@pytest.mark.parametrize("name", [b"send-3", b"a) (b) c", "campagne_d_\u00e9t\u00e9".encode()[:15]],
                         ids=["plain", "spaces and parentheses", "cut inside a UTF-8 character"])
def test_the_cpu_is_read_whatever_the_threads_name(name):
    assert last_cpu(stat_line(name, 7)) == 7


def test_a_stat_line_cut_short_gives_no_cpu():
    assert last_cpu(b"4242 (cut short) S 1 2") is None


@several_cpus
def test_threads_started_inside_share_the_callers_one_cpu_and_the_caller_gets_its_cpus_back():
    before = os.sched_getaffinity(0)
    with OneCpu() as one:
        assert one.pinned_to in before
        assert os.sched_getaffinity(0) == {one.pinned_to}
        assert affinity_of_a_new_thread() == {one.pinned_to}
    assert os.sched_getaffinity(0) == before
    assert affinity_of_a_new_thread() == before


@several_cpus
def test_a_thread_started_inside_that_outlives_it_gets_the_cpus_back_too():
    """Such as the send watchdog, started by the first send and kept for the process's life."""
    before, release = os.sched_getaffinity(0), threading.Event()
    seen: list[set[int]] = []
    lingering = threading.Thread(target=lambda: release.wait(10) and seen.append(os.sched_getaffinity(0)),
                                 daemon=True)
    with OneCpu():
        lingering.start()
    release.set()
    lingering.join()
    assert seen == [before]


@several_cpus
def test_the_cpus_come_back_when_the_work_inside_fails():
    before = os.sched_getaffinity(0)
    with pytest.raises(KeyboardInterrupt), OneCpu():
        raise KeyboardInterrupt
    assert os.sched_getaffinity(0) == before


@several_cpus
def test_disabled_it_leaves_the_cpus_alone():
    before = os.sched_getaffinity(0)
    with OneCpu(enabled=False) as one:
        assert one.pinned_to is None
        assert os.sched_getaffinity(0) == before


class FakeAffinity:
    """os.sched_getaffinity/sched_setaffinity of a machine where the caller may use CPUs 1 and 3."""

    def __init__(self) -> None:
        self.cpus = {0: {1, 3}}
        self.refuse = False

    def get(self, thread: int) -> set[int]:
        return set(self.cpus[thread])

    def set(self, thread: int, cpus) -> None:
        if self.refuse:
            raise PermissionError(1, "Operation not permitted")
        self.cpus[thread] = set(cpus)


@pytest.fixture
def fake(monkeypatch) -> FakeAffinity:
    fake = FakeAffinity()
    monkeypatch.setattr(os, "sched_getaffinity", fake.get, raising=False)
    monkeypatch.setattr(os, "sched_setaffinity", fake.set, raising=False)
    monkeypatch.setattr(cpu_affinity, "current_cpu", lambda: 3)
    return fake


def test_the_caller_gets_back_the_cpus_it_had_not_every_cpu(fake):
    with OneCpu() as one:
        assert one.pinned_to == 3 and fake.cpus[0] == {3}
    assert fake.cpus[0] == {1, 3}


def test_an_interruption_just_after_pinning_puts_the_cpus_back(fake, monkeypatch):
    pin = fake.set

    def pinned_then_interrupted(thread, cpus):
        pin(thread, cpus)
        if cpus == {3}:
            raise KeyboardInterrupt

    monkeypatch.setattr(os, "sched_setaffinity", pinned_then_interrupted)
    with pytest.raises(KeyboardInterrupt), OneCpu():
        pass
    assert fake.cpus[0] == {1, 3}


def test_a_kernel_that_refuses_leaves_the_run_as_it_was(fake):
    fake.refuse = True
    with OneCpu() as one:
        assert one.pinned_to is None
    assert fake.cpus[0] == {1, 3}


def test_without_the_gil_it_does_nothing(fake, monkeypatch):
    monkeypatch.setattr(cpu_affinity, "_gil_enabled", lambda: False)
    with OneCpu() as one:
        assert one.pinned_to is None and fake.cpus[0] == {1, 3}


class RecordsItsCpus(Worker):
    def send(self, message, *, tags):
        self.shared.cpus.append(os.sched_getaffinity(0))
        return super().send(message, tags=tags)


class SharedCpus(Shared):
    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.cpus: list[set[int]] = []

    def factory(self):
        self.made.append(RecordsItsCpus(self))
        return self.made[-1]


def cpus_of_the_sends(settings, db, clock, **update) -> list[set[int]]:
    settings = settings.model_copy(update=update)
    add_recipients(db, 8)
    shared = SharedCpus(settings)
    assert run(settings, db, shared, clock).sent == 8
    return shared.cpus


@several_cpus
def test_a_concurrent_run_sends_from_one_cpu_then_has_all_of_them_again(settings, db, clock):
    before = os.sched_getaffinity(0)
    cpus = cpus_of_the_sends(settings, db, clock, send_concurrency=4)
    assert len(cpus) == 8 and len(cpus[0]) == 1 and all(seen == cpus[0] for seen in cpus)
    assert cpus[0] <= before
    assert os.sched_getaffinity(0) == before, "the run's thread has its CPUs back"


@several_cpus
@pytest.mark.parametrize("update", [{"send_concurrency": 4, "send_one_cpu": False},
                                    {"send_concurrency": 4, "delay_seconds": 1}, {"send_concurrency": 1}],
                         ids=["SEND_ONE_CPU=false", "with a delay", "one at a time"])
def test_other_runs_send_from_every_cpu(settings, db, clock, update):
    before = os.sched_getaffinity(0)
    assert cpus_of_the_sends(settings, db, clock, **update) == [before] * 8

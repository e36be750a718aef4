"""SEND_ONE_CPU: a concurrent run's threads share one CPU while they send, and let go afterwards."""

from __future__ import annotations

import os
import threading

import pytest

from email_automation.cpu_affinity import OneCpu, processor

from .test_concurrent_send import Shared, Worker, run
from .test_run_daily import add_recipients

several_cpus = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux and two CPUs or more")


def affinity_of_a_new_thread() -> set[int]:
    seen: list[set[int]] = []
    thread = threading.Thread(target=lambda: seen.append(os.sched_getaffinity(0)))
    thread.start()
    thread.join()
    return seen[0]


def test_the_cpu_is_read_after_a_command_name_holding_spaces_and_parentheses():
    later_fields = ["S", *map(str, range(4, 39)), "7", *map(str, range(40, 53))]
    assert processor("4242 (send) (x) 1) " + " ".join(later_fields) + "\n") == 7
    assert processor("4242 (cut short) S 1 2") is None


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


class RecordsItsCpus(Worker):
    def send(self, message, *, tags):
        self.shared.cpus.append(os.sched_getaffinity(0))
        return super().send(message, tags=tags)


def cpus_of_the_sends(settings, db, clock, **update) -> list[set[int]]:
    settings = settings.model_copy(update=update)
    add_recipients(db, 8)
    shared = Shared(settings)
    shared.cpus = []
    shared.factory = lambda: shared.made.append(RecordsItsCpus(shared)) or shared.made[-1]
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

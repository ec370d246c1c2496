"""The queue of the work after an ack (bot/web/work.py): it makes way for Slack's requests.

No timing claims: each test holds the traffic or a job open with events and checks what has
and has not run, with deadlines far from the waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bot.web.work import SlackTraffic, WorkQueue

LONG = 60.0  # a yield no test waits out


@pytest.fixture
def traffic() -> SlackTraffic:
    return SlackTraffic(quiet=0.01)


@pytest.fixture
def queue(traffic: SlackTraffic) -> Iterator[WorkQueue]:
    queue = WorkQueue(workers=2, capacity=4, traffic=traffic, yield_seconds=LONG)
    yield queue
    queue.shutdown(wait=True)


def recorder() -> tuple[list[str], threading.Event, object]:
    ran: list[str] = []
    done = threading.Event()

    def job(name: str):
        def run() -> None:
            ran.append(name)
            done.set()

        return run

    return ran, done, job


def test_a_pause_is_no_request_in_progress_for_the_quiet_time(traffic: SlackTraffic) -> None:
    assert traffic.wait_for_a_pause(until=time.monotonic() + LONG) is True
    with traffic.serving():
        assert traffic.wait_for_a_pause(until=time.monotonic() + 0.05) is False
    assert traffic.wait_for_a_pause(until=time.monotonic() + LONG) is True


def test_requests_nest_and_the_pause_comes_after_the_last(traffic: SlackTraffic) -> None:
    with traffic.serving():
        with traffic.serving():
            pass
        assert traffic.wait_for_a_pause(until=time.monotonic() + 0.05) is False
    assert traffic.wait_for_a_pause(until=time.monotonic() + LONG) is True


def test_a_job_waits_while_a_request_is_in_progress_then_runs_in_the_pause(
    queue: WorkQueue, traffic: SlackTraffic
) -> None:
    ran, done, job = recorder()
    with traffic.serving():
        assert queue.submit(job("after the ack")) is True
        assert not done.wait(0.3)
        assert ran == []
    assert done.wait(10)
    assert ran == ["after the ack"]


def test_an_urgent_job_runs_at_once_whatever_the_traffic(
    queue: WorkQueue, traffic: SlackTraffic
) -> None:
    ran, done, job = recorder()
    with traffic.serving():
        queue.submit(job("held"))
        assert queue.submit(job("opens a modal"), urgent=True) is True
        assert done.wait(10)
        assert ran == ["opens a modal"]
    done.clear()
    assert done.wait(10)
    assert ran == ["opens a modal", "held"]


def test_a_job_waits_no_longer_than_its_yield(traffic: SlackTraffic) -> None:
    queue = WorkQueue(workers=1, capacity=4, traffic=traffic, yield_seconds=0.2)
    ran, done, job = recorder()
    try:
        with traffic.serving():  # the requests never pause
            queue.submit(job("overdue"))
            assert done.wait(10)
            assert ran == ["overdue"]
    finally:
        queue.shutdown(wait=True)


def test_held_jobs_start_in_the_order_queued(queue: WorkQueue, traffic: SlackTraffic) -> None:
    ran: list[int] = []
    all_done = threading.Event()

    def job(n: int):
        def run() -> None:
            ran.append(n)
            if len(ran) == 3:
                all_done.set()

        return run

    with traffic.serving():
        for n in range(3):
            queue.submit(job(n))
    assert all_done.wait(10)
    # Two threads may finish out of order; they start in order: 0 starts before 2.
    assert sorted(ran) == [0, 1, 2] and ran.index(0) < ran.index(2)


def test_a_full_queue_refuses_counting_held_and_running_jobs(traffic: SlackTraffic) -> None:
    queue = WorkQueue(workers=1, capacity=2, traffic=traffic, yield_seconds=LONG)
    release = threading.Event()
    try:
        assert queue.submit(lambda: release.wait(10), urgent=True) is True  # running
        with traffic.serving():
            assert queue.submit(lambda: None) is True  # held
            assert queue.submit(lambda: None) is False
            assert queue.submit(lambda: None, urgent=True) is False
    finally:
        release.set()
        queue.shutdown(wait=True)


def test_shutdown_runs_the_held_jobs_without_waiting_for_a_pause(traffic: SlackTraffic) -> None:
    queue = WorkQueue(workers=1, capacity=4, traffic=traffic, yield_seconds=LONG)
    ran, _done, job = recorder()
    with traffic.serving():
        queue.submit(job("held"))
        queue.shutdown(wait=True)
        assert ran == ["held"]
        assert queue.submit(job("late")) is False
    assert ran == ["held"]


def test_a_failing_job_frees_its_thread_and_its_room(traffic: SlackTraffic) -> None:
    queue = WorkQueue(workers=1, capacity=1, traffic=traffic, yield_seconds=LONG)
    ran, done, job = recorder()
    failed = threading.Event()

    def fails() -> None:
        failed.set()
        raise RuntimeError("the job fell over")

    try:
        assert queue.submit(fails) is True
        assert failed.wait(10)
        deadline = time.monotonic() + 10
        while not queue.submit(job("next")):  # refused only until the failed job lets go
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert done.wait(10)
        assert ran == ["next"]
    finally:
        queue.shutdown(wait=True)


def test_wait_for_requests_is_true_once_a_request_began_when_none_was_in_progress(
    traffic: SlackTraffic,
) -> None:
    # What the beacon (bot/slackjobs/beacon.py) waits on: the start of a burst, not each request.
    assert traffic.wait_for_requests(timeout=0.01) is False
    with traffic.serving(), traffic.serving():  # a second at once is the same burst
        pass
    assert traffic.wait_for_requests(timeout=0.01) is True
    assert traffic.wait_for_requests(timeout=0.01) is False  # told once
    traffic.wake()  # a beacon stopping is woken too
    assert traffic.wait_for_requests(timeout=0.01) is True

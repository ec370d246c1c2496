"""The work a Slack listener starts after its ack: a bounded queue served by a few threads.

A click or a slash command is acknowledged before any database work (docs/reference/slack.md,
"Acknowledging"): Slack gives up at 3 seconds, and a listener that records a response, updates
messages and redraws a Home holds its thread for much longer under load. Bolt's own listener
threads therefore only ack; what follows runs here, at most `workers` at a time (so the
database pool is not overrun), with at most `capacity` jobs waiting. Beyond that a job is
refused and its listener tells the user, rather than letting the wait grow without bound.

The work shares the process, and so Python's one interpreter lock, with the threads that answer
Slack. A profile under 50 concurrent clicks (docs/benchmarks.md) found it taking about as much
of that lock as the answers themselves, which then waited their turn. So the work makes way:
a job waits for a pause in Slack's requests (`SlackTraffic`: none in progress for
QUIET_SECONDS), but never longer than YIELD_SECONDS after it was queued, so a steady stream of
requests delays it by that much at most. A job that opens a modal is `urgent`: its trigger_id
expires 3 seconds after the click, so it never waits for a pause (it has threads of its own).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

logger = logging.getLogger(__name__)

WORKERS = 8
SQLITE_WORKERS = 2
URGENT_WORKERS = 2  # threads only urgent jobs (modals) may take beyond `workers`
CAPACITY = 2000
QUIET_SECONDS = 0.02  # no Slack request in progress for this long: a pause
YIELD_SECONDS = 5.0  # the longest a job waits for a pause


class SlackTraffic:
    """Counts the Slack requests in progress (bot/web/http.py), for the work to make way."""

    def __init__(self, quiet: float = QUIET_SECONDS) -> None:
        self._quiet = quiet
        self._changed = threading.Condition()
        self._in_progress = 0
        self._idle_since = time.monotonic()
        self._began = threading.Event()  # a request began when none was in progress

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Around the answer to one Slack request."""
        with self._changed:
            self._in_progress += 1
            began = self._in_progress == 1
        if began:
            self._began.set()
        try:
            yield
        finally:
            with self._changed:
                self._in_progress -= 1
                if self._in_progress == 0:
                    self._idle_since = time.monotonic()
                    self._changed.notify_all()

    def wait_for_a_pause(self, until: float, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Wait until no request has been in progress for the quiet time (True), or until the
        monotonic instant `until` or `give_up()` after a `wake` (False)."""
        with self._changed:
            while True:
                now = time.monotonic()
                if self._in_progress == 0 and now - self._idle_since >= self._quiet:
                    return True
                if now >= until or give_up():
                    return False
                if self._in_progress:
                    self._changed.wait(until - now)
                else:
                    self._changed.wait(min(until - now, self._quiet - (now - self._idle_since)))

    def wait_for_requests(self, timeout: float) -> bool:
        """Wait until a request begins when none was in progress, or has since the last call
        (True), at most `timeout` seconds (False): for bot/slackjobs/beacon.py."""
        if not self._began.wait(timeout):
            return False
        self._began.clear()
        return True

    def wake(self) -> None:
        """Have those waiting for a pause ask `give_up` again (and those waiting for requests
        look whether they are stopping)."""
        with self._changed:
            self._changed.notify_all()
        self._began.set()


class WorkQueue:
    """Runs jobs on `workers` threads; `submit` refuses a job when `capacity` are queued.

    With `traffic`, a job that is not urgent starts only in a pause of the Slack requests, or
    `yield_seconds` after it was queued, whichever comes first; jobs start in the order queued.
    """

    def __init__(
        self,
        workers: int = WORKERS,
        capacity: int = CAPACITY,
        *,
        traffic: SlackTraffic | None = None,
        yield_seconds: float = YIELD_SECONDS,
    ) -> None:
        self._executor = ThreadPoolExecutor(
            workers + URGENT_WORKERS, thread_name_prefix="slack-work"
        )
        self._room = threading.BoundedSemaphore(capacity)
        self._traffic = traffic
        self._yield_seconds = yield_seconds
        self._free = threading.Semaphore(workers)  # threads free for jobs that are not urgent
        self._held: deque[tuple[float, Callable[[], None]]] = deque()
        self._changed = threading.Condition()
        self._stopping = False
        self._gatekeeper = threading.Thread(
            target=self._release_held, name="slack-work-gate", daemon=True
        )
        self._gatekeeper.start()

    def submit(self, job: Callable[[], None], *, urgent: bool = False) -> bool:
        """Queue `job`; False (and nothing queued) when the queue is full."""
        if not self._room.acquire(blocking=False):
            logger.warning("slack work queue full: a job was refused")
            return False
        if urgent:
            return self._start(job, free=None)
        with self._changed:
            if self._stopping:
                self._room.release()
                return False
            self._held.append((time.monotonic() + self._yield_seconds, job))
            self._changed.notify()
        return True

    def _release_held(self) -> None:
        """The gatekeeper: hands held jobs, oldest first, to a free thread in a pause."""
        while True:
            with self._changed:
                while not self._held and not self._stopping:
                    self._changed.wait()
                if not self._held:
                    return
                deadline = self._held[0][0]
            self._free.acquire()
            if self._traffic is not None:
                self._traffic.wait_for_a_pause(until=deadline, give_up=lambda: self._stopping)
            with self._changed:
                _, job = self._held.popleft()
            self._start(job, free=self._free)

    def _start(self, job: Callable[[], None], free: threading.Semaphore | None) -> bool:
        try:
            self._executor.submit(self._run, job, free)
        except RuntimeError:  # shutting down
            self._room.release()
            if free is not None:
                free.release()
            return False
        return True

    def _run(self, job: Callable[[], None], free: threading.Semaphore | None) -> None:
        try:
            job()
        except Exception:
            logger.exception("a Slack job failed after its ack")
        finally:
            self._room.release()
            if free is not None:
                free.release()

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking jobs; with `wait`, finish those queued (held ones at once)."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._traffic is not None:
            self._traffic.wake()
        if wait:
            self._gatekeeper.join()
        self._executor.shutdown(wait=wait)

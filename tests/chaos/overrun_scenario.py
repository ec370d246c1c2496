"""A dispatcher frozen past its claim, mid-delivery (tests/chaos/test_overrun.py and
benchmarks/bench_chaos.py): real `handover dispatch` processes on one database and the Slack
stand-in, as processes.

Each round holds the next `chat.postMessage` to one person's DM at the stand-in *before* it
takes effect (a `hold` fault): the dispatcher sending it has passed its claim check and its
post is on its way, as when a process freezes between the two. That dispatcher is SIGSTOPped,
the deployment's clock is moved past the lease, and a second dispatcher is started: it takes
the frozen one's rows over and delivers them (the held post is not in Slack yet, so it posts
it too). Then the held post is let through (it lands in Slack late, a second copy) and
answered, and the frozen process gets SIGCONT: it finds its claim lost, finds the other copy by
the row's tag, and deletes its own (`chat.delete`, `duplicate_deleted`). The frozen process is
then stopped, and the second one is the one that freezes in the next round.

The lease is measured by the deployment's clock (HANDOVER_CLOCK_FILE), so "longer than the
lease" costs no real time, and the freeze lands at the same point every time.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from bot.delivery.outbox import DEFAULT_LEASE
from tests.e2e.harness import Deployment, wait_for

PAST_THE_LEASE = DEFAULT_LEASE + timedelta(seconds=15)
HOLD_SECONDS = 120  # the stand-in's own limit on a hold; every round releases it well before


@dataclass
class OverrunReport:
    """What the rounds did: each round's frozen post, and what Slack holds at the end."""

    rounds: int = 0
    held: list[str] = field(default_factory=list)  # the DM each frozen post went to
    deleted: list[str] = field(default_factory=list)  # ts of each late copy deleted
    freeze_seconds: list[float] = field(default_factory=list)  # real time each was stopped


class Overruns:
    """Rounds of a dispatcher frozen mid-delivery; one dispatcher runs between rounds."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.running = deployment.start("dispatch")
        self.report = OverrunReport()

    def round(self, slack_user: str, trigger: Callable[[], None]) -> None:
        """Freeze the dispatcher while its post to `slack_user`'s DM is on its way; `trigger`
        makes that post due (a referral posted, the clock moved to a reminder)."""
        deployment, standin = self.deployment, self.deployment.standin
        standin.inject(
            {
                "kind": "hold",
                "method": "chat.postMessage",
                "channel": slack_user,
                "seconds": HOLD_SECONDS,
            }
        )
        deletions = len(standin.calls("chat.delete"))
        trigger()
        wait_for(lambda: standin.get("holds")["held"], timeout=60)
        frozen, stopped_at = self.running, time.monotonic()
        self._freeze(frozen)
        try:
            deployment.set_clock(deployment.now() + PAST_THE_LEASE)
            self.running = deployment.start("dispatch")
            deployment.settle(timeout=60)  # the new one took every row over and sent it
        finally:
            standin.post("holds/release", {})
            # Answered before the frozen process runs again: it reads the answer at once.
            wait_for(lambda: not standin.get("holds")["held"], timeout=30)
            frozen.send_signal(signal.SIGCONT)
            self.report.freeze_seconds.append(time.monotonic() - stopped_at)
        try:
            wait_for(lambda: len(standin.calls("chat.delete")) > deletions, timeout=60)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{deployment.logs()[-8000:]}") from None
        deployment.kill(frozen, signal.SIGTERM)
        self.report.rounds += 1
        self.report.held.append(slack_user)
        self.report.deleted += [
            call["args"]["ts"] for call in standin.calls("chat.delete")[deletions:]
        ]

    def _freeze(self, process: subprocess.Popen) -> None:
        """SIGSTOP, at a moment when none of the process's transactions is open: its lease
        heartbeat (a few milliseconds every 10 s) would otherwise keep rows locked, and a row
        locked by a frozen process is skipped by the others until it resumes."""
        for _ in range(100):
            process.send_signal(signal.SIGSTOP)
            if not self._transactions_open():
                return
            process.send_signal(signal.SIGCONT)
            time.sleep(0.05)
        raise AssertionError("the dispatcher never left its transactions")

    def _transactions_open(self) -> bool:
        busy = self.deployment.query(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " AND state IN ('active', 'idle in transaction')"
        )
        return busy[0][0] > 0

    def stop(self) -> None:
        """Stop the running dispatcher (gracefully)."""
        if self.running.poll() is None:
            self.deployment.kill(self.running, signal.SIGTERM)


def copies_by_row(deployment: Deployment) -> Counter[tuple[str, int]]:
    """How many messages Slack holds of each outbox row: (event type, row id) -> count."""
    counts: Counter[tuple[str, int]] = Counter()
    for message in deployment.standin.messages():
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        row = payload.get("row_id", payload.get("prompt_id"))
        if row is not None:
            counts[(metadata["event_type"], int(row))] += 1
    return counts

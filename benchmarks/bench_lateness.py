"""How late prompts go: a single prompt due at an instant, and a burst due at once.

    python benchmarks/bench_lateness.py [--samples 10] [--burst 5000] [--rate 10]
        [--database-url sqlite]

A background dispatcher at the default settings (its safety pass every 30 s, the real clock)
runs against the stand-in at Slack's tiers and `--rate` messages a second. Rows are written due
a few seconds ahead and the dispatcher is woken, as intake does after writing rows; lateness is
the stand-in's timestamp of the message minus the instant it was due. Prints p50 and p99 of a
single prompt's lateness over `--samples` instants, then the burst's: when its last prompt
went, against the rate-limit bound ((burst - Slack's burst) / rate).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select, update

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_dispatch import TOKEN, drop_database, fresh_database, seed  # noqa: E402

from bot.channels.slack import make_web_client  # noqa: E402
from bot.clock import SystemClock  # noqa: E402
from bot.db import create_db_engine, make_session_factory  # noqa: E402
from bot.delivery.dispatcher import Dispatcher  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import OutboxMessage, Referral, Target  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.slack_standin import SlackStandIn, StandInUser  # noqa: E402
from bot.slack_standin.ratelimits import RateLimits  # noqa: E402
from rota.models import Team  # noqa: E402

LEAD = 3.0  # seconds between writing rows and their due instant


def due_soon(factory, row_ids: list[int]) -> datetime:
    """Make `row_ids` due LEAD seconds from now; returns the instant."""
    due = datetime.now(UTC) + timedelta(seconds=LEAD)
    with factory.begin() as session:
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(row_ids)).values(due_at=due)
        )
        targets = select(OutboxMessage.target_id).where(OutboxMessage.id.in_(row_ids))
        session.execute(update(Target).where(Target.id.in_(targets)).values(due_at=due))
    return due


def wait_sent(slack: SlackStandIn, count: int, timeout: float) -> list[float]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stamps = [float(m["ts"]) for m in slack.messages()]
        if len(stamps) >= count:
            return sorted(stamps)
        time.sleep(0.05)
    raise SystemExit(f"only {len(slack.messages())} of {count} sent within {timeout:.0f} s")


def measure(url: str, samples: int, burst: int, rate: float) -> None:
    total = samples + burst
    seeded = -(-total // 10) * 10  # the seed writes ten prompts a referral
    seed(url, seeded)
    users = [StandInUser(id=f"U2{i:05d}", name=f"p{i}") for i in range(seeded)]
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    far = datetime(2099, 1, 1, tzinfo=UTC)
    with factory.begin() as session:
        session.execute(update(OutboxMessage).values(due_at=far))
        session.execute(update(Target).values(due_at=far))
        past = datetime.now(UTC) - timedelta(hours=1)
        session.execute(update(Referral).values(referred_at=past, received_at=past))
        # Everyone at work whenever the benchmark runs: a prompt is sent when it is due.
        session.execute(update(Team).values(hours="Mon-Sun 00:00-24:00"))
        ids = sorted(session.scalars(OutboxMessage.__table__.select().with_only_columns(
            OutboxMessage.id)))  # fmt: skip
    limits = RateLimits.slack_tiers(messages_per_second=rate)
    with SlackStandIn(users=users, rate_limit=None, rate_limits=limits) as slack:
        settings = Settings(
            database_url=url, slack_bot_token=TOKEN, slack_api_url=slack.url, slack_rate=rate
        )
        dispatcher = Dispatcher(settings, factory, make_web_client(settings), SystemClock())
        dispatcher.start()
        try:
            late = []
            for n in range(samples):
                due = due_soon(factory, [ids[n]])
                dispatcher.wake()  # intake wakes the dispatcher after writing rows
                [*_, last] = wait_sent(slack, n + 1, timeout=120)
                late.append(last - due.timestamp())
                time.sleep(1.0)  # let the buckets refill between samples
            late.sort()
            p99 = late[min(len(late) - 1, int(len(late) * 0.99))]
            print(
                f"single prompt, {samples} instants: lateness p50 {statistics.median(late):.2f} s,"
                f" p99 {p99:.2f} s, worst {late[-1]:.2f} s (goal: p99 <= 1 s)"
            )
            if burst:
                time.sleep(2.0)
                due = due_soon(factory, ids[samples:total])
                dispatcher.wake()
                stamps = wait_sent(slack, total, timeout=burst / rate * 3 + 120)[samples:]
                lateness = sorted(s - due.timestamp() for s in stamps)
                bound = (burst - max(1, int(rate))) / rate
                print(
                    f"burst of {burst}: p50 {statistics.median(lateness):.1f} s, p99 "
                    f"{lateness[int(len(lateness) * 0.99) - 1]:.1f} s, last {lateness[-1]:.1f} s "
                    f"= {lateness[-1] / bound:.2f}x the rate-limit bound of {bound:.1f} s; "
                    f"429s: {slack.rate_limits().get('ratelimited') or 0}"
                )
        finally:
            dispatcher.shutdown()
            engine.dispose()


def main() -> None:
    import logging

    logging.basicConfig(level=os.environ.get("BENCH_LOG", "WARNING"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--database-url", help="'sqlite' for a SQLite file (default PostgreSQL)")
    args = parser.parse_args()
    backend = "SQLite" if args.database_url == "sqlite" else "PostgreSQL"
    print(f"lateness, {backend}, default dispatcher settings, {args.rate:g} messages/s")
    with tempfile.TemporaryDirectory() as tmp:
        name = f"handover_lateness_{os.getpid()}"
        if args.database_url == "sqlite":
            url = f"sqlite:///{tmp}/{name}.db"
            upgrade(url)
            measure(url, args.samples, args.burst, args.rate)
        else:
            url = fresh_database(name)
            try:
                measure(url, args.samples, args.burst, args.rate)
            finally:
                drop_database(name)


if __name__ == "__main__":
    main()

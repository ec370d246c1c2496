"""The morning fan-out under Slack's limits: prompts due at once, against the rate-limit bound.

    python benchmarks/bench_fanout.py [--prompts 5000] [--rate 10] [--dispatchers 1 2]
        [--database-url URL] [--growth 1000 10000]

The stand-in enforces Slack's tiers and a workspace limit of `--rate` messages a second
(`RateLimits.slack_tiers(messages_per_second=RATE)`); the bot's HANDOVER_SLACK_RATE is the same.
Each run gets a fresh database (PostgreSQL beside HANDOVER_TEST_PG_URL's, or a SQLite file with
`--database-url sqlite`), `--prompts` prompts due at once to distinct people, and
`--dispatchers` dispatchers as threads of this process sharing the database. Prints the time
against the bound ((prompts - burst) / rate), the 429s the stand-in answered (a prompt that met
one is back in the outbox until its Retry-After, which the fixed clock never reaches), SQL
statements and transactions per prompt (counted with SQLAlchemy events; the App Home redraws,
on their own thread, counted apart, per redraw), and how late each prompt went (p50, p99). With
`--growth`, the same unthrottled, to show the cost per prompt as the queue grows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import event, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_dispatch import NOW, TOKEN, drop_database, fresh_database, seed  # noqa: E402

from bot.channels.slack import make_web_client  # noqa: E402
from bot.clock import FixedClock  # noqa: E402
from bot.db import create_db_engine, make_session_factory  # noqa: E402
from bot.delivery.dispatcher import Dispatcher  # noqa: E402
from bot.delivery.kinds import RowState  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import OutboxMessage  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.slack_standin import SlackStandIn, StandInUser  # noqa: E402
from bot.slack_standin.ratelimits import RateLimits  # noqa: E402


class SqlCounter:
    """Statements and transactions (BEGINs) on an engine: the App Home redraws' (their own
    thread, paced on their own tier) apart from delivery's (the dispatchers and their lease
    heartbeats)."""

    HOMES = "home-refreshes"  # the redraw thread's name (bot/delivery/home.py)

    def __init__(self, engine) -> None:
        self.statements = 0
        self.transactions = 0
        self.home_statements = 0
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "begin", self._begin)

    def _statement(self, *args) -> None:
        with self._lock:
            if threading.current_thread().name == self.HOMES:
                self.home_statements += 1
            else:
                self.statements += 1

    def _begin(self, *args) -> None:
        with self._lock:
            if threading.current_thread().name != self.HOMES:
                self.transactions += 1


def run(url: str, prompts: int, dispatchers: int, rate: float | None) -> dict:
    seed(url, prompts)
    users = [StandInUser(id=f"U2{i:05d}", name=f"p{i}") for i in range(prompts)]
    limits = RateLimits.slack_tiers(messages_per_second=rate) if rate else None
    with SlackStandIn(users=users, rate_limit=None, rate_limits=limits) as slack:
        settings = Settings(
            database_url=url,
            slack_bot_token=TOKEN,
            slack_api_url=slack.url,
            slack_rate=rate or 1000.0,
        )
        engine = create_db_engine(url, pool_size=dispatchers + 4)
        counter = SqlCounter(engine)
        factory = make_session_factory(engine)
        clock = FixedClock(NOW)
        workers = [
            Dispatcher(settings, factory, make_web_client(settings), clock, f"bench-{i}")
            for i in range(dispatchers)
        ]
        sent_at: list[float] = []
        started = time.time()
        threads = [threading.Thread(target=w.run_once) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.time() - started
        for message in slack.messages():
            sent_at.append(float(message["ts"]) - started)
        statements, transactions = counter.statements, counter.transactions
        home_statements, redraws = counter.home_statements, len(slack.calls("views.publish"))
        with factory() as session:
            states = Counter(
                session.scalars(select(OutboxMessage.state).where(OutboxMessage.kind == "prompt"))
            )
        ratelimited = slack.rate_limits().get("ratelimited", {})
        homes_pending = sum(len(w.homes._pending) for w in workers)
        for w in workers:
            w.shutdown()
        engine.dispose()
    # A prompt that met a 429 is back in the outbox until its Retry-After, which the fixed
    # clock never reaches: counted, not sent twice. Anything else is a failure.
    assert set(states) <= {RowState.SENT, RowState.PENDING}, states
    assert states[RowState.PENDING] <= sum(ratelimited.values()), (states, ratelimited)
    sent_at.sort()
    return {
        "elapsed": elapsed,
        "statements": statements / prompts,
        "transactions": transactions / prompts,
        "ratelimited": ratelimited,
        "p50": statistics.median(sent_at) if sent_at else float("nan"),
        "p99": sent_at[int(len(sent_at) * 0.99) - 1] if sent_at else float("nan"),
        "unsent": states[RowState.PENDING],
        "homes_pending": homes_pending,
        "redraws": redraws,
        "a_redraw": home_statements / redraws if redraws else float("nan"),
    }


def database(url_arg: str | None, name: str, tmp: str) -> tuple[str, callable]:
    if url_arg == "sqlite":
        url = f"sqlite:///{tmp}/{name}.db"
        upgrade(url)
        return url, lambda: None
    return fresh_database(name), lambda: drop_database(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--dispatchers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--database-url", help="'sqlite' for a SQLite file (default PostgreSQL)")
    parser.add_argument("--growth", type=int, nargs="*", default=[])
    args = parser.parse_args()
    backend = "SQLite" if args.database_url == "sqlite" else "PostgreSQL"
    burst = max(1, int(args.rate))
    bound = (args.prompts - burst) / args.rate
    with tempfile.TemporaryDirectory() as tmp:
        print(
            f"{args.prompts} prompts due at once, {backend}, stand-in at Slack's tiers and "
            f"{args.rate:g} messages/s; bound {bound:.1f} s"
        )
        for dispatchers in args.dispatchers:
            name = f"handover_fanout_{os.getpid()}_{dispatchers}"
            url, drop = database(args.database_url, name, tmp)
            try:
                r = run(url, args.prompts, dispatchers, args.rate)
            finally:
                drop()
            unsent = f" ({r['unsent']} back in the outbox until Retry-After)" if r["unsent"] else ""
            print(
                f"{dispatchers} dispatcher(s): {r['elapsed']:.1f} s = "
                f"{r['elapsed'] / bound:.2f}x the bound; 429s: {r['ratelimited'] or 0}{unsent}; "
                f"{r['statements']:.1f} SQL statements and {r['transactions']:.2f} transactions "
                f"a prompt; lateness p50 {r['p50']:.1f} s, p99 {r['p99']:.1f} s; "
                f"App Homes: {r['redraws']} redrawn meanwhile, {r['a_redraw']:.1f} statements "
                f"each, {r['homes_pending']} still queued at the end"
            )
        if args.growth:
            print(f"growth, unthrottled, 1 dispatcher, {backend}:")
            for count in args.growth:
                name = f"handover_growth_{os.getpid()}_{count}"
                url, drop = database(args.database_url, name, tmp)
                try:
                    r = run(url, count, 1, None)
                finally:
                    drop()
                print(
                    f"  {count:>6} prompts: {r['elapsed']:.1f} s, "
                    f"{r['elapsed'] / count * 1000:.1f} ms a prompt, "
                    f"{r['statements']:.1f} statements and {r['transactions']:.2f} transactions "
                    f"a prompt (App Homes: {r['redraws']} redrawn, {r['a_redraw']:.1f} "
                    "statements each)"
                )


if __name__ == "__main__":
    main()

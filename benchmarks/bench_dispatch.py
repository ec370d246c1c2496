"""Prompts per second through the local Slack stand-in, 1 and 2 dispatchers, on PostgreSQL.

    python benchmarks/bench_dispatch.py [--prompts 1000] [--mode threads|processes]

Each run gets a fresh database (created beside HANDOVER_TEST_PG_URL's, dropped after), 1,000
prompts due at once to distinct people, and a stand-in with its rate limit turned off. Threads
share one process with the stand-in (so they share the GIL); processes are separate
`handover dispatch --once` runs, as several instances would be, and include start-up time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.channels.slack import make_web_client  # noqa: E402
from bot.clock import FixedClock  # noqa: E402
from bot.db import create_db_engine, make_session_factory  # noqa: E402
from bot.delivery.dispatcher import Dispatcher  # noqa: E402
from bot.delivery.kinds import RowState  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import OutboxMessage, Referral, Target  # noqa: E402
from bot.settings import Settings  # noqa: E402
from bot.slack_standin import SlackStandIn, StandInUser  # noqa: E402
from rota.models import RotaVersion  # noqa: E402
from tests.rota.factories import new_person, new_team  # noqa: E402

PG_URL = os.environ.get("HANDOVER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
NOW = datetime(2027, 1, 11, 9, 0, tzinfo=UTC)
TOKEN = "xoxb-bench"


def fresh_database(name: str) -> str:
    base = make_url(PG_URL)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = base.set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    return url


def drop_database(name: str) -> None:
    admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def seed(url: str, count: int) -> None:
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        session.add(RotaVersion(version=1, imported_at=NOW, files="bench", summary="{}"))
        session.add(new_team("t", name="Team", agency="NHS"))
        session.flush()
        for r in range(count // 10):
            session.add(
                Referral(
                    referral_id=f"HO-B{r:05d}",
                    external_ref=f"B-{r}",
                    category="neglect",
                    urgency="standard",
                    referred_at=NOW,
                    received_at=NOW,
                    referrer_id="edt",
                    summary="bench",
                    source="api",
                    request_hash="0" * 64,
                    rota_version=1,
                    plan_json="{}",
                )
            )
        for i in range(count):
            session.add(
                new_person(
                    f"p{i}", "t", name=f"P {i}", slack_user=f"U2{i:05d}", email=None, role="x"
                )
            )
        session.flush()
        for i in range(count):
            target = Target(
                referral_id=f"HO-B{i // 10:05d}",
                position=i % 10,
                spec=f"person:p{i}",
                planned_via="self",
                planned_recipient=f"p{i}",
                due_at=NOW,
                state="held",
            )
            session.add(target)
            session.flush()
            session.add(
                OutboxMessage(
                    referral_id=target.referral_id,
                    target_id=target.id,
                    kind="prompt",
                    due_at=NOW,
                    state=RowState.PENDING,
                    attempts=0,
                )
            )
    engine.dispose()


def run_threads(url: str, slack: SlackStandIn, dispatchers: int) -> None:
    settings = Settings(database_url=url, slack_bot_token=TOKEN, slack_api_url=slack.url)
    engine = create_db_engine(url, pool_size=dispatchers + 2)
    factory = make_session_factory(engine)
    clock = FixedClock(NOW)
    workers = [
        Dispatcher(settings, factory, make_web_client(settings), clock, f"bench-{i}")
        for i in range(dispatchers)
    ]
    threads = [threading.Thread(target=w.run_once) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    engine.dispose()


def run_processes(url: str, slack: SlackStandIn, dispatchers: int, clock_file: str) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "SLACK_API_URL": slack.url,
        "SLACK_BOT_TOKEN": TOKEN,
        "HANDOVER_CLOCK_FILE": clock_file,
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot", "dispatch", "--once"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(dispatchers)
    ]
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"a dispatcher exited with {proc.returncode}")


def check(url: str, slack: SlackStandIn, count: int) -> None:
    engine = create_db_engine(url)
    with make_session_factory(engine)() as session:
        # The prompts (each sent schedules its first escalation step, pending for later).
        states = Counter(
            session.scalars(select(OutboxMessage.state).where(OutboxMessage.kind == "prompt"))
        )
    engine.dispose()
    per_prompt = Counter(
        (m.get("metadata") or {}).get("event_payload", {}).get("prompt_id")
        for m in slack.messages()
    )
    assert states == Counter({RowState.SENT: count}), states
    assert len(per_prompt) == count and set(per_prompt.values()) == {1}, "duplicates or gaps"


def bench(count: int, dispatchers: int, mode: str) -> float:
    name = f"handover_bench_{os.getpid()}_{dispatchers}"
    url = fresh_database(name)
    try:
        seed(url, count)
        users = [StandInUser(id=f"U2{i:05d}", name=f"p{i}") for i in range(count)]
        with (
            SlackStandIn(users=users, rate_limit=None) as slack,
            tempfile.TemporaryDirectory() as tmp,
        ):
            clock_file = os.path.join(tmp, "clock")
            Path(clock_file).write_text(NOW.isoformat())
            started = time.perf_counter()
            if mode == "threads":
                run_threads(url, slack, dispatchers)
            else:
                run_processes(url, slack, dispatchers, clock_file)
            elapsed = time.perf_counter() - started
            check(url, slack, count)
        return elapsed
    finally:
        drop_database(name)


def main() -> None:
    """Print prompts per second for 1 and 2 dispatchers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--mode", choices=("threads", "processes"), default="processes")
    args = parser.parse_args()
    print(f"{args.prompts} prompts due at once, PostgreSQL, stand-in without rate limit")
    for dispatchers in (1, 2):
        elapsed = bench(args.prompts, dispatchers, args.mode)
        rate = args.prompts / elapsed
        print(
            f"{dispatchers} dispatcher{'s' if dispatchers > 1 else ''} ({args.mode}): "
            f"{elapsed:.1f} s, {rate:.0f} prompts/s, each sent exactly once"
        )


if __name__ == "__main__":
    main()

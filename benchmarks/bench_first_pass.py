"""A new dispatcher's first pass against a warm one, for this code and a baseline checkout side
by side, in one sitting.

    python benchmarks/bench_first_pass.py --baseline-root OTHER_CHECKOUT [--pairs 6]
        [--database sqlite|postgresql|both] [--db-prefix cold]

Each run is a fresh process of its side's code (`OTHER_CHECKOUT/.venv/bin/python` with the
baseline's checkout first on the path) with a fresh database (SQLite file, or a PostgreSQL
database named `<prefix>_first_pass_<pid>`, dropped after) and the Slack stand-in: the
delivery tests' rota and one prompt due at 10:00 (tests/bot/delivery/dispatch_fixtures.py).
A dispatcher starts at 09:00 (its warm-up, timed: "start"; its first pass, finding nothing
due) and stops; at 10:00 a dispatcher of the same process runs a pass (the prompt, then the
card it updates): "first". Then a second referral's prompt, due at once, and another pass:
"warm". The runs alternate baseline, this code, baseline...; each figure is the median, with
the load average before each pair.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_URL = os.environ.get(
    "HANDOVER_BENCH_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def child(database: str, prefix: str) -> None:
    """One run, in this process: prints {"first": s, "warm": s}."""
    sys.path.insert(0, os.getcwd())  # the side's checkout (the parent sets the cwd)
    from sqlalchemy import create_engine, make_url, text

    from bot.clock import FixedClock
    from bot.db import create_db_engine, make_session_factory
    from bot.migrate import upgrade
    from bot.settings import Settings
    from bot.slack_standin import SlackStandIn, StandInUser
    from tests.bot.delivery.dispatch_fixtures import (
        EDT,
        MONDAY_9,
        TOKEN,
        add_prompt_for,
        add_referral,
        add_rota,
        make_dispatcher,
    )

    name = f"{prefix}_first_pass_{os.getpid()}"
    admin = None
    with tempfile.TemporaryDirectory() as tmp:
        if database == "sqlite":
            url = f"sqlite:///{tmp}/handover.db"
        else:
            admin = create_engine(make_url(PG_URL), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
        try:
            upgrade(url)
            clock = FixedClock(MONDAY_9)
            users = [StandInUser(id="U0HV1", name="jsmith", email="jo.smith@nhs.example")]
            due = MONDAY_9 + timedelta(hours=1)
            with SlackStandIn(
                users=users, channels=[EDT], clock=lambda: clock.now().timestamp()
            ) as slack:
                settings = Settings(
                    database_url=url,
                    slack_bot_token=TOKEN,
                    slack_api_url=slack.url,
                    edt_channel=EDT,
                )
                engine = create_db_engine(url)
                factory = make_session_factory(engine)
                with factory.begin() as session:
                    add_rota(session)
                    add_referral(session)
                    add_prompt_for(session, "hv-jsmith", due)
                dispatcher = make_dispatcher(settings, factory, clock)
                started = time.perf_counter()
                dispatcher.start()
                figures = {"start": time.perf_counter() - started}
                time.sleep(0.5)  # its first pass (nothing due) is over
                dispatcher.shutdown()
                clock.set(due)
                for label, referral_id in (("first", None), ("warm", "HO-WARM01")):
                    if referral_id is not None:
                        with factory.begin() as session:
                            add_referral(session, referral_id=referral_id)
                            add_prompt_for(session, "hv-jsmith", due, referral_id=referral_id)
                    started = time.perf_counter()
                    stats = make_dispatcher(settings, factory, clock).run_once()
                    figures[label] = time.perf_counter() - started
                    assert stats.sent == 1, stats.summary()
                engine.dispose()
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    print(json.dumps(figures))  # seconds: start(), the first pass, a warm pass


def run(root: Path, database: str, prefix: str) -> dict[str, float]:
    result = subprocess.run(
        [
            str(root / ".venv/bin/python"),
            str(Path(__file__).resolve()),
            "--child",
            "--database",
            database,
            "--db-prefix",
            prefix,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"{root}: run failed\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-root", type=Path, help="the other checkout (with .venv)")
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--db-prefix", default="bench", help="PostgreSQL database name prefix")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.database, args.db_prefix)
        return
    if args.baseline_root is None:
        parser.error("--baseline-root is required")
    sides = {"baseline": args.baseline_root.resolve(), "this": ROOT}
    databases = ("sqlite", "postgresql") if args.database == "both" else (args.database,)
    for database in databases:
        figures: dict[str, dict[str, list[float]]] = {
            side: {"start": [], "first": [], "warm": []} for side in sides
        }
        loads = []
        for pair in range(args.pairs):
            loads.append(Path("/proc/loadavg").read_text().split()[0])
            for side, root in sides.items():
                result = run(root, database, args.db_prefix)
                for label, seconds in result.items():
                    figures[side][label].append(seconds)
            print(
                f"{database} pair {pair + 1}: load {loads[-1]}  "
                + "  ".join(
                    f"{side} start {figures[side]['start'][-1]:.3f} "
                    f"first {figures[side]['first'][-1]:.3f} "
                    f"warm {figures[side]['warm'][-1]:.3f}"
                    for side in sides
                ),
                flush=True,
            )
        print(f"{database}: load averages (1 min) {' '.join(loads)}")
        for side in sides:
            start, first, warm = (
                statistics.median(figures[side][label]) for label in ("start", "first", "warm")
            )
            print(
                f"  {side:8} medians: start() {start:.3f} s, first pass {first:.3f} s, "
                f"warm pass {warm:.3f} s"
            )


if __name__ == "__main__":
    main()

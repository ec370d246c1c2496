"""How soon a dispatcher hears of outbox rows another process commits: the wake-up latency of
`bot.delivery.wakeups.OutboxWatch` on SQLite (PRAGMA data_version, polled every 50 ms) and on
PostgreSQL (LISTEN/NOTIFY), and what the SQLite poll costs.

    python benchmarks/bench_wake.py [--rows 200] [--sqlite-only]

Each round commits one outbox row (through `outbox.enqueue_card`, as intake writes rows) on an
engine of its own, as another process would, and times how long until the watch calls back.
Prints p50/p95/max of that delay per database. PostgreSQL's database is created beside
HANDOVER_TEST_PG_URL's and dropped after.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from bot.db import create_db_engine, make_session_factory  # noqa: E402
from bot.delivery import outbox  # noqa: E402
from bot.delivery.wakeups import SQLITE_POLL_SECONDS, OutboxWatch  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import Referral  # noqa: E402
from tests.conftest import PG_URL, postgres_database  # noqa: E402

AT = datetime(2026, 12, 26, 2, 10, tzinfo=UTC)


def measure(url: str, rows: int) -> list[float]:
    """Seconds from each commit to the watch's call, one row a round."""
    upgrade(url)
    writer = create_db_engine(url)
    watcher = create_db_engine(url)
    sessions = make_session_factory(writer)
    with sessions.begin() as session:
        session.add(
            Referral(
                referral_id="HO-BENCH1",
                external_ref="BENCH-1",
                category="neglect",
                urgency="standard",
                referred_at=AT,
                received_at=AT,
                referrer_id="edt-amy",
                summary="bench",
                source="api",
                request_hash="0" * 64,
                rota_version=1,
                plan_json="{}",
            )
        )
    woken = threading.Event()
    heard_at: list[float] = []

    def on_change() -> None:
        heard_at.append(time.perf_counter())
        woken.set()

    watch = OutboxWatch(watcher, on_change)
    watch.start()
    delays = []
    try:
        if not woken.wait(10):
            raise SystemExit("the watch did not start")
        for _ in range(rows):
            time.sleep(0.02)  # let a poll go by: commits land at any point of its interval
            woken.clear()
            heard_at.clear()
            committed = time.perf_counter()
            with sessions.begin() as session:
                outbox.enqueue_card(session, "HO-BENCH1", AT, "C0EDT")
            if not woken.wait(5):
                raise SystemExit("a commit went unheard for 5 s")
            delays.append(heard_at[0] - committed)
    finally:
        watch.stop()
        writer.dispose()
        watcher.dispose()
    return delays


def report(name: str, delays: list[float]) -> None:
    ordered = sorted(delays)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    p50 = statistics.median(ordered)
    print(
        f"{name}: {len(delays)} commits; wake-up after p50 {p50 * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms, max {ordered[-1] * 1000:.1f} ms"
    )


def poll_cost(path: Path, reads: int = 20_000) -> float:
    connection = sqlite3.connect(path, isolation_level=None)
    started = time.perf_counter()
    for _ in range(reads):
        connection.execute("PRAGMA data_version").fetchone()
    elapsed = time.perf_counter() - started
    connection.close()
    return elapsed / reads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--sqlite-only", action="store_true")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.db"
        report(f"SQLite (data_version every {SQLITE_POLL_SECONDS * 1000:.0f} ms)",
               measure(f"sqlite:///{path}", args.rows))  # fmt: skip
        cost = poll_cost(path)
        share = cost / SQLITE_POLL_SECONDS * 100
        print(
            f"SQLite poll: {cost * 1e6:.1f} µs a read; {share:.3f}% of a core at "
            f"{1 / SQLITE_POLL_SECONDS:.0f} reads/s"
        )
    if not args.sqlite_only:
        name = f"{make_url(PG_URL).database}_bench_wake_{os.getpid()}"
        with postgres_database(name) as url:
            report("PostgreSQL (LISTEN/NOTIFY)", measure(url, args.rows))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""What a dispatcher's pass costs when there is nothing to do, and whether it waits for writers.

    python benchmarks/bench_idle_pass.py [--passes 2000] [--rows 5000]
        [--backend sqlite postgresql] [--writer-hold-ms 2] [--pg-database NAME]

Every pass of every dispatcher first looks for rows cancelled under the claim of a dispatcher
that died (`Reconciler.run`, docs/timing.md "Cancelled in a batch"), then claims due rows; a
running bot's passes are nearly all idle. On a database of `--rows` sent prompts (and a few
cancelled rows, one of them still under a live claim), this prints for the look alone and for
the whole idle pass (`Dispatcher.run_once`) and for a wake-up (the pass, then the read of when
to wake next, `Dispatcher._next_due`): SQL statements and transactions a call (SQLite
counts its BEGIN as a statement), the statements by verb, and the time a call (median, p99).
Then each of them while another connection keeps writing (`--writer-hold-ms` inside each
write transaction, as long again between them, as serve's clicks write under load): how long
it waits (median, p99, max). PostgreSQL's database (`--pg-database`, default
`bench_reconcile_idle`) is created beside HANDOVER_TEST_PG_URL's and dropped after; SQLite's is
a temporary file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import event, text, update

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
from bot.slack_standin import SlackStandIn  # noqa: E402

PG_DATABASE = "bench_reconcile_idle"


class Statements:
    """Statements (by verb) and transactions sent on this thread while counting."""

    def __init__(self, engine) -> None:
        self.verbs: Counter[str] = Counter()
        self.transactions = 0
        self.counting = False
        here = threading.current_thread()

        def statement(_conn, _cursor, sql: str, *_args: object) -> None:
            if self.counting and threading.current_thread() is here:
                self.verbs[verb(sql)] += 1

        def begin(*_args: object) -> None:
            if self.counting and threading.current_thread() is here:
                self.transactions += 1

        event.listen(engine, "before_cursor_execute", statement)
        event.listen(engine, "begin", begin)


def verb(sql: str) -> str:
    words = sql.split()
    if words[0].upper() == "BEGIN":
        return " ".join(words[:2]).upper()
    return f"{words[0].upper()} FOR UPDATE" if "FOR UPDATE" in sql.upper() else words[0].upper()


def settle_the_outbox(factory) -> None:
    """Every prompt sent, three cancelled and settled, one cancelled under a live claim."""
    with factory.begin() as session:
        session.execute(update(OutboxMessage).values(state=RowState.SENT, sent_at=NOW))
        ids = list(session.scalars(text("SELECT id FROM outbox ORDER BY id LIMIT 4")))
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(state=RowState.CANCELLED, sent_at=None, last_error="referral closed")
        )
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == ids[0])
            .values(claimed_by="alive", claimed_until=NOW + timedelta(days=365))
        )


def timed(work: Callable[[], object], passes: int) -> list[float]:
    """Microseconds of each of `passes` calls."""
    took = []
    for _ in range(passes):
        started = time.perf_counter()
        work()
        took.append((time.perf_counter() - started) * 1e6)
    return took


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def counted(statements: Statements, work: Callable[[], object], calls: int) -> str:
    statements.verbs.clear()
    statements.transactions = 0
    statements.counting = True
    try:
        for _ in range(calls):
            work()
    finally:
        statements.counting = False
    total = sum(statements.verbs.values())
    verbs = ", ".join(f"{name} {n / calls:g}" for name, n in sorted(statements.verbs.items()))
    transactions = statements.transactions / calls
    return f"{total / calls:.2f} statements, {transactions:.2f} transactions ({verbs})"


def writing(url: str, hold_ms: float, stop: threading.Event) -> threading.Thread:
    """Another connection writing in a loop: `hold_ms` in each transaction, as long between."""
    engine = create_db_engine(url)
    factory = make_session_factory(engine)

    def run() -> None:
        while not stop.is_set():
            with factory.begin() as session:
                session.execute(text("UPDATE rota_versions SET summary = '{}' WHERE version = 1"))
                time.sleep(hold_ms / 1000)
            time.sleep(hold_ms / 1000)
        engine.dispose()

    thread = threading.Thread(target=run, name="writer", daemon=True)
    thread.start()
    return thread


def measure(backend: str, url: str, args: argparse.Namespace, slack: SlackStandIn) -> None:
    seed(url, args.rows)
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    settle_the_outbox(factory)
    settings = Settings(database_url=url, slack_bot_token=TOKEN, slack_api_url=slack.url)
    dispatcher = Dispatcher(settings, factory, make_web_client(settings), FixedClock(NOW), "bench")
    statements = Statements(engine)
    look, idle_pass = dispatcher.reconciler.run, dispatcher.run_once

    def woken() -> None:
        """What a wake-up costs: the pass, then the read of when to wake next."""
        idle_pass()
        dispatcher._next_due()

    assert look() == [] and idle_pass().results == []  # nothing to do, indeed
    works = (("the look", look), ("the pass", idle_pass), ("the wake-up", woken))
    for _, work in works:
        timed(work, 50)  # warm
    for name, work in works:
        print(f"{backend}: {name}  {counted(statements, work, 100)}")
    for name, work in works:
        took = timed(work, args.passes)
        print(
            f"{backend}: {name}  median {statistics.median(took):.0f} us, "
            f"p99 {p99(took):.0f} us ({args.passes} calls)"
        )
    for name, work in works:
        stop = threading.Event()
        writer = writing(url, args.writer_hold_ms, stop)
        time.sleep(0.05)
        took = timed(work, args.passes)
        stop.set()
        writer.join()
        print(
            f"{backend}: {name} beside a writer ({args.writer_hold_ms:g} ms in, as long out)  "
            f"median {statistics.median(took):.0f} us, p99 {p99(took):.0f} us, "
            f"max {max(took):.0f} us"
        )
    dispatcher.shutdown()
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--writer-hold-ms", type=float, default=2.0)
    parser.add_argument("--pg-database", default=PG_DATABASE)
    parser.add_argument(
        "--backend", nargs="+", default=["sqlite", "postgresql"], choices=["sqlite", "postgresql"]
    )
    args = parser.parse_args()
    with SlackStandIn(users=[], rate_limit=None) as slack:
        for backend in args.backend:
            if backend == "sqlite":
                with tempfile.TemporaryDirectory() as folder:
                    url = f"sqlite:///{Path(folder) / 'idle.db'}"
                    upgrade(url)
                    measure(backend, url, args, slack)
            else:
                url = fresh_database(args.pg_database)
                try:
                    measure(backend, url, args, slack)
                finally:
                    drop_database(args.pg_database)


if __name__ == "__main__":
    main()

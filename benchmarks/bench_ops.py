"""What `GET /metrics` and `handover report --html` cost as the log grows: a scrape's snapshot
(four grouped, indexed queries) and the report page (computed, then rendered), at several sizes
of audit log and outbox, on the sample rota.

    python benchmarks/bench_ops.py [--sizes 10000 100000] [--postgresql] [--metrics-only]
        [--baseline DIR]

Each referral has three targets and about 13 audit rows (received; per target held, sent, then
answered or reminded, escalated and breached) and 8 outbox rows, over 8 weeks. The rows are
written in bulk (the audit rows outside the hash chain: neither figure reads it). A scrape is
timed 5 times (median); the page once, in this process (its wall and CPU time, and its size).
Per-row figures show whether the cost grows linearly. With `--baseline DIR` (another checkout,
with its .venv: `--baseline /work/main`), `handover report --html FILE` is then run as a
process by this checkout's code and by that one's, on the same database, one after the other:
wall, CPU, peak RSS, page size and the CPU ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_reports import timed  # noqa: E402
from sqlalchemy import func, insert, select  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bot.db import BATCH_TIMEOUTS, create_db_engine, make_session_factory  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.models import AuditEvent, OutboxMessage, Referral  # noqa: E402
from bot.pages import render_report  # noqa: E402
from bot.services.logbook import LogWindow  # noqa: E402
from bot.services.metrics import read_snapshot  # noqa: E402
from bot.services.report_page import build_report_page  # noqa: E402

START = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)  # a Monday
TZ = ZoneInfo("Europe/London")
TARGETS = (
    ("person:hv-jsmith", "hv-kpatel"),
    ("team:gp-northgate", "gp-drjones"),
    ("role:police_dau", "pol-pc-ahmed"),
)
ROWS_PER_REFERRAL = 13
MS = timedelta(milliseconds=1)
# The command's window, holding every row written (its default ends now).
WHOLE_LOG = ("--since", "2026-11-01", "--until", "2027-01-31")


@contextmanager
def database(postgresql: bool, size: int) -> Iterator[str]:
    if postgresql:
        from tests.conftest import PG_URL, postgres_database

        name = f"{make_url(PG_URL).database}_bench_ops_{os.getpid()}_{size}"
        with postgres_database(name) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="bench-ops-") as tmp:
        yield f"sqlite:///{tmp}/handover.db"


def fill(url: str, audit_rows: int) -> int:
    """Write about `audit_rows` audit rows and their referrals and outbox; return referrals."""
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(
        [sys.executable, "-m", "bot", "rota", "import", str(ROOT / "rota" / "sample")],
        env=env,
        check=True,
        capture_output=True,
    )
    referrals = max(1, audit_rows // ROWS_PER_REFERRAL)
    spread = timedelta(weeks=8) / referrals
    engine = create_db_engine(url, timeouts=BATCH_TIMEOUTS)
    factory = make_session_factory(engine)
    batch = 2000
    with factory() as session:  # audit ids are the chain's, not a sequence: carry on from its last
        next_id = (session.scalar(select(func.max(AuditEvent.id))) or 0) + 1
    for first in range(0, referrals, batch):
        refs, events, rows = [], [], []
        for n in range(first, min(referrals, first + batch)):
            rid = f"HO-B{n:08d}"
            at = START + spread * n
            refs.append(
                {
                    "referral_id": rid,
                    "external_ref": f"BENCH-{n}",
                    "category": "neglect",
                    "urgency": "standard",
                    "referred_at": at,
                    "received_at": at,
                    "referrer_id": "edt-amy",
                    "summary": "",
                    "source": "api",
                    "request_hash": "0" * 64,
                    "rota_version": 1,
                    "plan_json": "{}",
                }
            )
            events.append(("referral_received", at, rid, "edt-amy", None, None))
            for t, (target, recipient) in enumerate(TARGETS):
                sent = at + timedelta(hours=7)
                events.append(("prompt_scheduled", at, rid, None, recipient, target))
                events.append(("prompt_sent", sent, rid, "dispatcher", recipient, target))
                rows.append(("prompt", "sent", sent - timedelta(seconds=n % 40), sent, rid))
                if (n + t) % 3:
                    answer = sent + timedelta(minutes=20 + n % 90)
                    events.append(("acknowledged", answer, rid, recipient, recipient, target))
                else:
                    for hours, event in ((1, "reminder_sent"), (2, "escalated"), (8, "breach")):
                        step = sent + timedelta(hours=hours)
                        events.append((event, step, rid, "dispatcher", recipient, target))
                        rows.append(("step_message", "sent", step, step, rid))
            rows.append(("card", "sent", at, at, rid))
            rows.append(("prompt", "pending", at + timedelta(weeks=9), None, rid))
        with factory.begin() as session:
            session.execute(insert(Referral), refs)
            session.execute(
                insert(AuditEvent),
                [
                    {
                        "id": next_id + i,
                        "at": at,
                        "referral_id": rid,
                        "event": event,
                        "actor": actor,
                        "recipient": recipient,
                        "target": target,
                        "detail": None,
                        "rota_version": 1,
                        "prev_id": None,
                        "prev_hash": "0" * 64,
                        "row_hash": "0" * 64,
                    }
                    for i, (event, at, rid, actor, recipient, target) in enumerate(events)
                ],
            )
            next_id += len(events)
            session.execute(
                insert(OutboxMessage),
                [
                    {
                        "referral_id": rid,
                        "kind": kind,
                        "state": state,
                        "channel": "slack",
                        "due_at": due,
                        "sent_at": sent,
                        "lateness_ms": None if sent is None else (sent - due) // MS,
                        "attempts": 1,
                        "late": False,
                    }
                    for kind, state, due, sent, rid in rows
                ],
            )
    engine.dispose()
    return referrals


def page_processes(url: str, events: int, baseline: Path) -> None:
    """`handover report --html FILE` as a process, by this checkout's code, then the baseline's."""
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-ops-page-") as tmp:
        for who, checkout in (("this", None), ("baseline", baseline)):
            page = Path(tmp) / f"{who}.html"
            command = ("report", *WHOLE_LOG, "--html", str(page))
            seconds, cpu, rss = timed(url, *command, checkout=checkout)
            runs.append(cpu)
            print(
                f"{events:>9,} audit rows: report --html ({who:<8}) {seconds:6.1f} s "
                f"(CPU {cpu:6.1f} s, {cpu / events * 1e6:5.1f} us/row), peak RSS {rss:4.0f} MB, "
                f"{page.stat().st_size / 1e6:5.1f} MB  load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    print(f"{events:>9,} audit rows: report --html CPU {runs[0] / runs[1]:.2f}x the baseline's")


def measure(url: str, size: int, *, page_too: bool = True, baseline: Path | None = None) -> None:
    referrals = fill(url, size)
    engine = create_db_engine(url, timeouts=BATCH_TIMEOUTS)
    factory = make_session_factory(engine)
    now = START + timedelta(weeks=8)
    with factory() as session:
        events = sum(read_snapshot(session, now).events.values())
        scrapes = []
        for _ in range(5):
            started = time.perf_counter()
            read_snapshot(session, now)
            scrapes.append(time.perf_counter() - started)
        if not page_too:
            scrape = statistics.median(scrapes)
            print(f"{events:>9,} audit rows ({referrals:,} referrals): /metrics "
                  f"{scrape * 1000:7.1f} ms", flush=True)  # fmt: skip
            return
        started, cpu_started = time.perf_counter(), time.process_time()
        page = build_report_page(session, LogWindow(), TZ, now)
        computed = time.perf_counter() - started
        computed_cpu = time.process_time() - cpu_started
    started, cpu_started = time.perf_counter(), time.process_time()
    html = render_report(page, window_label="Handover report (benchmark)")
    rendered = time.perf_counter() - started
    rendered_cpu = time.process_time() - cpu_started
    engine.dispose()
    scrape = statistics.median(scrapes)
    print(
        f"{events:>9,} audit rows ({referrals:,} referrals): /metrics {scrape * 1000:7.1f} ms; "
        f"page computed {computed:6.1f} s (CPU {computed_cpu:5.1f} s, "
        f"{computed_cpu / events * 1e6:5.1f} us/row), rendered {rendered:5.1f} s "
        f"(CPU {rendered_cpu:5.1f} s, {rendered_cpu / events * 1e6:5.1f} us/row), "
        f"{len(html) / 1e6:6.1f} MB, {len(page.timelines):,} timelines  "
        f"load average {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    if baseline:
        page_processes(url, events, baseline)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--postgresql", action="store_true")
    parser.add_argument("--metrics-only", action="store_true", help="time /metrics, not the page")
    parser.add_argument(
        "--baseline", type=Path, help="a checkout (with its .venv) that also runs report --html"
    )
    args = parser.parse_args()
    print(f"{'PostgreSQL' if args.postgresql else 'SQLite'}, load average {os.getloadavg()[0]:.1f}")
    for size in args.sizes:
        with database(args.postgresql, size) as url:
            upgrade(url)
            measure(url, size, page_too=not args.metrics_only, baseline=args.baseline)


if __name__ == "__main__":
    main()

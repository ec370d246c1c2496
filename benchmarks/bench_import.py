"""`handover rota import` of a large rota against the raw bulk-load bound, side by side.

    python benchmarks/gen_rota.py --people 20000 --shifts 1000000 --out /tmp/big-rota
    python benchmarks/bench_import.py /tmp/big-rota
    python benchmarks/bench_import.py /tmp/big-rota \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

For each database (SQLite, and PostgreSQL with --database-url) it runs, each as a process of
its own into a fresh migrated database, and prints wall time and peak RSS:

- raw: the lower bound. The same files loaded into the same tables with no checks at all:
  the CSV read and times converted to UTC in Python, then PostgreSQL COPY or SQLite
  executemany, in one transaction.
- import: `handover rota import FOLDER`, every check included (and the audit event and the
  cover check that follow it).
- again: the same command on the same files, which finds nothing changed.

The ratio is import (or again) time over raw time. The machine may be shared: with
--repeat N the three run N times, interleaved, and each figure is the best of its N runs
(the least disturbed), as `timeit` reports.
"""

from __future__ import annotations

import argparse
import csv
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bot.migrate import upgrade  # noqa: E402

TZ = ZoneInfo("Europe/London")
CLOCK = "2026-11-26T12:00:00+00:00"


@contextmanager
def scratch_database(server_url: str | None, name: str) -> Iterator[str]:
    """A migrated, empty database that is removed afterwards."""
    if server_url is None:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/{name}.db"
            upgrade(url)
            yield url
        return
    base = make_url(server_url)
    database = f"handover_bench_{name}_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    try:
        url = base.set(database=database).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


# --- the raw bound: no checks, straight into the tables ----------------------------------------


@lru_cache(maxsize=1 << 16)
def utc_text(local: str) -> str:
    """A local date-time of the files as the stored naive UTC text."""
    wall = datetime.fromisoformat(local).replace(tzinfo=TZ, fold=0)
    return wall.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def _none(value: str) -> str | None:
    return value or None


def raw_rows(folder: Path) -> Iterator[tuple[str, tuple[str, ...], Iterator[tuple]]]:
    """(table, columns, rows) for every file, the values as the tables hold them."""

    def read(kind: str) -> Iterator[list[str]]:
        with open(folder / f"{kind}.csv", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            yield from reader

    yield (
        "teams",
        ("team_id", "name", "agency", "agency_type", "region", "hours", "manager_id", "channel",
         "active"),
        ((t, n, a, at, r, _none(h), _none(m), _none(c), True)
         for t, n, a, at, r, h, m, c in read("teams")),
    )  # fmt: skip
    yield (
        "people",
        ("person_id", "name", "slack_user", "email", "team_id", "role", "hours", "deputy_id",
         "permissions", "active"),
        ((p, n, _none(s), _none(e), t, r, _none(h), _none(d), perm, True)
         for p, n, s, e, t, r, h, d, perm in read("people")),
    )  # fmt: skip
    yield (
        "shifts",
        ("person_id", "role", "start_at", "end_at"),
        ((p, r, utc_text(s), utc_text(e)) for p, r, s, e in read("shifts")),
    )
    yield (
        "absences",
        ("person_id", "start_date", "end_date", "reason"),
        ((p, s, e, r) for p, s, e, r in read("absences")),
    )
    yield (
        "closures",
        ("date", "applies_to", "from_time", "to_time", "reason"),
        ((d, a, _none(f), _none(t), r) for d, a, f, t, r in read("closures")),
    )


def raw_load(folder: Path, url: str) -> None:
    """Load the files into the database with COPY or executemany, checking nothing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        conn = sqlite3.connect(parsed.database, isolation_level=None)
        # As the application's connections are set up (bot/db.py).
        for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
            conn.execute(f"PRAGMA {pragma}")
        conn.execute("BEGIN IMMEDIATE")
        for table, columns, rows in raw_rows(folder):
            marks = ", ".join("?" for _ in columns)
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
        conn.execute("COMMIT")
        conn.close()
        return
    import psycopg

    dsn = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        for table, columns, rows in raw_rows(folder):
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)


# --- measuring processes -----------------------------------------------------------------------


def run_measured(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run a process and return (wall seconds, peak RSS in MB, last line of its stdout)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=err, text=True)
        _pid, status, usage = os.wait4(process.pid, 0)
        elapsed = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n{err.read()}")
        last = (out.read().strip().splitlines() or [""])[-1]
    return elapsed, usage.ru_maxrss / 1024, last


def bench(folder: Path, server_url: str | None, label: str, repeat: int) -> list[str]:
    """Raw, import and again on one database, best of `repeat`; printed lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.NamedTemporaryFile("w", suffix=".clock", delete=False) as clock:
        clock.write(CLOCK + "\n")
    env["HANDOVER_CLOCK_FILE"] = clock.name
    runs: dict[str, list[tuple[float, float, str]]] = {"raw": [], "import": [], "again": []}
    try:
        for _ in range(repeat):
            with scratch_database(server_url, "raw") as url:
                runs["raw"].append(
                    run_measured([sys.executable, __file__, str(folder), "--raw-load", url], env)
                )
            with scratch_database(server_url, "import") as url:
                command = [sys.executable, "-m", "bot", "rota", "import", str(folder)]
                runs["import"].append(run_measured(command, {**env, "DATABASE_URL": url}))
                runs["again"].append(run_measured(command, {**env, "DATABASE_URL": url}))
    finally:
        os.unlink(clock.name)
    best = {what: min(found) for what, found in runs.items()}
    lines = []
    for what, (seconds, _rss, last) in best.items():
        ratio = f"{seconds / best['raw'][0]:5.2f}x" if what != "raw" else "     -"
        rss = max(r for _s, r, _l in runs[what])
        all_runs = " ".join(f"{s:.1f}" for s, _r, _l in runs[what])
        lines.append(
            f"{label:10} {what:7} {seconds:7.1f} s  ratio {ratio}  peak RSS {rss:6.0f} MB  "
            f"(runs: {all_runs} s)  {last}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Command line of the benchmark."""
    parser = argparse.ArgumentParser(description="time importing a large rota")
    parser.add_argument("folder", type=Path, help="a folder written by gen_rota.py")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; a scratch database is created beside it (default: "
        "SQLite only)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N", help="runs of each; the best is shown"
    )
    parser.add_argument("--raw-load", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_load:
        raw_load(args.folder, args.raw_load)
        print("raw load done")
        return 0
    rows = sum(
        (args.folder / f"{kind}.csv").read_bytes().count(b"\n") - 1
        for kind in ("teams", "people", "shifts", "absences", "closures")
    )
    print(f"{rows:,} rota rows from {args.folder}, on {os.cpu_count()} cores")
    for line in bench(args.folder, None, "sqlite", args.repeat):
        print(line, flush=True)
    if args.database_url:
        for line in bench(args.folder, args.database_url, "postgresql", args.repeat):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

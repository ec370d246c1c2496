"""Time `handover rota import` on a large synthetic rota: validation and apply separately.

    python benchmarks/gen_rota.py --people 20000 --shifts 1000000 --out /tmp/big-rota
    python benchmarks/bench_import.py /tmp/big-rota
    python benchmarks/bench_import.py /tmp/big-rota \
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres

Each run imports into a scratch database (a temporary SQLite file, or a database created
next to the one named by --database-url and dropped afterwards), then imports the same files
again to time the no-change path.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.db import BATCH_TIMEOUTS, create_db_engine, make_session_factory
from bot.migrate import upgrade
from rota.importer import apply_rota, load_known_ids, read_rota_files

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@contextmanager
def scratch_database(server_url: str | None) -> Iterator[str]:
    """A migrated, empty database that is removed afterwards."""
    if server_url is None:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            upgrade(url)
            yield url
        return
    base = make_url(server_url)
    name = f"handover_bench_{os.getpid()}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = base.set(database=name).render_as_string(hide_password=False)
        upgrade(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(folder: Path, url: str, label: str) -> None:
    """Import the folder twice into `url`, printing timings and rates."""
    tz = ZoneInfo("Europe/London")
    engine = create_db_engine(url, timeouts=BATCH_TIMEOUTS)
    factory = make_session_factory(engine)
    for attempt in ("first import", "same files again"):
        with factory() as session:
            known = load_known_ids(session)
        started = time.perf_counter()
        batch = read_rota_files([folder], tz, known=known)
        validated = time.perf_counter()
        with factory.begin() as session:
            result = apply_rota(session, batch, NOW)
        applied = time.perf_counter()
        rows = batch.row_count()
        validation, apply = validated - started, applied - validated
        print(
            f"{label:10} {attempt:16} rows={rows:>9,} "
            f"validate={validation:6.1f}s ({rows / validation:>9,.0f} rows/s) "
            f"apply={apply:6.1f}s ({rows / apply:>9,.0f} rows/s) "
            f"total={validation + apply:6.1f}s version={result.version} changed={result.changed}"
        )
        del batch, result  # the next round starts from the same memory as the CLI would
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Command line of the benchmark."""
    parser = argparse.ArgumentParser(description="time importing a large rota")
    parser.add_argument("folder", type=Path, help="a folder written by gen_rota.py")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server URL; a scratch database is created beside it (default: "
        "SQLite only)",
    )
    args = parser.parse_args(argv)
    with scratch_database(None) as url:
        run(args.folder, url, "sqlite")
    if args.database_url:
        with scratch_database(args.database_url) as url:
            run(args.folder, url, "postgresql")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

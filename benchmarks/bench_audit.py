"""The cost of the audit log's hash chain on PostgreSQL: rows written per second (one
transaction each, as the dispatcher and the handlers write them) by 1 and 4 concurrent writers,
all queuing on the one chain head; and how fast `handover log verify` walks the chain.

    python benchmarks/bench_audit.py [--rows 2000] [--verify-rows 100000]

The database is created beside HANDOVER_TEST_PG_URL's and dropped after.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy.engine import make_url  # noqa: E402

from bot.db import create_db_engine, make_session_factory  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.services import audit  # noqa: E402
from tests.conftest import PG_URL, postgres_database  # noqa: E402

AT = datetime(2026, 12, 26, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--verify-rows", type=int, default=100_000)
    args = parser.parse_args()
    with postgres_database(f"{make_url(PG_URL).database}_bench_audit_{os.getpid()}") as url:
        upgrade(url)
        engine = create_db_engine(url, pool_size=8)
        factory = make_session_factory(engine)

        def write(count: int) -> None:
            for i in range(count):
                with factory.begin() as session:
                    audit.record(session, "prompt_sent", at=AT, actor="bench", detail={"i": i})

        for writers in (1, 4):
            started = time.perf_counter()
            threads = [
                threading.Thread(target=write, args=(args.rows // writers,)) for _ in range(writers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rate = args.rows / (time.perf_counter() - started)
            print(f"{writers} writer(s): {rate:.0f} audit rows/s, one transaction each")

        with factory.begin() as session:  # the rest in bulk, to have a long chain to verify
            for i in range(args.verify_rows - 2 * args.rows):
                audit.record(session, "prompt_sent", at=AT + timedelta(seconds=i), actor="bench")
        with factory() as session:
            started = time.perf_counter()
            check = audit.verify_chain(session)
            elapsed = time.perf_counter() - started
        rate = check.rows / elapsed
        print(f"log verify: {check.rows} rows in {elapsed:.1f} s ({rate:.0f} rows/s), intact: "
              f"{check.intact}")  # fmt: skip
        engine.dispose()


if __name__ == "__main__":
    main()

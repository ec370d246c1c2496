"""Planning a referral of 10 targets, SQLite and PostgreSQL side by side, at three rota sizes.

    python benchmarks/bench_plan.py [--database-url URL ...] [--plans 300] [--sizes 10k,100k,1m]

The goal (issue 13): a median of at most 5 ms a plan at 20,000 people and 1,000,000 shifts on
both databases. The growth table plans the same way at 1x, 10x and 100x the work:

    10k   2,000 people,    10,000 shifts
    100k  20,000 people,  100,000 shifts
    1m    20,000 people, 1,000,000 shifts

`--database-url` may be given once per database (default: a SQLite file in /tmp and the
`handover_bench` database of the local PostgreSQL server). Each size gets a database of its own,
named from the URL with the size as a suffix (`/tmp/handover-bench-1m.db`, `handover_bench_1m`),
built once and reused while its marker row says it holds that size (`--rebuild` forces it).
A PostgreSQL database is vacuumed and analysed after it is built, as autovacuum would.

Each row plans the same referrals (10 random targets at a random instant, seeded) on every
database, the databases taking turns plan by plan so that both meet the same load, each plan in
a session of its own, committed as the bot's units of work are, and timed from inside its open
transaction (as intake plans inside its own): the connection checkout (PostgreSQL's pool
pings) and BEGIN belong to the unit of work, not to planning. After 10 warm-up plans it
prints the median and p95 milliseconds a plan, the CPU time of this process a plan (on a busy
machine the wall clock also counts waiting for a core) and the SQL statements a plan, and
checks that every database made the same plans.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import sys
import time as clock
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, create_engine, delete, event, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.db import create_db_engine
from bot.migrate import upgrade
from rota.models import REGIONS, Absence, Closure, Person, RotaVersion, Shift, Team
from rota.planner import plan_referral
from rota.store import RotaStore

DEFAULT_URLS = (
    "sqlite:////tmp/handover-bench.db",
    "postgresql+psycopg://postgres@127.0.0.1:5432/handover_bench",
)
SIZES = {"10k": (2_000, 10_000), "100k": (20_000, 100_000), "1m": (20_000, 1_000_000)}
GOAL_SIZE, GOAL_MS = "1m", 5.0
WARM_UP = 10
CELLS = len(" median     p95     cpu  stmts")
PEOPLE_PER_TEAM = 40
MARKER_VERSION = 424242
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 730
ROLES = ("police_dau", "paediatrician", "edt_manager", "edt_worker", "hospital_safeguarding")
ALERT_ROLES = ("edt_manager",)
HOURS = (None, None, None, "Mon-Wed 09:00-17:00", "Mon-Thu 08:30-16:30; Fri 08:30-16:00", "none")
LONDON = ZoneInfo("Europe/London")
BATCH = 20_000


def build(engine: Engine, people: int, shifts: int, seed: int = 1) -> None:
    """Fill a migrated database with a synthetic rota of this size (core executemany inserts)."""
    rng = random.Random(seed)
    team_count = people // PEOPLE_PER_TEAM
    with engine.begin() as conn:
        for model in (Shift, Absence, Closure, Person, Team, RotaVersion):
            conn.execute(delete(model))
        teams = [
            {
                "team_id": f"team-{t:04d}",
                "name": f"Team {t}",
                "agency": "Bench",
                "agency_type": "health",
                "region": REGIONS[t % len(REGIONS)],
                "hours": None if t % 5 else "none",
                "manager_id": f"p-{t * PEOPLE_PER_TEAM:05d}",
                "channel": f"C{t:06d}" if t % 2 else None,
                "active": True,
            }
            for t in range(team_count)
        ]
        conn.execute(insert(Team), teams)
        rows = [
            {
                "person_id": f"p-{p:05d}",
                "name": f"Person {p}",
                "slack_user": f"U{p:08d}",
                "slack_user_found": None,
                "email": f"p{p}@example.org",
                "team_id": f"team-{p // PEOPLE_PER_TEAM:04d}",
                "role": "professional",
                "hours": rng.choice(HOURS),
                "deputy_id": f"p-{rng.randrange(people):05d}" if rng.random() < 0.5 else None,
                "permissions": "",
                "active": rng.random() > 0.02,
            }
            for p in range(people)
        ]
        for i in range(0, len(rows), BATCH):
            conn.execute(insert(Person), rows[i : i + BATCH])
        rows = []
        for n in range(shifts):
            person = rng.randrange(people)
            kind = rng.random()
            if kind < 0.4:
                role = f"duty:team-{person // PEOPLE_PER_TEAM:04d}"
            elif kind < 0.6:
                role = rng.choice(ROLES)
            else:
                role = "clinic"
            start = START + timedelta(minutes=30 * rng.randrange(DAYS * 48))
            rows.append(
                {
                    "person_id": f"p-{person:05d}",
                    "role": role,
                    "start_at": start,
                    "end_at": start + timedelta(hours=rng.choice((4, 8, 12, 16))),
                }
            )
            if len(rows) == BATCH:
                conn.execute(insert(Shift), rows)
                rows = []
                print(f"  {n + 1:,} shifts", end="\r", flush=True)
        if rows:
            conn.execute(insert(Shift), rows)
        absences = []
        for _ in range(people // 4):
            first = START.date() + timedelta(days=rng.randrange(DAYS))
            absences.append(
                {
                    "person_id": f"p-{rng.randrange(people):05d}",
                    "start_date": first,
                    "end_date": first + timedelta(days=rng.randrange(14)),
                    "reason": "leave",
                }
            )
        conn.execute(insert(Absence), absences)
        closures = [
            {
                "date": START.date() + timedelta(days=rng.randrange(DAYS)),
                "applies_to": rng.choice(["all", *REGIONS, *(t["team_id"] for t in teams)]),
                "from_time": None,
                "to_time": None,
                "reason": "closed",
            }
            for _ in range(people // 10)
        ]
        conn.execute(insert(Closure), closures)
        conn.execute(
            insert(RotaVersion),
            [
                {
                    "version": MARKER_VERSION,
                    "imported_at": datetime.now(UTC),
                    "files": "bench",
                    "summary": _marker(people, shifts),
                }
            ],
        )
    print(" " * 40, end="\r")
    if engine.dialect.name == "postgresql":
        # Statistics and the visibility map, as autovacuum would leave them in service.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))


def _marker(people: int, shifts: int) -> str:
    return json.dumps({"people": people, "shifts": shifts})


def is_built(engine: Engine, people: int, shifts: int) -> bool:
    with Session(engine) as session:
        marker = session.get(RotaVersion, MARKER_VERSION)
        return marker is not None and marker.summary == _marker(people, shifts)


def sized_url(url: str, size: str) -> str:
    """The URL of the database of one size: the file or database name with a suffix."""
    parsed = make_url(url)
    name = parsed.database or ""
    if parsed.get_backend_name() == "sqlite":
        path = Path(name)
        parsed = parsed.set(database=str(path.with_name(f"{path.stem}-{size}{path.suffix}")))
    else:
        parsed = parsed.set(database=f"{name}_{size}")
    return parsed.render_as_string(hide_password=False)


def ensure_database(url: str) -> None:
    """Create a PostgreSQL database that does not exist yet (SQLite creates its file)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": parsed.database}
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    finally:
        admin.dispose()


def referrals(rng: random.Random, active: list[str], teams: int, count: int) -> list[tuple]:
    """`count` referrals: 10 targets (6 people, 2.5 teams, 1.5 roles on average) and t0."""
    result = []
    for _ in range(count):
        targets = []
        for _ in range(10):
            kind = rng.random()
            if kind < 0.6:
                targets.append(f"person:{rng.choice(active)}")
            elif kind < 0.85:
                targets.append(f"team:team-{rng.randrange(teams):04d}")
            else:
                targets.append(f"role:{rng.choice(ROLES)}")
        t0 = START + timedelta(days=30, minutes=rng.randrange((DAYS - 60) * 24 * 60))
        result.append((targets, t0))
    return result


@dataclass
class Row:
    """The figures of one database at one size."""

    median: float
    p95: float
    cpu: float  # median CPU time of this process (the client), ms a plan
    statements: float
    digest: str
    entries: str

    def cells(self) -> str:
        return f"{self.median:7.2f} {self.p95:7.2f} {self.cpu:7.2f} {self.statements:6.0f}"


def prepared(url: str, size: str, rebuild: bool) -> Engine:
    """An engine on the database of this size, built first if it does not hold that size."""
    people, shifts = SIZES[size]
    ensure_database(url)
    upgrade(url)
    engine = create_db_engine(url)
    if rebuild or not is_built(engine, people, shifts):
        began = clock.perf_counter()
        print(f"building {people:,} people and {shifts:,} shifts in {_label(url)} ...")
        build(engine, people, shifts)
        print(f"built in {clock.perf_counter() - began:.0f} s")
    return engine


@dataclass
class _Tally:
    """What one database measured, plan after plan."""

    timings: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    routed: int = 0
    immediate: int = 0
    unroutable: int = 0

    def row(self) -> Row:
        timings = sorted(self.timings)
        return Row(
            median=statistics.median(timings),
            p95=timings[min(len(timings) - 1, int(len(timings) * 0.95))],
            cpu=statistics.median(self.cpu),
            statements=statistics.median(self.counts),
            digest=self.digest.hexdigest()[:12],
            entries=f"{self.routed} routed ({self.immediate} at once), "
            f"{self.unroutable} unroutable",
        )


def time_plans(engines: list[Engine], people: int, plans: int, seed: int) -> list[Row]:
    """Plan the same referrals on every database, taking turns, so all meet the same load."""
    statements = 0

    def count(*_args: object) -> None:
        nonlocal statements
        statements += 1

    with Session(engines[0]) as session:
        # Sorted, so every database plans the same referrals.
        active = sorted(session.scalars(select(Person.person_id).where(Person.active.is_(True))))
    work = referrals(random.Random(seed), active, people // PEOPLE_PER_TEAM, WARM_UP + plans)
    tallies = [_Tally() for _ in engines]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    for n, (targets, t0) in enumerate(work):
        for engine, tally in zip(engines, tallies, strict=True):
            # Each plan in a unit of work of its own, committed as the bot's are. The clock
            # starts inside it, as a plan runs inside intake's: checking out a connection
            # (with its ping) and BEGIN are the unit of work's, not the plan's.
            with Session(engine) as session, session.begin():
                session.connection()
                statements = 0
                began, began_cpu = clock.perf_counter(), clock.process_time()
                plan = plan_referral(
                    RotaStore(session), targets, t0, alert_roles=ALERT_ROLES, tz=LONDON
                )
                elapsed = (clock.perf_counter() - began) * 1000
                elapsed_cpu = (clock.process_time() - began_cpu) * 1000
            tally.digest.update(json.dumps(plan.to_json(LONDON), sort_keys=True).encode())
            if n < WARM_UP:
                continue  # connection pool, statement caches
            tally.timings.append(elapsed)
            tally.cpu.append(elapsed_cpu)
            tally.counts.append(statements)
            for entry in plan.entries:
                tally.routed += entry.via != "unroutable"
                tally.unroutable += entry.via == "unroutable"
                tally.immediate += entry.immediate
    return [tally.row() for tally in tallies]


def _label(url: str) -> str:
    parsed = make_url(url)
    return parsed.get_backend_name() + ":" + (parsed.database or "")


def _reachable(url: str, size: str, rebuild: bool) -> Engine | str:
    try:
        return prepared(url, size, rebuild)
    except OperationalError as exc:
        return f"unreachable ({str(exc.orig).splitlines()[0][:60]})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", action="append", dest="urls", metavar="URL")
    parser.add_argument("--plans", type=int, default=300)
    parser.add_argument("--sizes", default=",".join(SIZES), help="e.g. 1m, or 10k,100k,1m")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args()
    urls = args.urls or list(DEFAULT_URLS)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)} (use {', '.join(SIZES)})")
    names = [make_url(url).get_backend_name() for url in urls]

    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    results: dict[tuple[str, str], Row | str] = {}
    for size in sizes:
        engines = {url: _reachable(sized_url(url, size), size, args.rebuild) for url in urls}
        usable = [url for url in urls if isinstance(engines[url], Engine)]
        results |= {(size, url): engines[url] for url in urls if url not in usable}
        if usable:
            ready = [engines[url] for url in usable]
            rows = time_plans(ready, SIZES[size][0], args.plans, args.seed)
            results |= {(size, url): row for url, row in zip(usable, rows, strict=True)}
            for engine in ready:
                engine.dispose()

    print()
    loads = f"{load} at the start, " + " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"machine: {os.cpu_count()} CPUs, load average {loads} at the end")
    print(f"planning a referral of 10 targets; {args.plans} plans a row after {WARM_UP} warm-up,")
    print("the databases taking turns plan by plan")
    print("ms a plan, timed inside an open transaction: wall clock, and cpu = this process")
    print("only (SQLite's work included, PostgreSQL's server not); SQL statements a plan")
    print()
    header = "rota".ljust(34) + "".join(f"| {n:<{CELLS}} " for n in names)
    print(header)
    print(" " * 34 + "| median     p95     cpu  stmts " * len(names))
    print("-" * len(header))
    for size in sizes:
        people, shifts = SIZES[size]
        line = f"{people:>7,} people, {shifts:>9,} shifts".ljust(34)
        for url in urls:
            row = results[size, url]
            cells = row.cells() if isinstance(row, Row) else row[:CELLS].ljust(CELLS)
            line += f"| {cells} "
        print(line)

    if GOAL_SIZE in sizes:
        people, shifts = SIZES[GOAL_SIZE]
        print()
        print(f"goal: median <= {GOAL_MS:g} ms at {people:,} people and {shifts:,} shifts")
        for name, url in zip(names, urls, strict=True):
            row = results[GOAL_SIZE, url]
            if isinstance(row, Row):
                ratio = row.median / GOAL_MS
                verdict = "met" if ratio <= 1 else "NOT met"
                figure = f"median {row.median:6.2f} ms = {ratio:.2f} x the goal"
                print(f"  {name:<11} {figure}: {verdict}")
            else:
                print(f"  {name:<11} {row}")
    first, last = sizes[0], sizes[-1]
    if first != last:
        work = SIZES[last][1] / SIZES[first][1]
        print()
        print(f"growth from {SIZES[first][1]:,} to {SIZES[last][1]:,} shifts ({work:g} x the work)")
        for name, url in zip(names, urls, strict=True):
            a, b = results[first, url], results[last, url]
            if isinstance(a, Row) and isinstance(b, Row):
                growth = f"median x {b.median / a.median:.2f}, cpu x {b.cpu / a.cpu:.2f}"
                print(f"  {name:<11} {growth}, statements {a.statements:g} -> {b.statements:g}")
    print()
    for size in sizes:
        rows = [results[size, url] for url in urls]
        done = [row for row in rows if isinstance(row, Row)]
        if len(done) > 1:
            same = len({row.digest for row in done}) == 1
            verdict = "yes" if same else "NO"
            print(f"{size}: plans identical on every database: {verdict} ({done[0].entries})")


if __name__ == "__main__":
    main()

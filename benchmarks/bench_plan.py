"""Benchmark of `plan_referral` on a large rota: 20,000 people and 1,000,000 shifts.

    PYTHONPATH=. python benchmarks/bench_plan.py [--database-url URL] [--plans 300] [--rebuild]

Builds the rota once (reused while its marker version is present), then plans referrals with
10 random targets at random instants and prints the median and p95 time per plan in
milliseconds and the number of SQL statements per plan.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time as clock
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, delete, event, func, insert, select
from sqlalchemy.orm import Session

from bot.db import create_db_engine
from bot.migrate import upgrade
from rota.models import REGIONS, Absence, Closure, Person, RotaVersion, Shift, Team
from rota.planner import plan_referral
from rota.store import RotaStore

PEOPLE = 20_000
SHIFTS = 1_000_000
TEAMS = 500
MARKER_VERSION = 424242
START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 730
ROLES = ("police_dau", "paediatrician", "edt_manager", "edt_worker", "hospital_safeguarding")
HOURS = (None, None, None, "Mon-Wed 09:00-17:00", "Mon-Thu 08:30-16:30; Fri 08:30-16:00", "none")
LONDON = ZoneInfo("Europe/London")
BATCH = 20_000


def build(engine: Engine, seed: int = 1) -> None:
    """Fill an empty migrated database with the benchmark rota (core executemany inserts)."""
    rng = random.Random(seed)
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
                "manager_id": f"p-{t * (PEOPLE // TEAMS):05d}",
                "channel": f"C{t:06d}" if t % 2 else None,
                "active": True,
            }
            for t in range(TEAMS)
        ]
        conn.execute(insert(Team), teams)
        people = [
            {
                "person_id": f"p-{p:05d}",
                "name": f"Person {p}",
                "slack_user": f"U{p:08d}",
                "slack_user_found": None,
                "email": f"p{p}@example.org",
                "team_id": f"team-{p // (PEOPLE // TEAMS):04d}",
                "role": "professional",
                "hours": rng.choice(HOURS),
                "deputy_id": f"p-{rng.randrange(PEOPLE):05d}" if rng.random() < 0.5 else None,
                "permissions": "",
                "active": rng.random() > 0.02,
            }
            for p in range(PEOPLE)
        ]
        for i in range(0, len(people), BATCH):
            conn.execute(insert(Person), people[i : i + BATCH])
        rows = []
        for n in range(SHIFTS):
            person = rng.randrange(PEOPLE)
            kind = rng.random()
            if kind < 0.4:
                role = f"duty:team-{person // (PEOPLE // TEAMS):04d}"
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
        for _ in range(PEOPLE // 4):
            first = START.date() + timedelta(days=rng.randrange(DAYS))
            absences.append(
                {
                    "person_id": f"p-{rng.randrange(PEOPLE):05d}",
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
            for _ in range(2_000)
        ]
        conn.execute(insert(Closure), closures)
        conn.execute(
            insert(RotaVersion),
            [
                {
                    "version": MARKER_VERSION,
                    "imported_at": datetime.now(UTC),
                    "files": "bench",
                    "summary": f'{{"people": {PEOPLE}, "shifts": {SHIFTS}}}',
                }
            ],
        )
    print()


def is_built(engine: Engine) -> bool:
    with Session(engine) as session:
        marker = session.get(RotaVersion, MARKER_VERSION)
        if marker is None:
            return False
        return session.scalar(select(func.count()).select_from(Person)) == PEOPLE


def random_targets(rng: random.Random, active: list[str]) -> list[str]:
    targets = []
    for _ in range(10):
        kind = rng.random()
        if kind < 0.6:
            targets.append(f"person:{rng.choice(active)}")
        elif kind < 0.85:
            targets.append(f"team:team-{rng.randrange(TEAMS):04d}")
        else:
            targets.append(f"role:{rng.choice(ROLES)}")
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default="sqlite:////tmp/handover-bench.db")
    parser.add_argument("--plans", type=int, default=300)
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    upgrade(args.database_url)
    engine = create_db_engine(args.database_url)
    if args.rebuild or not is_built(engine):
        began = clock.perf_counter()
        print(f"building {PEOPLE:,} people and {SHIFTS:,} shifts ...")
        build(engine)
        print(f"built in {clock.perf_counter() - began:.0f} s")

    statements = 0

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args) -> None:
        nonlocal statements
        statements += 1

    with Session(engine) as session:
        active = list(session.scalars(select(Person.person_id).where(Person.active.is_(True))))
    rng = random.Random(args.seed)
    timings: list[float] = []
    counts: list[int] = []
    routed = unroutable = immediate = 0
    for n in range(args.plans + 10):
        targets = random_targets(rng, active)
        t0 = START + timedelta(days=30, minutes=rng.randrange((DAYS - 60) * 24 * 60))
        with Session(engine) as session:
            statements = 0
            began = clock.perf_counter()
            result = plan_referral(
                RotaStore(session), targets, t0, alert_roles=("edt_manager",), tz=LONDON
            )
            elapsed = (clock.perf_counter() - began) * 1000
        if n < 10:
            continue  # warm-up: connection pool, statement caches
        timings.append(elapsed)
        counts.append(statements)
        for entry in result.entries:
            routed += entry.via != "unroutable"
            unroutable += entry.via == "unroutable"
            immediate += entry.immediate
    timings.sort()
    p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
    print(f"database: {engine.dialect.name}; {args.plans} plans of 10 targets each")
    print(f"median {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms, max {timings[-1]:.1f} ms")
    print(
        f"SQL statements per plan: median {statistics.median(counts):.0f}, "
        f"min {min(counts)}, max {max(counts)}"
    )
    print(f"entries: {routed} routed ({immediate} immediate), {unroutable} unroutable")
    engine.dispose()


if __name__ == "__main__":
    main()

"""Properties of the planner on random rotas, checked against a naive wall-clock oracle.

The oracle reads local wall-clock times and the `holidays` package directly, so it shares no
code with the calendar. Every period boundary in these rotas lies on a half hour of UTC, so
checking t0 and each half hour in [t0, T0) covers every instant of that interval.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import holidays
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from bot.db import create_db_engine, make_session_factory
from rota.calendar import REGION_SUBDIVISIONS
from rota.hours import parse_hours
from rota.models import REGIONS, Base
from rota.planner import HORIZON, plan_referral
from rota.store import RotaStore
from tests.rota.factories import (
    LONDON,
    add_absence,
    add_closure,
    add_person,
    add_shift,
    add_team,
)

# Boundaries stay clear of 01:00-02:00, where wall-clock and instant semantics may differ.
HOURS_CHOICES = [
    None,
    "Mon-Wed 09:00-17:00",
    "Tue,Thu 10:00-14:30",
    "none",
    "Mon-Fri 08:30-12:00; Mon-Fri 13:00-16:30",
    "Sat-Sun 06:00-22:00",
]
CLOSURE_TIMES = [(None, None), (time(12), None), (None, time(10)), (time(11), time(13, 30))]
HALF_HOUR = timedelta(minutes=30)
PEOPLE = ("p-target", "p-deputy", "p-manager", "p-other")


@dataclass
class Spec:
    region: str
    t0: datetime
    team_hours: str | None
    channel: bool
    hours: dict[str, str | None]
    active: dict[str, bool]
    has_deputy: bool
    has_manager: bool
    absences: list[tuple[str, date, date]] = field(default_factory=list)
    closures: list[tuple[date, str, time | None, time | None]] = field(default_factory=list)
    shifts: list[tuple[str, str, datetime, datetime]] = field(default_factory=list)


@st.composite
def specs(draw: st.DrawFn) -> Spec:
    region = draw(st.sampled_from(REGIONS))
    t0 = draw(
        st.datetimes(
            min_value=datetime(2026, 1, 1), max_value=datetime(2028, 12, 31), timezones=st.just(UTC)
        )
    ).replace(second=0, microsecond=0)
    grid = t0.replace(minute=0) + (HALF_HOUR if t0.minute >= 30 else timedelta(0))
    spec = Spec(
        region=region,
        t0=t0,
        team_hours=draw(st.sampled_from([*HOURS_CHOICES[:3], None])),
        channel=draw(st.booleans()),
        hours={p: draw(st.sampled_from(HOURS_CHOICES)) for p in PEOPLE},
        active={p: p == "p-target" or draw(st.integers(0, 4)) > 0 for p in PEOPLE},
        has_deputy=draw(st.booleans()),
        has_manager=draw(st.booleans()),
    )
    first_day = t0.astimezone(LONDON).date()
    for _ in range(draw(st.integers(0, 3))):
        start = first_day + timedelta(days=draw(st.integers(-2, 8)))
        end = start + timedelta(days=draw(st.integers(0, 6)))
        spec.absences.append((draw(st.sampled_from(PEOPLE)), start, end))
    other_region = next(r for r in REGIONS if r != region)
    for _ in range(draw(st.integers(0, 3))):
        day = first_day + timedelta(days=draw(st.integers(0, 8)))
        applies = draw(st.sampled_from(["all", region, "t-main", "t-other", other_region]))
        start_time, end_time = draw(st.sampled_from(CLOSURE_TIMES))
        spec.closures.append((day, applies, start_time, end_time))
    for _ in range(draw(st.integers(0, 3))):
        person = draw(st.sampled_from(PEOPLE))
        role = draw(st.sampled_from(["duty:t-main", "duty:t-main", "clinic"]))
        start = grid + HALF_HOUR * draw(st.integers(-20, 7 * 48 + 10))
        end = start + HALF_HOUR * draw(st.integers(1, 60))
        spec.shifts.append((person, role, start, end))
    return spec


class Oracle:
    """Availability read straight from the spec, by local wall-clock time."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.holidays = holidays.country_holidays("GB", subdiv=REGION_SUBDIVISIONS[spec.region])

    def _calendar_open(self, t: datetime, hours_text: str | None, team_ids: set[str]) -> bool:
        local = t.astimezone(LONDON)
        day, clock = local.date(), local.time().replace(tzinfo=None)
        if day.weekday() >= 5 or day in self.holidays:
            return False
        within = any(
            start <= clock and (end == time.max or clock < end)
            for start, end in parse_hours(hours_text).periods(day.weekday())
        )
        if not within:
            return False
        for c_day, applies, c_from, c_to in self.spec.closures:
            applies_here = c_day == day and applies in {"all", self.spec.region} | team_ids
            if applies_here and (c_from or time(0)) <= clock and (c_to is None or clock < c_to):
                return False
        return True

    def person(self, person_id: str, t: datetime) -> bool:
        if not self.spec.active[person_id]:
            return False
        if any(p == person_id and s <= t < e for p, _, s, e in self.spec.shifts):
            return True
        day = t.astimezone(LONDON).date()
        if any(p == person_id and a <= day <= b for p, a, b in self.spec.absences):
            return False
        own = self.spec.hours[person_id]
        hours = own if own is not None else self.spec.team_hours
        return self._calendar_open(t, hours, {"t-main"})

    def duty(self, t: datetime) -> list[str]:
        """Duty holders at t, earliest shift start first, then by person_id."""
        return [
            p
            for s, p, role, e in sorted((s, p, role, e) for p, role, s, e in self.spec.shifts)
            if role == "duty:t-main" and s <= t < e and self.spec.active[p]
        ]

    def channel(self, t: datetime) -> bool:
        return self.spec.channel and self._calendar_open(t, self.spec.team_hours, {"t-main"})

    def chain(self, target: str) -> list[tuple[str, str]]:
        """(kind, id) in chain order: person ids, 'duty', or 'channel'."""
        manager = [("manager", "p-manager")] if self.spec.has_manager else []
        if target == "team:t-main":
            return [
                ("duty", "duty"),
                *manager,
                *([("channel", "CMAIN")] if self.spec.channel else []),
            ]
        deputy = [("deputy", "p-deputy")] if self.spec.has_deputy else []
        return [("self", "p-target"), *deputy, ("duty", "duty"), *manager]

    def at_work(self, link: tuple[str, str], t: datetime) -> str | None:
        """The recipient if this link is at work at t."""
        via, ref = link
        if via == "duty":
            holders = self.duty(t)
            return holders[0] if holders else None
        if via == "channel":
            return ref if self.channel(t) else None
        return ref if self.person(ref, t) else None


def build(session: Session, spec: Spec) -> None:
    other_region = next(r for r in REGIONS if r != spec.region)
    add_team(
        session,
        "t-main",
        region=spec.region,
        hours=spec.team_hours,
        manager="p-manager" if spec.has_manager else None,
        channel="CMAIN" if spec.channel else None,
    )
    add_team(session, "t-other", region=other_region)
    for person_id in PEOPLE:
        add_person(
            session,
            person_id,
            "t-main" if person_id != "p-other" else "t-other",
            hours=spec.hours[person_id],
            deputy="p-deputy" if person_id == "p-target" and spec.has_deputy else None,
            active=spec.active[person_id],
        )
    for person_id, start, end in spec.absences:
        add_absence(session, person_id, start, end)
    for day, applies, c_from, c_to in spec.closures:
        add_closure(session, day, applies, c_from, c_to)
    for person_id, role, start, end in spec.shifts:
        add_shift(session, person_id, role, start, end)


@pytest.fixture(scope="module")
def shared_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sessionmaker[Session]]:
    """One SQLite database for all examples; each example rolls its rows back."""
    path: Path = tmp_path_factory.mktemp("planner-props") / "rota.db"
    engine = create_db_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    yield make_session_factory(engine)
    engine.dispose()


def half_hours(start: datetime, end: datetime) -> Iterator[datetime]:
    """start, then every UTC half hour after it and before end."""
    yield start
    t = start.replace(minute=0, second=0, microsecond=0)
    while t < end:
        if t > start:
            yield t
        t += HALF_HOUR


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(spec=specs())
def test_due_time_is_the_first_instant_someone_in_the_chain_is_at_work(
    shared_factory: sessionmaker[Session], spec: Spec
) -> None:
    oracle = Oracle(spec)
    targets = ["person:p-target", "team:t-main"]
    with shared_factory() as session:
        build(session, spec)
        result = plan_referral(RotaStore(session), targets, spec.t0, alert_roles=(), tz=LONDON)
        session.rollback()
    t0 = spec.t0
    for target, entry in zip(targets, result.entries, strict=True):
        chain = oracle.chain(target)
        if entry.due_at is None:
            assert entry.via == "unroutable" and entry.recipient is None
            end = t0 + HORIZON + timedelta(seconds=1)
        else:
            assert entry.due_at >= t0
            assert entry.due_at - t0 <= HORIZON
            assert entry.immediate is (entry.due_at == t0)
            found = [(link[0], r) for link in chain if (r := oracle.at_work(link, entry.due_at))]
            assert found, f"{target}: nobody at work at the due time {entry.due_at}"
            assert (entry.via, entry.recipient) == found[0]
            end = entry.due_at
        for t in half_hours(t0, end):
            if t >= end:
                break
            busy = [link for link in chain if oracle.at_work(link, t)]
            assert not busy, f"{target}: {busy} at work at {t}, before the due time {end}"

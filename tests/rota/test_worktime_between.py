"""Working time between two instants, at exact instants and against walking every period."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rota.hours import parse_hours
from rota.models import Closure
from rota.store import RotaStore
from rota.worktime import SEARCH_DAYS, WorkingTime
from tests.rota.factories import LONDON, local, new_team

HOURS = [
    "Mon-Fri 09:00-17:00",
    "Mon-Sun 00:00-03:00",  # across both clock changes (01:00 GMT, 02:00 BST)
    "Mon-Sun 00:30-01:30; Mon-Sun 22:00-24:00",  # a period the March change cuts short
    "Mon-Thu 08:30-12:00; Mon-Thu 13:00-16:30; Fri 08:30-16:00",
    "Sat-Sun 00:00-24:00",
]


class _Closures:
    """The one query WorkingTime makes of its store: the closures dated in a range."""

    def __init__(self, closures: list[Closure]) -> None:
        self.closures = closures

    def closures_between(self, first: date, last: date, applies_to: set[str]) -> list[Closure]:
        return [c for c in self.closures if first <= c.date <= last and c.applies_to in applies_to]


def _closure(day: date, from_time: time | None = None, to_time: time | None = None) -> Closure:
    return Closure(date=day, applies_to="gp-x", from_time=from_time, to_time=to_time, reason="x")


CLOSURES = [
    _closure(date(2026, 6, 10)),  # a Wednesday, closed all day
    _closure(date(2026, 6, 11), time(12)),  # Thursday, closed from noon
    _closure(date(2026, 3, 30), time(10), time(11)),  # the Monday after the March change
    _closure(date(2026, 10, 26), None, time(10)),  # the Monday after the October change
]


def working(hours: str, closures: list[Closure] | None = None) -> WorkingTime:
    store = cast(RotaStore, _Closures(CLOSURES if closures is None else closures))
    return WorkingTime(
        tz=LONDON, hours=parse_hours(hours), team=new_team("gp-x", hours=hours), store=store
    )


def walked(working_time: WorkingTime, start: datetime, end: datetime) -> timedelta:
    """Working time in [start, end) by walking every period, as the report counted it before."""
    total = timedelta(0)
    if end <= start:
        return total
    for period_start, period_end in working_time.periods_from(start):
        if period_start >= end:
            break
        total += min(period_end, end) - max(period_start, start)
    return total


def minutes(working_time: WorkingTime, start: datetime, end: datetime) -> float:
    return working_time.working_time_between(start, end).total_seconds() / 60


def test_across_the_march_and_october_changes() -> None:
    office = working("Mon-Fri 09:00-17:00", [])
    # Friday 16:00 GMT to Monday 08:30 UTC, which is 09:30 BST: an hour and a half.
    assert minutes(office, local(2026, 3, 27, 16), datetime(2026, 3, 30, 8, 30, tzinfo=UTC)) == 90
    assert minutes(office, local(2026, 3, 27, 16), local(2026, 3, 30, 10)) == 120
    # Friday 16:00 BST to Monday 10:00 GMT, and from inside the repeated hour of Sunday.
    assert minutes(office, local(2026, 10, 23, 16), local(2026, 10, 26, 10)) == 120
    repeated = datetime(2026, 10, 25, 1, 30, fold=1, tzinfo=LONDON)
    assert minutes(office, repeated, local(2026, 10, 26, 9, 30)) == 30
    # Periods of every day, Sundays' clock changes included, count on weekdays only.
    night = working("Mon-Sun 00:00-03:00", [])
    assert minutes(night, local(2026, 3, 28, 12), local(2026, 3, 30, 12)) == 180


def test_across_a_bank_holiday_and_a_weekend() -> None:
    office = working("Mon-Fri 09:00-17:00", [])
    # Friday 1 May 16:00 to Tuesday 5 May 10:00: Monday 4 May is the early May bank holiday.
    assert minutes(office, local(2026, 5, 1, 16), local(2026, 5, 5, 10)) == 60 + 60


def test_across_closures() -> None:
    office = working("Mon-Fri 09:00-17:00")
    # Tuesday 9 June 16:00 to Friday 12 June 10:00: closed all Wednesday and Thursday afternoon.
    assert minutes(office, local(2026, 6, 9, 16), local(2026, 6, 12, 10)) == 60 + 0 + 180 + 60
    # Monday 30 March, BST, closed 10:00-11:00.
    assert minutes(office, local(2026, 3, 30, 9), local(2026, 3, 30, 12)) == 120


def test_an_end_before_the_start_is_no_time() -> None:
    office = working("Mon-Fri 09:00-17:00")
    assert minutes(office, local(2026, 6, 9, 12), local(2026, 6, 9, 11)) == 0


def test_a_shift_only_recipient_counts_wall_clock_time() -> None:
    shifts = WorkingTime(tz=LONDON)
    # Saturday 28 March 12:00 GMT to Sunday 29 March 12:00 BST: the clock change's 23 hours.
    start, end = local(2026, 3, 28, 12).astimezone(UTC), local(2026, 3, 29, 12).astimezone(UTC)
    assert minutes(shifts, start, end) == 23 * 60


@pytest.mark.parametrize("days", [SEARCH_DAYS - 3, SEARCH_DAYS - 2, SEARCH_DAYS - 1, 500])
def test_counts_no_further_than_the_search_window(days: int) -> None:
    office = working("Mon-Fri 09:00-17:00")
    start = local(2026, 1, 5, 12)
    end = start + timedelta(days=days)
    assert office.working_time_between(start, end) == walked(office, start, end)


# Instants over 2026 and into 2027, often near midnight, the clock changes and bank holidays.
_instants = st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 1, 31)).map(
    lambda naive: naive.replace(tzinfo=LONDON)
)
_near = st.sampled_from(
    [
        datetime(2026, 3, 29, 0, 59, tzinfo=LONDON),
        datetime(2026, 3, 29, 2, 0, tzinfo=LONDON),
        datetime(2026, 10, 25, 1, 30, tzinfo=LONDON),
        datetime(2026, 10, 25, 1, 30, fold=1, tzinfo=LONDON),
        datetime(2026, 5, 4, 9, tzinfo=LONDON),  # early May bank holiday
        datetime(2026, 12, 25, 23, 59, tzinfo=LONDON),
        datetime(2026, 6, 10, 0, tzinfo=LONDON),  # the closed Wednesday
        datetime(2026, 6, 11, 12, tzinfo=LONDON),
    ]
)


@settings(max_examples=400, deadline=None)
@given(
    hours=st.sampled_from(HOURS),
    start=st.one_of(_instants, _near),
    length=st.one_of(
        st.timedeltas(timedelta(0), timedelta(hours=30)),
        st.timedeltas(timedelta(0), timedelta(days=40)),
    ),
    fold=st.booleans(),
)
def test_equals_walking_every_period(
    hours: str, start: datetime, length: timedelta, fold: bool
) -> None:
    office = working(hours)
    start = start.replace(fold=int(fold))
    end = (start.astimezone(LONDON) + length).astimezone(LONDON)
    assert office.working_time_between(start, end) == walked(office, start, end)

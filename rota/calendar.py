"""The working-time calendar: pure functions on plain values, no session and no clock.

Every instant returned is aware UTC. Wall-clock periods are built per local date in the
service timezone and converted with zoneinfo, so both clock changes come out right.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays

from rota.hours import NO_HOURS, WeeklyHours

Interval = tuple[datetime, datetime]  # half-open [start, end), aware

REGION_SUBDIVISIONS = {
    "england": "ENG",
    "wales": "WLS",
    "scotland": "SCT",
    "northern_ireland": "NIR",
}

_ONE_MINUTE = timedelta(minutes=1)
_ONE_DAY = timedelta(days=1)


@dataclass(frozen=True)
class ClosureWindow:
    """A closure on one local date; from None = start of day, to None = end of day."""

    day: date
    from_time: time | None = None
    to_time: time | None = None


def load_bank_holidays() -> None:
    """Load the bank-holiday calendars now rather than at their first use: `holidays` imports
    its ~280 country modules then (0.1 s of CPU, over a second on a loaded machine), and a
    dispatcher's first use is composing a prompt at its due instant (docs/timing.md)."""
    holidays.country_holidays("GB")


@lru_cache(maxsize=256)
def bank_holidays(region: str, year: int) -> frozenset[date]:
    """The bank holidays (substitute days included) of a nation in one year."""
    subdiv = REGION_SUBDIVISIONS.get(region)
    if subdiv is None:
        raise ValueError(f"unknown region {region!r} (use one of {', '.join(REGION_SUBDIVISIONS)})")
    return frozenset(holidays.country_holidays("GB", subdiv=subdiv, years=year).keys())


@lru_cache(maxsize=256)
def _bank_holiday_names(region: str, year: int) -> dict[date, str]:
    subdiv = REGION_SUBDIVISIONS[region]
    return dict(holidays.country_holidays("GB", subdiv=subdiv, years=year).items())


def bank_holiday_name(day: date, region: str) -> str | None:
    """The name of the bank holiday of the nation `region` on `day` (e.g. Boxing Day), or None."""
    if not is_bank_holiday(day, region):
        return None
    name = _bank_holiday_names(region, day.year).get(day)
    # The UK calls the weekday that stands in for a weekend holiday a substitute day.
    return name.replace("(observed)", "(substitute day)") if name else None


def is_bank_holiday(day: date, region: str) -> bool:
    """Whether `day` is a bank holiday of the nation `region`."""
    return day in bank_holidays(region, day.year)


def is_working_day(day: date, region: str) -> bool:
    """Monday to Friday, except the bank holidays of the nation `region`."""
    return day.weekday() < 5 and not is_bank_holiday(day, region)


def _exists(wall: datetime) -> bool:
    back = wall.astimezone(UTC).astimezone(wall.tzinfo)
    return back.replace(tzinfo=None) == wall.replace(tzinfo=None)


def local_instant(day: date, at: time | None, tz: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock `at` on local `day`; None or 24:00 is the next midnight.

    A wall-clock time skipped by the spring change (01:30) becomes the first existing time
    after it (02:00 BST), so a period covers exactly the wall-clock times that exist; an
    ambiguous one (autumn) is its first occurrence (fold=0).
    """
    if at is None or at == time.max:
        day, at = day + timedelta(days=1), time(0)
    wall = datetime.combine(day, at.replace(tzinfo=None), tzinfo=tz)
    # Gaps are at most a few hours; step in minutes to the first wall time that exists.
    for _ in range(24 * 60):
        if _exists(wall):
            break
        wall = (wall + _ONE_MINUTE).replace(second=0, microsecond=0)
    return wall.replace(fold=0).astimezone(UTC)


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sort intervals and join those that overlap or touch."""
    merged: list[Interval] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def subtract(intervals: Iterable[Interval], removals: Iterable[Interval]) -> list[Interval]:
    """The parts of `intervals` outside every removal, merged and sorted."""
    result = merge(intervals)
    for r_start, r_end in merge(removals):
        kept: list[Interval] = []
        for start, end in result:
            if r_end <= start or r_start >= end:
                kept.append((start, end))
                continue
            if start < r_start:
                kept.append((start, r_start))
            if r_end < end:
                kept.append((r_end, end))
        result = kept
    return result


def clip(intervals: Iterable[Interval], start: datetime, end: datetime) -> list[Interval]:
    """The intervals cut to [start, end)."""
    return [(max(s, start), min(e, end)) for s, e in intervals if s < end and e > start]


def working_periods(
    day: date,
    hours: WeeklyHours,
    region: str,
    closures: Iterable[ClosureWindow],
    absent: bool,
    tz: ZoneInfo,
) -> list[Interval]:
    """The periods of `day` inside `hours`, on a working day of `region`, minus closures."""
    if absent or hours.is_none:
        return []
    periods = _open_periods(day, hours, region, tz)
    removals = [
        (local_instant(day, c.from_time or time(0), tz), local_instant(day, c.to_time, tz))
        for c in closures
        if c.day == day
    ]
    return subtract(periods, removals) if removals else list(periods)


@lru_cache(maxsize=8192)
def _open_periods(day: date, hours: WeeklyHours, region: str, tz: ZoneInfo) -> tuple[Interval, ...]:
    # Planning asks about the same few days for every person; building them (zoneinfo
    # conversions, bank holidays) once per (day, hours, region) keeps a plan cheap.
    if not is_working_day(day, region):
        return ()
    periods = [
        (local_instant(day, start, tz), local_instant(day, end, tz))
        for start, end in hours.periods(day.weekday())
    ]
    return tuple(merge(periods))


def local_days(start: datetime, end: datetime, tz: ZoneInfo) -> list[date]:
    """Every local date whose periods may meet [start, end], with a day's margin each side."""
    first = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date() + timedelta(days=1)
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass(frozen=True, eq=False)
class Availability:
    """What makes one person (or a team channel) at work: shifts, or hours on working days.

    Only the data of the window being asked about needs to be present: closures by date,
    absences as inclusive date ranges, shifts as intervals.
    """

    hours: WeeklyHours = NO_HOURS
    region: str = "england"
    closures: Mapping[date, Sequence[ClosureWindow]] = field(default_factory=dict)
    absences: Sequence[tuple[date, date]] = ()
    shifts: Sequence[Interval] = ()

    def is_absent(self, day: date) -> bool:
        """Whether an absence covers the local date `day`."""
        return any(first <= day <= last for first, last in self.absences)

    def periods(self, start: datetime, end: datetime, tz: ZoneInfo) -> list[Interval]:
        """The merged at-work intervals meeting [start, end), unclipped."""
        found: list[Interval] = [s for s in self.shifts if s[0] < end and s[1] > start]
        if not self.hours.is_none:
            for day in local_days(start, end, tz):
                found.extend(self._day_periods(day, tz))
        return [p for p in merge(found) if p[0] < end and p[1] > start]

    def _day_periods(self, day: date, tz: ZoneInfo) -> Sequence[Interval]:
        if self.hours.is_none or (self.absences and self.is_absent(day)):
            return ()
        closures = self.closures.get(day)
        if not closures:
            return _open_periods(day, self.hours, self.region, tz)
        return working_periods(day, self.hours, self.region, closures, False, tz)

    def is_at_work(self, t: datetime, tz: ZoneInfo) -> bool:
        """Whether t falls in an at-work interval (half-open: an end is not at work)."""
        if any(s <= t < e for s, e in self.shifts):
            return True
        if self.hours.is_none:
            return False
        day = t.astimezone(tz).date()
        return any(
            s <= t < e
            for offset in (-1, 0, 1)
            for s, e in self._day_periods(day + timedelta(days=offset), tz)
        )

    def next_at_work(self, t: datetime, until: datetime, tz: ZoneInfo) -> datetime | None:
        """The earliest instant in [t, until] at work, or None."""
        # t is at work when an interval covers it; otherwise the answer is the earliest start
        # after t, since touching intervals leave no gap. Days are read in order and the
        # first start found after t ends the search (a later day's periods start later).
        earliest: datetime | None = None
        for start, end in self.shifts:
            if start <= t < end:
                return t if t <= until else None
            if t < start < end and (earliest is None or start < earliest):
                earliest = start
        if not self.hours.is_none:
            # The days of local_days(t, until + 1 min), one at a time.
            day = t.astimezone(tz).date() - _ONE_DAY
            last = (until + _ONE_MINUTE).astimezone(tz).date() + _ONE_DAY
            later = None
            while later is None and day <= last:
                for start, end in self._day_periods(day, tz):
                    if start <= t < end:
                        return t if t <= until else None
                    if start > t:
                        later = start
                        break
                day += _ONE_DAY
            if later is not None and (earliest is None or later < earliest):
                earliest = later
        return earliest if earliest is not None and earliest <= until else None


def closures_by_day(windows: Iterable[ClosureWindow]) -> dict[date, list[ClosureWindow]]:
    """Group closure windows by their local date."""
    grouped: dict[date, list[ClosureWindow]] = {}
    for window in windows:
        grouped.setdefault(window.day, []).append(window)
    return grouped


def next_at_work(
    t: datetime, until: datetime, availability: Availability, tz: ZoneInfo
) -> datetime | None:
    """The earliest instant in [t, until] at which `availability` is at work, or None."""
    return availability.next_at_work(t, until, tz)

"""Working time of a prompt's recipient, for the escalation offsets, the respond-by and the breach.

Offsets are counted in the recipient's team's working time: team hours on working days of its
region, minus the closures that apply to the team. The respond-by time and the breach are the
end of the recipient's *own* working day (their hours, else the team's, on the same calendar): a
midwife working 08:00-16:00 in a 09:00-17:00 team breaches at 16:00. A shift-only recipient
(effective hours `none`) counts wall-clock time instead. `working_time_for` is the one rule
deciding which working time a prompt is measured in (docs/timing.md); everything that measures
a prompt uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from rota.calendar import ClosureWindow, Interval, closures_by_day, merge, working_periods
from rota.hours import WeeklyHours, parse_hours
from rota.models import Team
from rota.store import RotaStore, closure_applies, closure_window, effective_hours

# How far ahead to look for working time before giving up and counting wall-clock time:
# a team closed for more than a year has no working time worth waiting for.
SEARCH_DAYS = 400
_CLOSURE_CHUNK_DAYS = 31
WALL_CLOCK_DAY = timedelta(hours=24)
_ONE_DAY = timedelta(days=1)


@dataclass
class WorkingTime:
    """Counts minutes in a calendar of working periods, or wall-clock time when it has none."""

    tz: ZoneInfo
    hours: WeeklyHours | None = None  # None: wall-clock time
    # The recipient's own hours, whose working day ends the respond-by and the breach (None:
    # `hours`, e.g. a team channel's).
    own_hours: WeeklyHours | None = None
    region: str = "england"
    team: Team | None = None
    store: RotaStore | None = None
    person_id: str | None = None
    _closures: dict[date, list[ClosureWindow]] = field(default_factory=dict)
    _loaded_until: date | None = None
    _loaded_from: date | None = None
    # A day's periods, once worked out: a report measures thousands of answers in a few
    # calendars (the object lives for one computation, like the closures above).
    _days: dict[tuple[date, WeeklyHours], list[Interval]] = field(default_factory=dict)
    _offset_days: dict[date, tuple[list[Interval], timedelta]] = field(default_factory=dict)

    @property
    def wall_clock(self) -> bool:
        """Whether minutes are plain wall-clock minutes (a shift-only recipient)."""
        return self.hours is None or self.hours.is_none

    def _closures_for(self, day: date) -> list[ClosureWindow]:
        if self.store is None or self.team is None:
            return []
        if self._loaded_from is None or not (self._loaded_from <= day <= self._loaded_until):
            # Load closures a month at a time: one query covers many days of counting.
            first, last = day, day + timedelta(days=_CLOSURE_CHUNK_DAYS)
            rows = self.store.closures_between(
                first, last, {"all", self.team.region, self.team.team_id}
            )
            self._closures = closures_by_day(
                closure_window(c) for c in rows if closure_applies(c, self.team)
            )
            self._loaded_from, self._loaded_until = first, last
        return self._closures.get(day, [])

    def _day_periods(self, day: date, hours: WeeklyHours) -> list[Interval]:
        key = (day, hours)
        if key not in self._days:
            closures = self._closures_for(day)
            self._days[key] = working_periods(day, hours, self.region, closures, False, self.tz)
        return self._days[key]

    def _offset_day(self, day: date) -> tuple[list[Interval], timedelta]:
        """A day's periods of the offsets' hours and their total (keyed by the day alone: a
        report asks for them once an answer)."""
        found = self._offset_days.get(day)
        if found is None:
            assert self.hours is not None
            periods = self._day_periods(day, self.hours)
            found = periods, sum((end - start for start, end in periods), timedelta(0))
            self._offset_days[day] = found
        return found

    def working_time_between(self, start: datetime, end: datetime) -> timedelta:
        """Working time of the offsets' hours in [start, end), counted over at most
        SEARCH_DAYS local days from the day before `start`'s (as `periods_from` counts);
        wall-clock time for a shift-only recipient."""
        if end <= start:
            return timedelta(0)
        if self.wall_clock:
            return end - start
        start_day = start.astimezone(self.tz).date()
        end_day = end.astimezone(self.tz).date()
        if (end_day - start_day).days >= SEARCH_DAYS - 1:
            return self._time_in_periods(start, end)
        # A day's periods lie inside its local date (`local_instant`): those of the day before
        # start's end before it, and the days strictly between start's and end's are worked
        # whole, so their totals, each worked out once, stand in for walking their periods.
        total = timedelta(0)
        for period_start, period_end in self._offset_day(start_day)[0]:
            if period_end > start and period_start < end:
                total += min(period_end, end) - max(period_start, start)
        if start_day < end_day:
            day = start_day + _ONE_DAY
            while day < end_day:
                total += self._offset_day(day)[1]
                day += _ONE_DAY
            for period_start, period_end in self._offset_day(end_day)[0]:
                if period_start < end:
                    total += min(period_end, end) - period_start
        return total

    def _time_in_periods(self, start: datetime, end: datetime) -> timedelta:
        # Walking every period stops where `periods_from` does, for a span beyond its window.
        total = timedelta(0)
        for period_start, period_end in self.periods_from(start):
            if period_start >= end:
                break
            total += min(period_end, end) - max(period_start, start)
        return total

    def periods_from(self, start: datetime, hours: WeeklyHours | None = None) -> Iterator[Interval]:
        """Working periods (of `hours`, else the offsets' hours) ending after `start`, in
        order, for up to SEARCH_DAYS days."""
        hours = hours or self.hours
        assert hours is not None
        first = start.astimezone(self.tz).date() - timedelta(days=1)
        for n in range(SEARCH_DAYS):
            for period_start, period_end in self._day_periods(first + timedelta(days=n), hours):
                if period_end > start:
                    yield period_start, period_end

    def add_working_minutes(self, start: datetime, minutes: int) -> datetime:
        """The instant `minutes` working minutes after `start` (counting from the next period)."""
        if self.wall_clock:
            return start + timedelta(minutes=minutes)
        remaining = timedelta(minutes=minutes)
        for period_start, period_end in self.periods_from(start):
            begin = max(period_start, start)
            if begin + remaining <= period_end:
                return begin + remaining
            remaining -= period_end - begin
        return start + timedelta(minutes=minutes)

    def end_of_working_day(self, t: datetime) -> datetime:
        """The end of the recipient's own working day in which t falls (or, outside their
        working time, the next one): their respond-by, and their breach.

        For a shift-only recipient it is the end of the shift they hold at t, else 24 h after t.
        """
        if self.wall_clock:
            return self._end_of_shift(t)
        own = self.own_hours if self.own_hours is not None and not self.own_hours.is_none else None
        periods = self.periods_from(t, own)
        first = next(periods, None)
        if first is None:
            return t + WALL_CLOCK_DAY
        day = max(first[0], t).astimezone(self.tz).date()
        # Take the periods of that local day and any that touch them (e.g. 24:00 then 00:00).
        collected = [first]
        for period in periods:
            if period[0].astimezone(self.tz).date() > day and period[0] > collected[-1][1]:
                break
            collected.append(period)
        return merge(collected)[-1][1]

    def _end_of_shift(self, t: datetime) -> datetime:
        if self.store is None or self.person_id is None:
            return t + WALL_CLOCK_DAY
        shifts = self.store.shifts_for_person(self.person_id, t, t + timedelta(seconds=1))
        covering = [(s.start_at, s.end_at) for s in shifts if s.start_at <= t < s.end_at]
        if not covering:
            return t + WALL_CLOCK_DAY
        end = max(e for _, e in covering)
        # Back-to-back shifts are one stretch of work.
        later = self.store.shifts_for_person(self.person_id, end, end + timedelta(days=7))
        for s_start, s_end in merge((s.start_at, s.end_at) for s in later):
            if s_start <= end < s_end:
                end = s_end
        return end


def working_time_for_recipient(store: RotaStore, person_id: str, tz: ZoneInfo) -> WorkingTime:
    """The working time in which a prompt to `person_id` is measured."""
    person = store.person(person_id)
    team = store.team(person.team_id) if person is not None else None
    if person is None or team is None:
        return WorkingTime(tz=tz, store=store, person_id=person_id)
    own = effective_hours(person, team)
    if own.is_none:
        return WorkingTime(tz=tz, store=store, person_id=person_id)
    team_hours = parse_hours(team.hours)
    # A team without fixed hours (e.g. shift-based) measures its day-workers by their own hours.
    hours = own if team_hours.is_none else team_hours
    return WorkingTime(
        tz=tz,
        hours=hours,
        own_hours=own,
        region=team.region,
        team=team,
        store=store,
        person_id=person_id,
    )


def _target_team(store: RotaStore, target: str) -> Team | None:
    """The team a `person:ID` or `team:ID` target belongs to (a role's has none of its own)."""
    kind, _, ref = target.partition(":")
    if kind == "team":
        return store.team(ref)
    if kind == "person":
        person = store.person(ref)
        return store.team(person.team_id) if person is not None else None
    return None


class WorkingTimes:
    """`working_time_for`, remembered per person and per team (each keeps its closure cache)."""

    def __init__(self, store: RotaStore, tz: ZoneInfo) -> None:
        self.store = store
        self.tz = tz
        self._known: dict[tuple[str, str], WorkingTime] = {}

    def of_prompt(self, recipient: str | None, target: str) -> WorkingTime:
        """The working time a prompt to `recipient` (a person_id, or the channel ID of a team
        channel) for `target` is measured in.

        A person's is theirs (`working_time_for_recipient`). A prompt to a team channel, or to
        someone no longer in the rota, is measured in the target's team's hours; a role target
        has no team of its own, and a team without fixed hours has none: wall-clock time.
        """
        if recipient and self.store.person(recipient) is not None:
            key = ("person", recipient)
            if key not in self._known:
                self._known[key] = working_time_for_recipient(self.store, recipient, self.tz)
            return self._known[key]
        team = _target_team(self.store, target)
        hours = parse_hours(team.hours) if team is not None else None
        if team is None or hours is None or hours.is_none:
            return WorkingTime(tz=self.tz, store=self.store)
        key = ("team", team.team_id)
        if key not in self._known:
            self._known[key] = WorkingTime(
                tz=self.tz, hours=hours, region=team.region, team=team, store=self.store
            )
        return self._known[key]


def working_time_for(
    store: RotaStore, recipient: str | None, target: str, tz: ZoneInfo
) -> WorkingTime:
    """The working time a prompt to `recipient` for `target` is measured in: its respond-by
    time, its escalation steps and its breach (see `WorkingTimes.of_prompt`)."""
    return WorkingTimes(store, tz).of_prompt(recipient, target)

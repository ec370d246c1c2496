"""Weekly hours: `Mon-Thu 08:30-16:30; Fri 08:30-16:00`, or `none` (shift-only staff)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from functools import lru_cache

DEFAULT_HOURS_TEXT = "Mon-Fri 09:00-17:00"
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_DAY_INDEX = {name.lower(): i for i, name in enumerate(DAY_NAMES)}
_SEGMENT_RE = re.compile(
    r"^(?P<days>[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?(?:\s*,\s*[A-Za-z]{3}(?:\s*-\s*[A-Za-z]{3})?)*)"
    r"\s+(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)


class HoursSyntaxError(ValueError):
    """The hours text is not in the weekly hours syntax; the message says why."""


@dataclass(frozen=True)
class WeeklyHours:
    """Working periods per weekday (0 = Monday), each a sorted tuple of (start, end)."""

    days: tuple[tuple[tuple[time, time], ...], ...]
    # Worked out once: the calendar asks both for every person on every day it plans.
    is_none: bool = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_none", not any(self.days))
        object.__setattr__(self, "_hash", hash(self.days))

    def __hash__(self) -> int:
        return self._hash

    def periods(self, weekday: int) -> tuple[tuple[time, time], ...]:
        """The (start, end) working periods of `weekday` (0 = Monday), in order."""
        return self.days[weekday]


NO_HOURS = WeeklyHours(days=((),) * 7)


def _parse_time(text: str, whole: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes != 0):
        raise HoursSyntaxError(f"{text!r} is not a time of day in {whole!r}")
    if hours == 24:
        return time.max
    return time(hours, minutes)


def _parse_days(text: str, whole: str) -> list[int]:
    days: list[int] = []
    for part in text.split(","):
        bounds = [b.strip().lower() for b in part.split("-")]
        for bound in bounds:
            if bound not in _DAY_INDEX:
                raise HoursSyntaxError(f"unknown day {bound!r} in {whole!r} (use Mon..Sun)")
        first, last = _DAY_INDEX[bounds[0]], _DAY_INDEX[bounds[-1]]
        if last < first:
            raise HoursSyntaxError(f"day range {part.strip()!r} runs backwards in {whole!r}")
        days.extend(range(first, last + 1))
    return days


@lru_cache(maxsize=1024)
def parse_hours(text: str | None) -> WeeklyHours:
    """Parse the weekly hours syntax; empty text means the default Mon-Fri 09:00-17:00."""
    # Cached: a rota has a few dozen distinct hours texts, read for every person planned.
    whole = (text or "").strip()
    if not whole:
        whole = DEFAULT_HOURS_TEXT
    if whole.lower() == "none":
        return NO_HOURS
    per_day: list[list[tuple[time, time]]] = [[] for _ in range(7)]
    for raw_segment in whole.split(";"):
        segment = raw_segment.strip()
        if not segment:
            raise HoursSyntaxError(f"empty segment in {whole!r}")
        match = _SEGMENT_RE.match(segment)
        if not match:
            raise HoursSyntaxError(
                f"{segment!r} is not like 'Mon-Fri 09:00-17:00' (days, then start-end)"
            )
        start = _parse_time(match["start"], whole)
        end = _parse_time(match["end"], whole)
        if end <= start:
            raise HoursSyntaxError(f"end before start in {segment!r}")
        for day in _parse_days(match["days"], whole):
            for other_start, other_end in per_day[day]:
                if start < other_end and other_start < end:
                    raise HoursSyntaxError(f"{DAY_NAMES[day]} has overlapping periods in {whole!r}")
            per_day[day].append((start, end))
    return WeeklyHours(days=tuple(tuple(sorted(periods)) for periods in per_day))

"""Cover of the alert roles: intervals in which a role has nobody on shift (docs/rota-files.md).

`cover_gaps` is pure and takes the window; `find_cover_gaps` reads the shifts from the store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from rota.calendar import Interval, clip, subtract
from rota.planner import format_gap
from rota.store import RotaStore

DEFAULT_DAYS = 14


@dataclass(frozen=True)
class CoverGap:
    """An interval in which nobody holds a shift of an alert role."""

    role: str
    start: datetime
    end: datetime

    @property
    def length(self) -> timedelta:
        """How long the gap lasts, in elapsed time."""
        # In UTC: two wall-clock times of one zone subtract naively across a clock change.
        return self.end.astimezone(UTC) - self.start.astimezone(UTC)

    def describe(self, tz: ZoneInfo) -> str:
        """`edt_manager: nobody on shift from Thu 24 Dec 2026 09:00 to ... (8 h)`."""
        return (
            f"{self.role}: nobody on shift from {local_label(self.start, tz)} "
            f"to {local_label(self.end, tz)} ({format_gap(self.length)})"
        )


def local_label(t: datetime, tz: ZoneInfo) -> str:
    """An instant as a coordinator reads it: `Thu 24 Dec 2026 17:00`."""
    return f"{t.astimezone(tz):%a %d %b %Y %H:%M}"


def cover_gaps(
    shifts_by_role: Mapping[str, Sequence[Interval]],
    roles: Sequence[str],
    start: datetime,
    end: datetime,
) -> list[CoverGap]:
    """Every part of [start, end) in which a role has no shift, role by role, then by time."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("cover_gaps needs aware instants")
    gaps: list[CoverGap] = []
    for role in dict.fromkeys(roles):
        covered = clip(shifts_by_role.get(role, ()), start, end)
        gaps.extend(CoverGap(role, s, e) for s, e in subtract([(start, end)], covered))
    return gaps


def find_cover_gaps(
    store: RotaStore, roles: Sequence[str], start: datetime, end: datetime
) -> list[CoverGap]:
    """The gaps in the cover of `roles` over [start, end), counting active people's shifts."""
    spans = store.active_shift_spans_for_roles(roles, start, end)
    intervals = {role: [(s.start_at, s.end_at) for s in found] for role, found in spans.items()}
    return cover_gaps(intervals, roles, start, end)

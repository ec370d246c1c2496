"""Figures for managers (`handover report`), computed from the audit log alone.

Every figure is derived from the audit rows that `handover log` shows for the same window, so
the report can always be checked against the log:

- referrals received: `referral_received` events;
- prompts sent: `prompt_sent` and `prompt_sent_late` events (each send is logged once, as one of
  them), of which late: `prompt_sent_late`;
- responses by kind: `acknowledged`, `has_information`, `not_known`, `redirected` events;
- breaches, unroutable targets, long gaps: `breach`, `unroutable`, `long_gap_alert` events;
- time to respond, by agency type: for each (referral, target), from its first send to the first
  response after it, both in the window, in working minutes of the recipient's team (wall-clock
  minutes for a shift-only recipient; a team channel counts in the team's hours). The median is
  the usual one (the mean of the two middle values for an even count); the 90th percentile is the
  nearest-rank value (the ceil(0.9 n)-th smallest);
- strategy-discussion coverage: referrals received in the window for which a target of each of
  social care, police and health has a response event in the window, over referrals received.

Agency types come from the current rota (`bot.services.logbook` says how a target gets its type).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.delivery.kinds import RESPONSE_KINDS
from bot.services.logbook import (
    STRATEGY_AGENCIES,
    AgencyResolver,
    LogWindow,
    iter_log,
    working_minutes_between,
)
from rota.models import AGENCY_TYPES
from rota.store import RotaStore

SENT_EVENTS = ("prompt_sent", "prompt_sent_late")
UNKNOWN_AGENCY = "unknown"


def median(values: Sequence[float]) -> float | None:
    """The median, or None for no values."""
    return float(statistics.median(values)) if values else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank p-th percentile (0 < p <= 100), or None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(frozen=True)
class ResponseTimes:
    """Time to respond for one agency type, in working minutes."""

    agency_type: str
    count: int
    median_minutes: float | None
    p90_minutes: float | None


@dataclass(frozen=True)
class Report:
    """The figures of one window of the log."""

    window: LogWindow
    referrals_received: int
    prompts_sent: int
    prompts_late: int
    responses: dict[str, int]
    response_times: list[ResponseTimes]
    breaches: int
    unroutables: int
    long_gaps: int
    coverage_complete: int
    minutes_by_agency: dict[str, list[float]] = field(repr=False, default_factory=dict)

    @property
    def responses_total(self) -> int:
        """All responses, of every kind."""
        return sum(self.responses.values())

    @property
    def coverage_rate(self) -> float | None:
        """Share of referrals where social care, police and health all engaged (None if none)."""
        if not self.referrals_received:
            return None
        return self.coverage_complete / self.referrals_received


def build_report(session: Session, window: LogWindow, tz: ZoneInfo) -> Report:
    """Compute the report from the audit rows in `window`, streamed once."""
    counts: Counter[str] = Counter()
    received: list[str] = []
    scheduled_to: dict[tuple[str | None, str], str | None] = {}
    first_send: dict[tuple[str | None, str], tuple[datetime, str | None]] = {}
    answered: dict[tuple[str | None, str], datetime] = {}
    engaged: dict[str | None, dict[str, str | None]] = {}  # referral -> target -> recipient

    for row in iter_log(session, window):
        counts[row.event] += 1
        key = (row.referral_id, row.target or "")
        if row.event == "referral_received":
            received.append(row.referral_id or "")
        elif row.event == "prompt_scheduled" and row.target:
            scheduled_to.setdefault(key, row.recipient)
        elif row.event in SENT_EVENTS and row.target:
            first_send.setdefault(key, (row.at, row.recipient))
        elif row.event in RESPONSE_KINDS and row.target:
            if key in first_send and key not in answered and row.at >= first_send[key][0]:
                answered[key] = row.at
            sent = first_send.get(key)
            recipient = (
                (sent[1] if sent else None) or scheduled_to.get(key) or row.recipient or row.actor
            )
            engaged.setdefault(row.referral_id, {}).setdefault(row.target, recipient)

    resolver = AgencyResolver(RotaStore(session), tz)
    resolver.preload(
        [t for _, t in first_send] + [t for targets in engaged.values() for t in targets],
        [r for _, r in first_send.values()]
        + [r for targets in engaged.values() for r in targets.values()],
    )

    minutes: dict[str, list[float]] = {}
    for key, responded_at in answered.items():
        sent_at, recipient = first_send[key]
        target = key[1]
        agency = resolver.agency_type(target, recipient) or UNKNOWN_AGENCY
        working = resolver.working_time(target, recipient)
        minutes.setdefault(agency, []).append(
            working_minutes_between(working, sent_at, responded_at)
        )

    complete = 0
    for referral_id in received:
        agencies = {
            resolver.agency_type(target, recipient)
            for target, recipient in engaged.get(referral_id, {}).items()
        }
        if all(a in agencies for a in STRATEGY_AGENCIES):
            complete += 1

    order = [*AGENCY_TYPES, UNKNOWN_AGENCY]
    times = [
        ResponseTimes(
            agency_type=agency,
            count=len(minutes[agency]),
            median_minutes=median(minutes[agency]),
            p90_minutes=percentile(minutes[agency], 90),
        )
        for agency in order
        if agency in minutes
    ]
    return Report(
        window=window,
        referrals_received=counts["referral_received"],
        prompts_sent=sum(counts[e] for e in SENT_EVENTS),
        prompts_late=counts["prompt_sent_late"],
        responses={kind: counts[kind] for kind in RESPONSE_KINDS},
        response_times=times,
        breaches=counts["breach"],
        unroutables=counts["unroutable"],
        long_gaps=counts["long_gap_alert"],
        coverage_complete=complete,
        minutes_by_agency=minutes,
    )

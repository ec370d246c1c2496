"""The report as `build_report` computed it before the database grouped the log (every audit
row of the window read in order, in Python), kept as the oracle the grouped report must equal.

This is the previous bot/services/reports.py `build_report`, unchanged but for its name
(and its time to answer by agency type, which is `response_times` now). It is
quadratic in the referrals (its coverage loop): fine for the tests' logs, not for a county's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.delivery.kinds import RESPONSE_KINDS
from bot.services.agencies import AgencyResolver
from bot.services.coverage import (
    ENDING_EVENTS,
    SHARING_ANSWERS,
    STRATEGY_AGENCIES,
    CoverageState,
    TargetOutcome,
    referral_coverage,
)
from bot.services.logbook import LogWindow, iter_log, working_minutes_between
from bot.services.reports import (
    UNKNOWN_AGENCY,
    CoverageFigures,
    GroupFigures,
    Report,
    response_times,
)
from rota.models import AGENCY_TYPES
from rota.store import RotaStore

SENT_EVENTS = ("prompt_sent", "prompt_sent_late")


@dataclass
class _Tally:
    asked: set[tuple[str | None, str]] = field(default_factory=set)
    answered: set[tuple[str | None, str]] = field(default_factory=set)
    responded: set[tuple[str | None, str]] = field(default_factory=set)
    breaches: int = 0
    unroutables: int = 0


def previous_build_report(session: Session, window: LogWindow, tz: ZoneInfo) -> Report:
    """The report as it was computed before the database grouped the log: every row of the
    window read in order, in Python."""
    counts: Counter[str] = Counter()
    received: dict[str, str | None] = {}  # referral -> referrer
    recipient_of: dict[tuple[str | None, str], str | None] = {}
    first_send: dict[tuple[str | None, str], tuple[datetime, str | None]] = {}
    answered: dict[tuple[str | None, str], datetime] = {}
    outcomes: dict[tuple[str | None, str], TargetOutcome] = {}
    events: list[tuple[str, tuple[str | None, str]]] = []  # per-target events to tally

    for row in iter_log(session, window):
        counts[row.event] += 1
        key = (row.referral_id, row.target or "")
        if row.event == "referral_received":
            received[row.referral_id or ""] = row.actor
            continue
        if not row.target:
            continue
        if row.event == "prompt_scheduled":
            recipient_of.setdefault(key, row.recipient)
            outcomes.setdefault(key, TargetOutcome.OPEN)
        elif row.event in SENT_EVENTS:
            first_send.setdefault(key, (row.at, row.recipient))
            if row.recipient:
                recipient_of[key] = row.recipient
            outcomes.setdefault(key, TargetOutcome.OPEN)
            events.append(("asked", key))
        elif row.event in RESPONSE_KINDS:
            events.append(("responded", key))
            recipient_of.setdefault(key, row.recipient or row.actor)
            if row.event in SHARING_ANSWERS:
                events.append(("answered", key))
                outcomes[key] = TargetOutcome.ANSWERED
                if key in first_send and key not in answered and row.at >= first_send[key][0]:
                    answered[key] = row.at
        if row.event in ENDING_EVENTS and outcomes.get(key) != TargetOutcome.ANSWERED:
            outcomes[key] = TargetOutcome.ENDED
        if row.event in ("breach", "unroutable"):
            events.append((row.event, key))

    resolver = AgencyResolver(RotaStore(session), tz)
    resolver.preload(
        [t for _, t in outcomes] + [t for _, t in recipient_of] + [k[1] for _, k in events],
        list(recipient_of.values()) + list(received.values()),
    )

    def agency_of(key: tuple[str | None, str]) -> str:
        return resolver.agency_type(key[1], recipient_of.get(key)) or UNKNOWN_AGENCY

    minutes: dict[str, list[float]] = {}
    team_minutes: dict[str, list[float]] = {}
    for key, responded_at in answered.items():
        sent_at, recipient = first_send[key]
        working = resolver.working_time(key[1], recipient)
        taken = working_minutes_between(working, sent_at, responded_at)
        minutes.setdefault(agency_of(key), []).append(taken)
        team = resolver.team_for(key[1], recipient_of.get(key))
        if team is not None:
            team_minutes.setdefault(team.team_id, []).append(taken)

    agencies: dict[str, _Tally] = {}
    teams: dict[str, _Tally] = {}
    team_info: dict[str, tuple[str, str]] = {}  # team_id -> (name, agency type)
    for what, key in events:
        team = resolver.team_for(key[1], recipient_of.get(key))
        tallies = [agencies.setdefault(agency_of(key), _Tally())]
        if team is not None:
            team_info[team.team_id] = (team.name, team.agency_type)
            tallies.append(teams.setdefault(team.team_id, _Tally()))
        for tally in tallies:
            if what in ("asked", "answered", "responded"):
                getattr(tally, what).add(key)
            elif what == "breach":
                tally.breaches += 1
            else:
                tally.unroutables += 1

    by_state = {a: dict.fromkeys((str(s) for s in CoverageState), 0) for a in STRATEGY_AGENCIES}
    all_covered = 0
    for referral_id, referrer in received.items():
        entries = [(agency_of(k), o) for k, o in outcomes.items() if k[0] == referral_id]
        referrer_agency = resolver.agency_type(f"person:{referrer}", None) if referrer else None
        coverage = referral_coverage(entries, referrer_agency=referrer_agency)
        for agency in STRATEGY_AGENCIES:
            by_state[agency][str(coverage.states[agency])] += 1
        all_covered += coverage.complete

    order = [*AGENCY_TYPES, UNKNOWN_AGENCY]
    return Report(
        window=window,
        referrals_received=counts["referral_received"],
        prompts_sent=sum(counts[e] for e in SENT_EVENTS),
        prompts_late=counts["prompt_sent_late"],
        responses={kind: counts[kind] for kind in RESPONSE_KINDS},
        response_times=response_times(minutes),
        breaches=counts["breach"],
        unroutables=counts["unroutable"],
        long_gaps=counts["long_gap_alert"],
        coverage=CoverageFigures(
            referrals=counts["referral_received"], all_covered=all_covered, by_agency=by_state
        ),
        by_agency=[
            _figures(a, a.replace("_", " "), a, agencies[a]) for a in order if a in agencies
        ],
        by_team=[
            _figures(t, team_info[t][0], team_info[t][1], teams[t])
            for t in sorted(teams, key=lambda t: (order.index(team_info[t][1]), t))
        ],
        minutes_by_agency=minutes,
        minutes_by_team=team_minutes,
    )


def _figures(key: str, label: str, agency_type: str, tally: _Tally) -> GroupFigures:
    return GroupFigures(
        key=key,
        label=label,
        agency_type=agency_type,
        asked=len(tally.asked),
        answered=len(tally.answered),
        responded=len(tally.responded),
        breaches=tally.breaches,
        unroutables=tally.unroutables,
    )

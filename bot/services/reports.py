"""Figures for managers (`handover report`), computed from the audit log alone.

Every figure is derived from the audit rows that `handover log` shows for the same window, so
the report can always be checked against the log:

- referrals received: `referral_received` events;
- prompts sent: `prompt_sent` and `prompt_sent_late` events (each send is logged once, as one of
  them), of which late: `prompt_sent_late`;
- responses by kind: `acknowledged`, `has_information`, `not_known`, `redirected` events;
- breaches, unroutable targets, long gaps: `breach`, `unroutable`, `long_gap_alert` events;
- time to answer, by agency type (and by team, for the HTML page): for each (referral, target), from
  its first send to the first answer that shares (`has_information` or `not_known`) after it, both
  in the window, in working minutes of the recipient's team (wall-clock minutes for a shift-only
  recipient; a team channel counts in the team's hours). An acknowledgement or a redirect is not an
  answer: a manager who redirects at once has not answered in 0 minutes. The median is the usual one
  (the mean of the two middle values for an even count); the 90th percentile is the nearest-rank
  value (the ceil(0.9 n)-th smallest);
- by agency type and by team: targets asked (a prompt sent in the window), answered (a sharing
  answer), any response, breaches and unroutables, whether or not the agency ever answered, and
  the response rate (answered over asked);
- strategy-discussion coverage: for each referral received in the window, the one rule of
  bot.services.coverage applied to its targets' events in the window (`COVERAGE_RULE` says it in
  plain words): how many had each state by agency type, and how many were covered for all three.

The `Report` value holds every figure; the table, CSV and JSON of `handover report` (and its
HTML page) are renderings of it and compute nothing of their own.
Agency types come from the current rota (`bot.services.logbook` says how a target gets its type).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from bot.delivery.kinds import RESPONSE_KINDS
from bot.services.agencies import AgencyResolver
from bot.services.coverage import (
    COVERAGE_RULE,
    STRATEGY_AGENCIES,
    CoverageState,
    TargetOutcome,
    referral_coverage,
)
from bot.services.log_targets import (
    RECEIVED,
    SENT_EVENTS,
    TargetFacts,
    WeekOutcome,
    event_counts,
    event_counts_by_week,
    referrers,
    referrers_by_week,
    settle_answers,
    target_facts,
    target_facts_by_week,
)
from bot.services.logbook import LogWindow, working_minutes_between
from rota.models import AGENCY_TYPES, Team
from rota.store import RotaStore
from rota.worktime import WorkingTime

UNKNOWN_AGENCY = "unknown"
PRELOAD_BATCH = 5000  # targets whose people and teams are read in one go
_Item = TypeVar("_Item")


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
class GroupFigures:
    """What was asked of one agency type or one team, and what came of it."""

    key: str  # the agency type, or the team_id
    label: str  # its name for people
    agency_type: str
    asked: int  # targets sent a prompt
    answered: int  # targets that shared (has information, not known)
    responded: int  # targets with any response (acknowledged and redirected too)
    breaches: int
    unroutables: int

    @property
    def response_rate(self) -> float | None:
        """Answered over asked (None when nobody was asked)."""
        return self.answered / self.asked if self.asked else None


@dataclass(frozen=True)
class CoverageFigures:
    """Strategy-discussion coverage of the referrals received in the window."""

    referrals: int
    all_covered: int
    by_agency: dict[str, dict[str, int]]  # agency type -> coverage state -> referrals
    rule: str = COVERAGE_RULE


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
    coverage: CoverageFigures
    by_agency: list[GroupFigures] = field(default_factory=list)
    by_team: list[GroupFigures] = field(default_factory=list)
    minutes_by_agency: dict[str, list[float]] = field(repr=False, default_factory=dict)
    minutes_by_team: dict[str, list[float]] = field(repr=False, default_factory=dict)

    def team_times(self, team_id: str) -> ResponseTimes:
        """Time to answer of one team of `by_team`, as `response_times` gives an agency's."""
        found = self.minutes_by_team.get(team_id, [])
        agency = next((g.agency_type for g in self.by_team if g.key == team_id), UNKNOWN_AGENCY)
        return ResponseTimes(agency, len(found), median(found), percentile(found, 90))

    @property
    def responses_total(self) -> int:
        """All responses, of every kind."""
        return sum(self.responses.values())

    @property
    def coverage_complete(self) -> int:
        """Referrals covered by social care, police and health alike."""
        return self.coverage.all_covered

    @property
    def coverage_rate(self) -> float | None:
        """Share of referrals covered by all three (None if none)."""
        if not self.referrals_received:
            return None
        return self.coverage.all_covered / self.referrals_received


def response_times(minutes: dict[str, list[float]]) -> list[ResponseTimes]:
    """Time to answer of each agency type that answered, in the rota's order of agency types."""
    return [
        ResponseTimes(agency, len(found), median(found), percentile(found, 90))
        for agency in [*AGENCY_TYPES, UNKNOWN_AGENCY]
        if (found := minutes.get(agency))
    ]


@dataclass
class _Tally:
    asked: int = 0
    answered: int = 0
    responded: int = 0
    breaches: int = 0
    unroutables: int = 0

    def add(self, counts: TargetFacts | _Tally) -> None:
        """Count a target in (asked, answered, responded: 0 or 1), or another tally."""
        self.asked += counts.asked
        self.answered += counts.answered
        self.responded += counts.responded
        self.breaches += counts.breaches
        self.unroutables += counts.unroutables


@dataclass(frozen=True)
class WeekFigures:
    """What the report page shows of a week: its counts and its coverage, as its `Report`."""

    referrals_received: int
    prompts_sent: int
    responses_total: int
    breaches: int
    coverage_complete: int

    @property
    def coverage_rate(self) -> float | None:
        """Share of referrals covered by all three (None if none)."""
        if not self.referrals_received:
            return None
        return self.coverage_complete / self.referrals_received


def build_report(session: Session, window: LogWindow, tz: ZoneInfo) -> Report:
    """Compute the report from the audit rows in `window`: the database groups them, one row
    a target reaches Python (bot.services.log_targets), a referral's at a time."""
    return _build_report(session, window, tz, whole=True)[0]


def build_week_figures(session: Session, window: LogWindow, tz: ZoneInfo) -> WeekFigures:
    """The figures `build_report` gives a week that the page shows, without what it does not
    (time to answer, figures by agency type and team: a fifth of the page's time)."""
    return week_figures(_build_report(session, window, tz, whole=False)[0])


def week_figures(report: Report) -> WeekFigures:
    """What the page shows of a week whose report this is."""
    return WeekFigures(
        referrals_received=report.referrals_received,
        prompts_sent=report.prompts_sent,
        responses_total=report.responses_total,
        breaches=report.breaches,
        coverage_complete=report.coverage_complete,
    )


def build_report_and_weeks(
    session: Session, window: LogWindow, tz: ZoneInfo, week_starts: Sequence[datetime]
) -> tuple[Report, list[WeekFigures]]:
    """`build_report` of the window, and `build_week_figures` of each of its weeks (week i + 1
    begins at `week_starts[i]`), from one grouped read of the window's targets: a target's
    summary for each week it has rows in, combined into the window's."""
    return _build_report(session, window, tz, whole=True, week_starts=week_starts)


class _WeeksCoverage:
    """How many of each week's referrals received were covered by all three, from each week's
    outcomes of their targets, counted a referral at a time (the targets come by referral)."""

    def __init__(
        self,
        received: list[dict[str, str | None]],
        agency_of_referrer: Callable[[str | None], str | None],
    ) -> None:
        self.received = received  # each week's referrals received: their referrers
        self._agency_of_referrer = agency_of_referrer
        self._alike: list[Counter[tuple[frozenset[tuple[str, TargetOutcome]], str | None]]] = [
            Counter() for _ in received
        ]
        self._referral: str | None = None
        self._outcomes: dict[int, set[tuple[str, TargetOutcome]]] = {}  # the referral's a week

    def add(self, referral_id: str, week: int, outcome: tuple[str, TargetOutcome]) -> None:
        """An outcome of a target of a referral received in `week`, from that week's rows."""
        if referral_id != self._referral:
            self._count()
            self._referral = referral_id
        self._outcomes.setdefault(week, set()).add(outcome)

    def _count(self) -> None:
        for week, outcomes in self._outcomes.items():
            referrer = self.received[week].pop(self._referral or "")
            self._alike[week][(frozenset(outcomes), self._agency_of_referrer(referrer))] += 1
        self._outcomes = {}

    def complete(self) -> list[int]:
        """Each week's referrals covered by all three."""
        self._count()
        covered = []
        for received, alike in zip(self.received, self._alike, strict=True):
            for referrer in received.values():  # no target with an outcome that week
                alike[(frozenset(), self._agency_of_referrer(referrer))] += 1
            covered.append(
                sum(
                    referral_coverage(entries, referrer_agency=referrer_type).complete * referrals
                    for (entries, referrer_type), referrals in alike.items()
                )
            )
        return covered


def _week_figures(counts: dict[str, int], coverage_complete: int) -> WeekFigures:
    return WeekFigures(
        referrals_received=counts.get(RECEIVED, 0),
        prompts_sent=sum(counts.get(e, 0) for e in SENT_EVENTS),
        responses_total=sum(counts.get(kind, 0) for kind in RESPONSE_KINDS),
        breaches=counts.get("breach", 0),
        coverage_complete=coverage_complete,
    )


def _build_report(
    session: Session,
    window: LogWindow,
    tz: ZoneInfo,
    *,
    whole: bool,
    week_starts: Sequence[datetime] | None = None,
) -> tuple[Report, list[WeekFigures]]:
    """The report; without `whole`, only its counts and coverage (the rest left empty). With
    `week_starts`, the figures of each week too (none without)."""
    counts = event_counts(session, window)
    received = referrers(session, window)
    resolver = AgencyResolver(RotaStore(session), tz)
    groups: dict[tuple[str, str | None], tuple[str, Team | None]] = {}

    def group_of_pair(target: str, recipient: str | None) -> tuple[str, Team | None]:
        """The agency type and the team a target sent to `recipient` counts in."""
        pair = (target, recipient)
        if pair not in groups:
            team = resolver.team_for(target, recipient)
            groups[pair] = ((team.agency_type if team else None) or UNKNOWN_AGENCY, team)
        return groups[pair]

    def group_of(facts: TargetFacts) -> tuple[str, Team | None]:
        return group_of_pair(facts.target, facts.recipient)

    answers: list[tuple[datetime, str, str, float]] = []  # (answered at, agency, team, minutes)
    # Each (target, first recipient)'s working time, looked up once: the same few calendars,
    # with the days they have worked out, time every answer.
    workings: dict[tuple[str, str | None], WorkingTime] = {}

    def time_answer(facts: TargetFacts) -> None:
        sent_at, answered_at = facts.first_sent_at, facts.answered_at
        assert sent_at is not None and answered_at is not None
        pair = (facts.target, facts.first_sent_to)
        working = workings.get(pair)
        if working is None:
            working = workings[pair] = resolver.working_time(*pair)
        agency, team = group_of(facts)
        taken = working_minutes_between(working, sent_at, answered_at)
        answers.append((answered_at, agency, team.team_id if team else "", taken))

    pairs: dict[tuple[str, str | None], _Tally] = {}  # (target, recipient): the tally of each
    agencies: dict[str, _Tally] = {}
    teams: dict[str, _Tally] = {}
    team_info: dict[str, tuple[str, str]] = {}  # team_id -> (name, agency type)
    # Referrals alike in which outcomes each agency type has (all the coverage rule reads) and
    # in their referrer's agency type share one application of the rule.
    alike: Counter[tuple[frozenset[tuple[str, TargetOutcome]], str | None]] = Counter()
    referrer_agency: dict[str | None, str | None] = {None: None, "": None}

    def agency_of_referrer(referrer: str | None) -> str | None:
        if referrer not in referrer_agency:
            referrer_agency[referrer] = resolver.agency_type(f"person:{referrer}", None)
        return referrer_agency[referrer]

    def count_referral(referral_id: str, outcomes: set[tuple[str, TargetOutcome]]) -> None:
        alike[(frozenset(outcomes), agency_of_referrer(received.pop(referral_id)))] += 1

    weeks_coverage = _WeeksCoverage(
        [] if week_starts is None else referrers_by_week(session, window, week_starts),
        agency_of_referrer,
    )

    def count_weeks(facts: TargetFacts, outcomes: list[WeekOutcome]) -> None:
        for found in outcomes:
            if facts.referral_id in weeks_coverage.received[found.week]:
                agency = group_of_pair(facts.target, found.recipient)[0]
                weeks_coverage.add(facts.referral_id, found.week, (agency, found.outcome))

    facts_and_weeks: Iterable[tuple[TargetFacts, list[WeekOutcome]]]
    if week_starts is None:
        facts_and_weeks = ((facts, []) for facts in target_facts(session, window))
    else:
        facts_and_weeks = target_facts_by_week(session, window, week_starts)

    unsettled: list[TargetFacts] = []
    current: str | None = None  # the referral whose targets are being read
    outcomes: set[tuple[str, TargetOutcome]] = set()
    for batch in _batches(facts_and_weeks, PRELOAD_BATCH):
        resolver.preload(
            {f.target for f, _ in batch},
            {r for f, _ in batch for r in (f.recipient, f.first_sent_to)}
            | {w.recipient for _, found in batch for w in found},
        )
        for facts, found in batch:
            count_weeks(facts, found)
            if facts.referral_id != current:
                if current is not None:
                    count_referral(current, outcomes)
                current, outcomes = facts.referral_id, set()
                if current not in received:
                    current = None  # not received in the window: no coverage of its own
            if current is not None and facts.outcome is not None:
                outcomes.add((group_of(facts)[0], facts.outcome))
            if not whole:
                continue
            if facts.unsettled:
                unsettled.append(facts)
            elif facts.answered_at is not None:
                time_answer(facts)
            if facts.tallied:
                pairs.setdefault((facts.target, facts.recipient), _Tally()).add(facts)
    if current is not None:
        count_referral(current, outcomes)
    for (target, recipient), tally in pairs.items():
        agency, team = group_of_pair(target, recipient)
        agencies.setdefault(agency, _Tally()).add(tally)
        if team is not None:
            team_info[team.team_id] = (team.name, team.agency_type)
            teams.setdefault(team.team_id, _Tally()).add(tally)
    for referral_id in list(received):  # received, and no target in the window
        count_referral(referral_id, set())
    for facts in settle_answers(session, window, unsettled):
        if facts.answered_at is not None:
            time_answer(facts)

    by_state = {a: dict.fromkeys((str(s) for s in CoverageState), 0) for a in STRATEGY_AGENCIES}
    all_covered = 0
    for (entries, referrer_type), referrals in alike.items():
        coverage = referral_coverage(entries, referrer_agency=referrer_type)
        for agency in STRATEGY_AGENCIES:
            by_state[agency][str(coverage.states[agency])] += referrals
        all_covered += coverage.complete * referrals

    weeks: list[WeekFigures] = []
    if week_starts is not None:
        counts_by_week = event_counts_by_week(session, window, week_starts)
        for week_counts, covered in zip(counts_by_week, weeks_coverage.complete(), strict=True):
            weeks.append(_week_figures(week_counts, covered))

    minutes: dict[str, list[float]] = {}
    team_minutes: dict[str, list[float]] = {}
    for _, agency, team_id, taken in sorted(answers):  # in order of the answers
        minutes.setdefault(agency, []).append(taken)
        if team_id:
            team_minutes.setdefault(team_id, []).append(taken)

    order = [*AGENCY_TYPES, UNKNOWN_AGENCY]
    report = Report(
        window=window,
        referrals_received=counts.get(RECEIVED, 0),
        prompts_sent=sum(counts.get(e, 0) for e in SENT_EVENTS),
        prompts_late=counts.get("prompt_sent_late", 0),
        responses={kind: counts.get(kind, 0) for kind in RESPONSE_KINDS},
        response_times=response_times(minutes),
        breaches=counts.get("breach", 0),
        unroutables=counts.get("unroutable", 0),
        long_gaps=counts.get("long_gap_alert", 0),
        coverage=CoverageFigures(
            referrals=counts.get(RECEIVED, 0), all_covered=all_covered, by_agency=by_state
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
    return report, weeks


def _batches(items: Iterable[_Item], size: int) -> Iterator[list[_Item]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


def _figures(key: str, label: str, agency_type: str, tally: _Tally) -> GroupFigures:
    return GroupFigures(
        key=key,
        label=label,
        agency_type=agency_type,
        asked=tally.asked,
        answered=tally.answered,
        responded=tally.responded,
        breaches=tally.breaches,
        unroutables=tally.unroutables,
    )


def report_json(report: Report, tz: ZoneInfo) -> dict[str, Any]:
    """The report as `handover report --format json` prints it (docs/reference/commands.md)."""
    window = report.window
    end = window.before or window.until

    def group(g: GroupFigures) -> dict[str, Any]:
        return {
            "label": g.label,
            "agency_type": g.agency_type,
            "asked": g.asked,
            "answered": g.answered,
            "responded": g.responded,
            "response_rate": g.response_rate,
            "breaches": g.breaches,
            "unroutables": g.unroutables,
        }

    return {
        "since": window.since.astimezone(tz).isoformat() if window.since else None,
        "until": end.astimezone(tz).isoformat() if end else None,
        "referrals_received": report.referrals_received,
        "prompts_sent": report.prompts_sent,
        "prompts_sent_late": report.prompts_late,
        "responses": dict(report.responses),
        "breaches": {
            "total": report.breaches,
            "by_agency": {g.key: g.breaches for g in report.by_agency},
            "by_team": {g.key: g.breaches for g in report.by_team},
        },
        "unroutables": report.unroutables,
        "long_gaps": report.long_gaps,
        "by_agency": {g.key: group(g) for g in report.by_agency},
        "by_team": {g.key: group(g) for g in report.by_team},
        "time_to_answer": {
            t.agency_type: {
                "count": t.count,
                "median_minutes": t.median_minutes,
                "p90_minutes": t.p90_minutes,
            }
            for t in report.response_times
        },
        "coverage": {
            "referrals": report.coverage.referrals,
            "all_covered": report.coverage.all_covered,
            "by_agency": report.coverage.by_agency,
            "rule": report.coverage.rule,
        },
    }

"""What the managers' report page shows (`handover report --html`), computed from the audit log.

The page is `handover report`'s `Report` (bot/services/reports.py): its figures by agency type
and by team, its time to answer, its coverage and the coverage rule are the report's own, so the
page, the text report and `--format json` cannot disagree. It computes only what is the page's
alone, from the same log window:

- the report week by week (Monday to Sunday, local time), for the trends and coverage;
- a timeline per referral: for each target, held -> sent -> reminded -> escalated -> answered
  or breached, each step at its local time, with people's names beside their IDs; at most
  `TIMELINE_LIMIT` referrals, the latest to appear in the window (the page says how many it
  shows of how many: `handover log --referral ID` prints any other's log).

Nothing here is a referral's summary or a child's details: the log holds none. The figures are
the database's summaries (bot/services/log_targets.py), read once for the window with each
target's summary a week (`build_report_and_weeks`): the window's figures combine a target's
weeks, each week's coverage reads its own. A window that holds the whole log is read by a scan
rather than through the `at` index (`scan_when_whole`). The timelines read only the rows of the
referrals shown (through the referral index), so neither the work nor the page grows with every
row of a long window. Rendering is bot/pages.py's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from bot.delivery.kinds import RESPONSE_KINDS
from bot.models import AuditEvent
from bot.services.log_targets import ordered_text
from bot.services.logbook import (
    YIELD_PER,
    LogWindow,
    detail_value,
)
from bot.services.reports import (
    Report,
    WeekFigures,
    build_report,
    build_report_and_weeks,
)
from rota.store import RotaStore

# How each step reads, and how it is marked (ok, warn, bad, info).
RESPONSE_WORDS = {
    "acknowledged": "acknowledged",
    "has_information": "holds information",
    "not_known": "not known to them",
    "redirected": "someone else holds it",
}
STAGES = {
    "prompt_scheduled": ("held", "info"),
    "prompt_sent": ("sent", "info"),
    "prompt_sent_late": ("sent late", "warn"),
    "reminder_sent": ("reminded", "warn"),
    "escalated": ("escalated", "warn"),
    "escalated_channel": ("escalated to a channel", "bad"),
    "breach": ("breached", "bad"),
    "prompt_failed": ("could not be sent", "bad"),
    "unroutable": ("nobody to ask", "bad"),
    "long_gap_alert": ("long gap: on call told", "warn"),
    "prompt_cancelled": ("cancelled", "info"),
    "unreachable": ("unreachable", "bad"),
    "prompt_rerouted": ("passed on", "warn"),
    **{kind.value: ("answered", "ok") for kind in RESPONSE_KINDS},
}
RESPONSE_EVENTS = frozenset(kind.value for kind in RESPONSE_KINDS)
# A target's outcome is that of the first of these stages it reached.
OUTCOME_OF_STAGE = (
    ("answered", "answered"),
    ("breached", "breached"),
    ("escalated to a channel", "escalated"),
    ("escalated", "escalated"),
    ("sent", "waiting"),
    ("sent late", "waiting"),
    ("could not be sent", "not sent"),
    ("nobody to ask", "nobody to ask"),
    ("cancelled", "cancelled"),
)
# A window of a county's year names tens of thousands of referrals: the page shows the latest
# this many (a page a manager can read and attach to an email), and says how many there were.
TIMELINE_LIMIT = 200
TARGET_OUTCOMES = (
    "answered",
    "breached",
    "escalated",
    "waiting",
    "not sent",
    "nobody to ask",
    "cancelled",
    "held",
)


@dataclass(frozen=True)
class Step:
    """One thing that happened to a target, in words."""

    at: datetime  # aware, local
    stage: str  # "held", "sent", "reminded", "escalated", "answered", "breached", …
    words: str  # "Prompt sent to Kiran Patel (hv-kpatel)"
    tone: str  # ok | warn | bad | info


@dataclass
class TargetTimeline:
    """One target of a referral and what happened to it."""

    target: str
    label: str  # "Jane Smith (hv-jsmith)", "Northgate Surgery (gp-northgate)", "role police_dau"
    steps: list[Step] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """Where the target ended: one of TARGET_OUTCOMES."""
        stages = {step.stage for step in self.steps}
        for stage, outcome in OUTCOME_OF_STAGE:
            if stage in stages:
                return outcome
        return "held"


@dataclass
class ReferralTimeline:
    """A referral: when it came, what kind, and each target's timeline."""

    referral_id: str
    received_at: datetime | None = None  # local
    category: str = ""
    urgency: str = ""
    external_ref: str = ""
    referrer: str = ""
    notes: list[Step] = field(default_factory=list)  # the referral's own steps (closed, on call)
    targets: dict[str, TargetTimeline] = field(default_factory=dict)


@dataclass(frozen=True)
class Week:
    """The report's figures for one week (Monday 00:00 to the next, local time)."""

    start: date
    figures: WeekFigures


@dataclass(frozen=True)
class ReportPage:
    """Everything the page shows."""

    report: Report
    weeks: list[Week]
    timelines: list[ReferralTimeline]  # the latest TIMELINE_LIMIT of the referrals named
    tz: ZoneInfo
    generated_at: datetime
    referrals_named: int = 0  # referrals the window's rows name (timelines shown or not)

    @property
    def timelines_cut(self) -> bool:
        """Whether some referrals of the window have no timeline on the page."""
        return len(self.timelines) < self.referrals_named


class LogRow(NamedTuple):
    """The columns of an audit row the page reads (plain values, not ORM objects)."""

    at: datetime
    referral_id: str | None
    event: str
    actor: str | None
    recipient: str | None
    target: str | None
    detail: str | None


# Events whose detail a timeline reads (the rest are never parsed).
_DETAIL_EVENTS = frozenset({"referral_received", "prompt_scheduled", "prompt_sent_late"})


def latest_referrals(session: Session, window: LogWindow, limit: int) -> tuple[list[str], int]:
    """The `limit` referrals that first appear latest in the window (their first row in the
    order of (`at`, `id`), as the timelines are ordered), and how many referrals its rows name."""
    e = AuditEvent.__table__.c
    first = func.min(ordered_text(e.at, e.id, literal(""))).label("first")
    named = (
        window.apply(select(e.referral_id, first))
        .where(e.referral_id.is_not(None), e.referral_id != "")
        .group_by(e.referral_id)
        .subquery()
    )
    ranked = select(
        named.c.referral_id,
        func.row_number().over(order_by=named.c.first.desc()).label("rank"),
        func.count().over().label("total"),
    ).subquery()
    rows = session.execute(
        select(ranked.c.referral_id, ranked.c.total).where(ranked.c.rank <= limit)
    ).all()
    return [referral_id for referral_id, _ in rows], (rows[0].total if rows else 0)


def read_log_rows(
    session: Session, window: LogWindow, referral_ids: Sequence[str] | None = None
) -> Iterator[LogRow]:
    """The window's audit rows (of `referral_ids` only, when given) by time then id, as plain
    tuples, streamed in batches."""
    statement = window.apply(
        select(
            AuditEvent.at,
            AuditEvent.referral_id,
            AuditEvent.event,
            AuditEvent.actor,
            AuditEvent.recipient,
            AuditEvent.target,
            AuditEvent.detail,
        )
    ).order_by(AuditEvent.at, AuditEvent.id)
    if referral_ids is not None:
        statement = statement.where(AuditEvent.referral_id.in_(sorted(referral_ids)))
    for row in session.execute(statement.execution_options(yield_per=YIELD_PER)):
        yield LogRow(*row)


class ReportNames:
    """People's and teams' names from the rota, for 'Name (id)' labels; channels by role."""

    def __init__(self, store: RotaStore, channels: Mapping[str, str]) -> None:
        self._store = store
        self._channels = dict(channels)
        self._people: dict[str, str] = {}
        self._teams: dict[str, str] = {}

    def load(self, person_ids: Iterable[str], team_ids: Iterable[str]) -> None:
        """Read the names of these people and teams from the rota (at most one query each)."""
        people = self._store.people_by_ids({p for p in person_ids if p})
        self._people.update({pid: person.name for pid, person in people.items()})
        teams = self._store.teams_by_ids({t for t in team_ids if t})
        self._teams.update({tid: team.name for tid, team in teams.items()})

    def person(self, ident: str | None) -> str:
        """'Kiran Patel (hv-kpatel)', 'the escalation channel', or the ID when unknown."""
        if not ident:
            return "nobody"
        if ident in self._channels:
            return self._channels[ident]
        if ident == "dispatcher":
            return "Handover"
        name = self._people.get(ident)
        return f"{name} ({ident})" if name else ident

    def target(self, spec: str) -> str:
        """'Northgate Surgery (gp-northgate)' for team:gp-northgate; 'on-call police_dau'."""
        kind, _, ident = spec.partition(":")
        if kind == "person":
            return self.person(ident)
        if kind == "team":
            name = self._teams.get(ident)
            return f"{name} ({ident})" if name else ident
        if kind == "role":
            return f"on-call {ident.replace('_', ' ')}"
        return spec


def local_time(at: datetime, tz: ZoneInfo) -> str:
    """'Tue 29 Dec 09:00' in local time."""
    local = at.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def _step_words(event: str, actor: str, recipient: str, detail: object, tz: ZoneInfo) -> str:
    info = detail if isinstance(detail, dict) else {}
    if event == "prompt_scheduled":
        due = info.get("due_at")
        when = local_time(datetime.fromisoformat(due), tz) if isinstance(due, str) else "later"
        return f"Held for {recipient} until {when}"
    if event == "prompt_sent":
        return f"Prompt sent to {recipient}"
    if event == "prompt_sent_late":
        minutes = info.get("delay_minutes")
        late = f", {minutes} minutes late" if isinstance(minutes, int) else ", late"
        return f"Prompt sent to {recipient}{late}"
    if event == "reminder_sent":
        return f"Reminder sent to {recipient}"
    if event == "escalated":
        return f"Escalated to {recipient}"
    if event == "escalated_channel":
        return f"Escalated to {recipient}"
    if event == "breach":
        return "Breached: no answer by the end of the working day"
    if event in RESPONSE_WORDS:
        return f"Answered by {actor}: {RESPONSE_WORDS[event]}"
    if event == "prompt_failed":
        return f"The prompt to {recipient} could not be sent"
    if event == "unroutable":
        return "Nobody in the chain can be asked within 7 days"
    if event == "long_gap_alert":
        told = f": on call told ({recipient})" if recipient != "nobody" else ""
        return f"Nobody can be asked for more than 48 hours{told}"
    if event == "unreachable":
        return f"{recipient} could not be reached: passed over, on call told"
    if event == "prompt_rerouted":
        return f"Passed on to {recipient}"
    if event == "prompt_cancelled":
        return "Prompt cancelled: no longer needed"
    return event.replace("_", " ").capitalize()


def build_timelines(
    rows: Sequence[LogRow], tz: ZoneInfo, names: ReportNames
) -> list[ReferralTimeline]:
    """Each referral's timeline from the log rows, in the order referrals first appear."""
    people: set[str] = set()
    teams: set[str] = set()
    for row in rows:
        people.update(p for p in (row.actor, row.recipient) if p)
        if row.target:
            kind, _, ident = row.target.partition(":")
            (people if kind == "person" else teams).add(ident)
    names.load(people, teams)

    timelines: dict[str, ReferralTimeline] = {}
    for at, referral_id, event, actor_id, recipient_id, target, raw_detail in rows:
        if not referral_id:
            continue
        actor, recipient = actor_id or "", recipient_id or ""
        detail = detail_value(raw_detail) if event in _DETAIL_EVENTS else None
        timeline = timelines.setdefault(referral_id, ReferralTimeline(referral_id))
        local = at.astimezone(tz)
        info = detail if isinstance(detail, dict) else {}
        if event == "referral_received":
            timeline.received_at = local
            timeline.category = str(info.get("category", "")).replace("_", " ")
            timeline.urgency = str(info.get("urgency", ""))
            timeline.external_ref = str(info.get("external_ref", ""))
            timeline.referrer = names.person(actor)
            continue
        if event == "referral_closed":
            timeline.notes.append(Step(local, "closed", f"Closed by {names.person(actor)}", "ok"))
            continue
        if event == "on_call_alerted":
            words = f"On call told: {names.person(recipient)}"
            timeline.notes.append(Step(local, "on call", words, "info"))
            continue
        if event not in STAGES or not target:
            continue
        stage, tone = STAGES[event]
        entry = timeline.targets.setdefault(target, TargetTimeline(target, names.target(target)))
        words = _step_words(event, names.person(actor), names.person(recipient), detail, tz)
        entry.steps.append(Step(local, stage, words, tone))
    return list(timelines.values())


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def week_windows(session: Session, window: LogWindow, tz: ZoneInfo) -> list[tuple[date, LogWindow]]:
    """The window cut into local Monday-to-Monday weeks (the log's first and last events bound
    a window left open)."""
    first, last = session.execute(
        window.apply(select(func.min(AuditEvent.at), func.max(AuditEvent.at)))
    ).one()
    if first is None:
        return []
    start = window.since or first
    # The window ends before `before` (exclusive), or at `until` or its last event (inclusive).
    end, inclusive = (window.before, False) if window.before else (window.until or last, True)
    monday = _monday(start.astimezone(tz).date())
    weeks = []
    while True:
        begin = datetime.combine(monday, time(0), tzinfo=tz)
        if begin > end or (begin == end and not inclusive):
            break
        after = datetime.combine(monday + timedelta(days=7), time(0), tzinfo=tz)
        since = max(begin, window.since) if window.since else begin
        before = min(after, window.before) if window.before else after
        weeks.append((monday, LogWindow(since=since, before=before, until=window.until)))
        monday += timedelta(days=7)
    return weeks


def scan_when_whole(session: Session, window: LogWindow) -> LogWindow:
    """The window, read by a scan (`LogWindow.scan`) when it holds every row of the log: on
    SQLite a scan reads such a window in about two thirds of the time the `at` index takes."""
    if window.referral_id is not None:
        return window
    first, last = session.execute(select(func.min(AuditEvent.at), func.max(AuditEvent.at))).one()
    if first is None or not (window.contains(first) and window.contains(last)):
        return window
    return replace(window, scan=True)


def build_report_page(
    session: Session,
    window: LogWindow,
    tz: ZoneInfo,
    now: datetime,
    *,
    channels: Mapping[str, str] | None = None,
    timeline_limit: int | None = None,
) -> ReportPage:
    """The report, its weeks and the timelines of its latest referrals (`timeline_limit`,
    default TIMELINE_LIMIT)."""
    limit = timeline_limit or TIMELINE_LIMIT
    window = scan_when_whole(session, window)
    windows = week_windows(session, window, tz)
    if windows:
        # One grouped read of the window gives its report and every week's figures.
        week_starts = [w.since for _, w in windows[1:]]
        report, figures = build_report_and_weeks(session, window, tz, week_starts)
    else:
        report, figures = build_report(session, window, tz), []
    weeks = [Week(start, found) for (start, _), found in zip(windows, figures, strict=True)]
    shown, named = latest_referrals(session, window, limit)
    rows = list(read_log_rows(session, window, shown)) if shown else []
    return ReportPage(
        report=report,
        weeks=weeks,
        timelines=build_timelines(rows, tz, ReportNames(RotaStore(session), channels or {})),
        tz=tz,
        generated_at=now.astimezone(tz),
        referrals_named=named,
    )

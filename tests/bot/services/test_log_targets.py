"""The report grouped by the database equals the report read row by row (tests/bot/report_oracle.py)
on the logbook's scenario and on seeded random logs built to be awkward: events out of the order
of their ids, several at one instant, answers before the send they answer, recipients missing or
empty, targets and referrals without an ID, and windows cut through all of it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent
from bot.services import audit
from bot.services.coverage import STRATEGY_AGENCIES, TargetOutcome, referral_coverage
from bot.services.log_targets import ordered_text, target_facts
from bot.services.logbook import YIELD_PER, LogWindow, parse_window
from bot.services.report_page import week_windows
from bot.services.reports import (
    Report,
    build_report,
    build_report_and_weeks,
    build_week_figures,
    week_figures,
)
from tests.bot.report_oracle import previous_build_report
from tests.bot.services.test_logbook import build_rota, build_scenario
from tests.bot.services.test_report_page import add_police_breach
from tests.bot.sqlite_plans import audit_reads

LONDON = ZoneInfo("Europe/London")
START = datetime(2026, 11, 12, 16, 0, tzinfo=UTC)  # Thu, GMT


def comparable(report: Report) -> dict:
    """Every figure of a report; the lists of minutes in order (their order is not shown)."""
    figures = asdict(report)
    for name in ("minutes_by_agency", "minutes_by_team"):
        figures[name] = {k: sorted(v) for k, v in figures[name].items()}
    return figures


def assert_same_report(session: Session, window: LogWindow) -> Report:
    """The grouped report is the oracle's, and so are the figures the page shows of a week;
    so are the report and the weeks the page reads in one pass, with or without the index."""
    grouped = build_report(session, window, LONDON)
    previous = previous_build_report(session, window, LONDON)
    assert comparable(grouped) == comparable(previous)
    assert build_week_figures(session, window, LONDON) == week_figures(previous)
    weeks = week_windows(session, window, LONDON)
    expected = [week_figures(previous_build_report(session, w, LONDON)) for _, w in weeks]
    week_starts = [w.since for _, w in weeks[1:]]
    for read in (window, replace(window, scan=True)):
        report, figures = build_report_and_weeks(session, read, LONDON, week_starts)
        assert comparable(replace(report, window=window)) == comparable(previous)
        assert figures == expected
    return grouped


WINDOWS = [
    (None, None),
    ("2026-11-13", "2026-11-13"),
    ("2026-11-14", "2026-11-16"),
    ("2026-11-13T16:10", None),
    (None, "2026-11-16T09:30"),
]


@pytest.mark.parametrize(("since", "until"), WINDOWS)
def test_the_logbook_scenario_reports_as_before(
    session_factory: sessionmaker[Session], since: str | None, until: str | None
) -> None:
    build_scenario(session_factory)
    add_police_breach(session_factory)
    with session_factory() as session:
        report = assert_same_report(session, parse_window(since, until, LONDON))
    if since is None and until is None:  # the figures test_logbook.py works out by hand
        assert report.referrals_received == 5
        assert report.coverage.by_agency["police"] == {
            "covered": 0,
            "pending": 2,
            "missed": 2,
            "not_asked": 1,
        }


EVENTS = [
    "referral_received",
    "prompt_scheduled",
    "prompt_sent",
    "prompt_sent_late",
    "acknowledged",
    "has_information",
    "not_known",
    "redirected",
    "breach",
    "unroutable",
    "prompt_cancelled",
    "reminder_sent",
    "long_gap_alert",
]
REFERRALS = ["HO-A", "HO-B", "HO-C", "HO-D", None, ""]
TARGETS = [
    "person:hv-jo",
    "team:mash",
    "role:police_dau",
    "role:paediatrician",
    "team:nowhere",
    "person:ghost",
    "",
    None,
]
PEOPLE = ["hv-jo", "pc-pat", "sw-sam", "paed-1", "edt-amy", "ghost", "", None]


def random_log(session: Session, seed: int, rows: int, start: datetime = START) -> None:
    """`rows` audit rows through the log's own writer, at a few instants drawn in any order."""
    rng = random.Random(seed)
    instants = [start + timedelta(minutes=rng.randrange(0, 5 * 24 * 60)) for _ in range(rows // 4)]
    for _ in range(rows):
        audit.record(
            session,
            rng.choice(EVENTS),
            at=rng.choice(instants),
            referral_id=rng.choice(REFERRALS),
            target=rng.choice(TARGETS),
            actor=rng.choice(PEOPLE),
            recipient=rng.choice(PEOPLE),
        )


# Thursday to Tuesday: across a Monday's week boundary; the last two across the clock changes
# too (Sunday 29 March and Sunday 25 October 2026), so a week is 167 or 169 hours long.
STARTS = [START] * 6 + [
    datetime(2026, 3, 26, 16, 0, tzinfo=UTC),
    datetime(2026, 10, 22, 16, 0, tzinfo=UTC),
]


@pytest.mark.parametrize(("seed", "first"), list(enumerate(STARTS)))
def test_random_logs_report_as_before_in_every_window(
    session_factory: sessionmaker[Session], seed: int, first: datetime
) -> None:
    with session_factory.begin() as session:
        build_rota(session)
        random_log(session, seed, 160, first)
    rng = random.Random(1000 + seed)
    windows = [LogWindow()]
    for _ in range(3):
        start = first + timedelta(hours=rng.randrange(0, 120))
        windows.append(LogWindow(since=start, before=start + timedelta(hours=rng.randrange(6, 72))))
    windows.append(LogWindow(until=first + timedelta(hours=rng.randrange(0, 120))))
    with session_factory() as session:
        for window in windows:
            assert_same_report(session, window)


def test_answers_before_and_after_the_send_at_one_instant_are_told_apart_by_id(
    session_factory: sessionmaker[Session],
) -> None:
    # At 09:00 exactly: an answer, then the send, then a second answer (ids in that order);
    # the time to answer runs from the send to the second answer, 0 working minutes.
    # At 10:00: an answer logged before a later send and none after it: no time to answer.
    at = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # Mon
    rows = [
        ("referral_received", at, "HO-T", None, None, "edt-amy"),
        ("not_known", at, "HO-T", "person:hv-jo", None, "hv-jo"),
        ("prompt_sent", at, "HO-T", "person:hv-jo", "hv-jo", None),
        ("has_information", at, "HO-T", "person:hv-jo", None, "hv-jo"),
        ("not_known", at + timedelta(hours=1), "HO-T", "team:mash", None, "sw-sam"),
        ("prompt_sent", at + timedelta(hours=2), "HO-T", "team:mash", "sw-sam", None),
    ]
    with session_factory.begin() as session:
        build_rota(session)
        for name, when, referral, target, recipient, actor in rows:
            audit.record(
                session,
                name,
                at=when,
                referral_id=referral,
                target=target,
                recipient=recipient,
                actor=actor,
            )
    with session_factory() as session:
        report = assert_same_report(session, LogWindow())
    assert report.minutes_by_agency == {"health": [0.0]}
    assert [(g.key, g.asked, g.answered) for g in report.by_agency] == [
        ("social_care", 1, 1),
        ("health", 1, 1),
    ]


def test_ids_follow_the_writing_not_the_instant_so_first_is_by_instant_then_id(
    session_factory: sessionmaker[Session],
) -> None:
    # The log's writer numbers rows as it chains them, but each row's instant is its caller's
    # (a confirmed send is logged at its send's instant, after other writers' later rows): so
    # the first send is the earliest instant, not the smallest id, and min(id) would not do.
    at = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)  # Mon
    rows = [  # written in this order
        ("referral_received", at, None, None, "edt-amy"),
        ("prompt_sent", at + timedelta(hours=1), "person:hv-jo", "hv-jo", None),
        ("prompt_sent", at, "person:hv-jo", "hv-jo", None),
        ("has_information", at + timedelta(hours=2), "person:hv-jo", None, "hv-jo"),
    ]
    with session_factory.begin() as session:
        build_rota(session)
        written = [
            audit.record(
                session, name, at=when, referral_id="HO-T", target=target, recipient=to, actor=by
            )
            for name, when, target, to, by in rows
        ]
        ids_and_instants = [(row.id, row.at) for row in written]
    assert [i for i, _ in ids_and_instants] == sorted(i for i, _ in ids_and_instants)
    assert ids_and_instants[1][1] > ids_and_instants[2][1]
    with session_factory() as session:
        report = assert_same_report(session, LogWindow())
    assert report.minutes_by_agency == {"health": [120.0]}  # from 09:00, not 10:00


def test_ordered_text_sorts_as_the_instant_then_the_id(
    session_factory: sessionmaker[Session],
) -> None:
    base = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    # Ids of different widths at one instant, and a later instant with a smaller id.
    rows = [
        (9, base, "nine"),
        (10, base, "ten"),
        (123456789, base + timedelta(microseconds=1), "later"),
        (8, base + timedelta(microseconds=2), "latest"),
    ]
    with session_factory.begin() as session:
        session.execute(
            insert(AuditEvent),
            [
                dict(id=i, at=at, event="reminder_sent", actor=value, prev_hash="0", row_hash="0")
                for i, at, value in rows
            ],
        )
    ordered = ordered_text(AuditEvent.at, AuditEvent.id, AuditEvent.actor)
    with session_factory() as session:
        values = session.scalars(select(ordered).order_by(ordered)).all()
        first, last = session.execute(select(func.min(ordered), func.max(ordered))).one()
    assert [v[39:] for v in values] == ["nine", "ten", "later", "latest"]
    assert (first[39:], last[39:]) == ("nine", "latest")
    assert values[0][:26] == "2026-11-16 09:00:00.000000"


def test_the_rule_reads_only_which_outcomes_each_agency_has() -> None:
    # Why the report applies the coverage rule once to all referrals alike in that.
    agencies = [*STRATEGY_AGENCIES, "education", "unknown"]
    entries = list(itertools.product(agencies, TargetOutcome))
    rng = random.Random(7)
    for _ in range(2000):
        chosen = rng.choices(entries, k=rng.randrange(0, 7))
        for referrer in ("social_care", "police", None):
            assert referral_coverage(chosen, referrer_agency=referrer) == referral_coverage(
                frozenset(chosen), referrer_agency=referrer
            )


def test_a_windowed_report_reads_only_its_window_through_an_index(tmp_path: Path) -> None:
    def fill(factory: sessionmaker[Session]) -> None:
        with factory.begin() as session:
            build_rota(session)
            random_log(session, 1, 40)

    window = parse_window("2026-11-13", "2026-11-14", LONDON)
    _, reads = audit_reads(tmp_path, fill, lambda session: build_report(session, window, LONDON))
    assert len(reads) == 3
    for read in reads:
        assert len(read.steps) == 1
        assert read.steps[0].startswith("SEARCH audit_log USING INDEX ix_audit_log_")
        assert "at>? AND at<?" in read.steps[0]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_on_postgresql_the_summary_streams_on_a_connection_of_its_own(
    session_factory: sessionmaker[Session],
) -> None:
    # The server groups the rows while Python reads those before (not a batch at a time through
    # a cursor of the session's, which a summary longer than a batch keeps open), and the
    # session's connection answers meanwhile.
    at = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    targets = [f"person:p{n:04d}" for n in range(YIELD_PER + 1)]
    with session_factory.begin() as session:
        for target in targets:
            audit.record(session, "prompt_sent", at=at, referral_id="HO-STREAM", target=target)
    issued: list[str] = []
    with session_factory() as session:
        engine = session.get_bind()
        event.listen(engine, "before_cursor_execute", lambda *args: issued.append(args[2]))
        facts = target_facts(session, LogWindow())
        first = next(facts)
        assert session.scalar(text("SELECT count(*) FROM pg_cursors")) == 0
        assert [first.target, *(f.target for f in facts)] == targets
    # One backend groups them: parallel workers would only add CPU (see _streamed_rows).
    assert "SET LOCAL max_parallel_workers_per_gather = 0" in issued

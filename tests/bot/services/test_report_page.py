"""The managers' report page: its data from the log (timelines, teams, weeks) and its HTML."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from markupsafe import escape

from bot.cli import main
from bot.pages import charted_teams, render_report, team_rows
from bot.services import audit, report_page
from bot.services.coverage import COVERAGE_RULE
from bot.services.logbook import parse_window
from bot.services.report_page import LogRow, ReportNames, build_report_page, build_timelines
from bot.services.reports import GroupFigures, build_report
from rota.store import RotaStore
from tests.bot.services.test_logbook import (
    SUMMARY,
    add_prompt,
    add_referral,
    add_target,
    build_rota,
    build_scenario,
    utc,
)
from tests.bot.sqlite_plans import audit_reads

LONDON = ZoneInfo("Europe/London")
GENERATED = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


@pytest.fixture
def page(session_factory):
    build_scenario(session_factory)
    with session_factory() as session:
        return build_report_page(
            session, parse_window("2026-11-09", "2026-11-22", LONDON), LONDON, GENERATED
        )


def steps(page, referral_id: str, target: str) -> list[tuple[str, str, str]]:
    (timeline,) = [t for t in page.timelines if t.referral_id == referral_id]
    return [(f"{s.at:%a %d %H:%M}", s.stage, s.words) for s in timeline.targets[target].steps]


def test_each_target_has_its_timeline_in_local_times_and_names(page) -> None:
    assert [t.referral_id for t in page.timelines] == ["HO-R4", "HO-R1", "HO-R2", "HO-R3"]
    (r2,) = [t for t in page.timelines if t.referral_id == "HO-R2"]
    assert (r2.received_at, r2.category, r2.external_ref, r2.referrer) == (
        datetime(2026, 11, 14, 2, 0, tzinfo=LONDON),
        "domestic abuse",
        "LCS-HO-R2",
        "Edt-Amy (edt-amy)",
    )
    assert steps(page, "HO-R2", "person:hv-jo") == [
        ("Sat 14 02:00", "held", "Held for Hv-Jo (hv-jo) until Mon 16 Nov 09:00"),
        ("Mon 16 09:20", "sent late", "Prompt sent to Hv-Jo (hv-jo), late"),
        ("Mon 16 17:00", "breached", "Breached: no answer by the end of the working day"),
    ]
    assert r2.targets["person:hv-jo"].outcome == "breached"
    assert steps(page, "HO-R2", "role:police_dau")[-1] == (
        "Sat 14 03:05",
        "answered",
        "Answered by Pc-Pat (pc-pat): someone else holds it",
    )
    (r4,) = [t for t in page.timelines if t.referral_id == "HO-R4"]
    assert [(f"{n.at:%a %d %H:%M}", n.words) for n in r4.notes] == [
        ("Fri 13 12:00", "Closed by Mgr-Mia (mgr-mia)")
    ]
    assert r4.targets["team:mash"].label == "Mash (mash)"
    (r3,) = [t for t in page.timelines if t.referral_id == "HO-R3"]
    assert {t: r3.targets[t].outcome for t in r3.targets} == {
        "person:hv-jo": "held",
        "role:paediatrician": "nobody to ask",
    }


def test_a_long_window_shows_the_latest_referrals_timelines_and_says_how_many(
    session_factory,
) -> None:
    build_scenario(session_factory)
    with session_factory.begin() as session:  # HO-R5 first appears at HO-R3's instant, later
        audit.record(session, "referral_received", at=utc(15, 10), referral_id="HO-R5")
    window = parse_window("2026-11-09", "2026-11-22", LONDON)

    def shown(limit: int) -> tuple[list[str], int]:
        with session_factory() as session:
            built = build_report_page(session, window, LONDON, GENERATED, timeline_limit=limit)
        return [t.referral_id for t in built.timelines], built.referrals_named

    assert shown(200) == (["HO-R4", "HO-R1", "HO-R2", "HO-R3", "HO-R5"], 5)
    assert shown(3) == (["HO-R2", "HO-R3", "HO-R5"], 5)
    assert shown(1) == (["HO-R5"], 5)  # of two first rows at one instant, the later id
    with session_factory() as session:
        whole = build_report_page(session, window, LONDON, GENERATED)
        cut = build_report_page(session, window, LONDON, GENERATED, timeline_limit=2)
    (r3,) = [t for t in cut.timelines if t.referral_id == "HO-R3"]
    assert r3 == next(t for t in whole.timelines if t.referral_id == "HO-R3")
    assert cut.report == whole.report and cut.weeks == whole.weeks

    html = render_report(cut, window_label="Handover report")
    assert html.count('<article class="referral"') == 2
    assert (
        "Showing the latest 2 of the 5 referrals in this period, in the order they first appear "
        "in it; <code>handover log --referral ID</code> prints the log of any referral." in html
    )
    assert "Showing the latest" not in render_report(whole, window_label="Handover report")


def test_report_html_cuts_the_timelines_at_the_limit(
    session_factory, db_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    build_scenario(session_factory)
    monkeypatch.setenv("DATABASE_URL", db_url)
    monkeypatch.setattr(report_page, "TIMELINE_LIMIT", 3)
    target = tmp_path / "report.html"

    assert main(["report", "--since", "2026-11-09", "--html", str(target)]) == 0
    assert capsys.readouterr().out == f"report written to {target}\n"
    html = target.read_text(encoding="utf-8")
    assert re.findall(r'<article class="referral" aria-labelledby="ref-([^"]+)"', html) == [
        "HO-R1",
        "HO-R2",
        "HO-R3",
    ]
    assert "Showing the latest 3 of the 4 referrals in this period" in html


def test_the_page_reads_the_rows_of_the_referrals_it_shows_alone(tmp_path: Path) -> None:
    # The only statement that reads rows' details (the timelines') asks for the two referrals
    # shown, through their index.
    built, reads = audit_reads(
        tmp_path,
        build_scenario,
        lambda session: build_report_page(
            session, parse_window(None, None, LONDON), LONDON, GENERATED, timeline_limit=2
        ),
        naming="audit_log.detail",
    )
    assert [t.referral_id for t in built.timelines] == ["HO-R2", "HO-R3"]
    assert built.referrals_named == 4
    (read,) = reads
    assert sorted(p for p in read.parameters if isinstance(p, str)) == ["HO-R2", "HO-R3"]
    assert read.steps == ["SEARCH audit_log USING INDEX ix_audit_log_referral_id (referral_id=?)"]


def test_teams_and_agencies_are_the_reports_own_and_weeks_cut_it_finer(page) -> None:
    # Time to answer by team is the report's: only 'I hold information' and 'not known' count.
    assert [
        (r.figures.key, r.figures.asked, r.figures.answered, r.times.count, r.times.median_minutes)
        for r in team_rows(page.report)
    ] == [
        ("mash", 2, 2, 2, 20.0),
        ("police-dau", 3, 0, 0, None),
        ("hv-north", 3, 1, 1, 60.0),
    ]
    assert [r.figures.key for r in charted_teams(page.report)] == ["hv-north", "mash"]
    # Monday-to-Monday local weeks; their figures add up to the whole window's.
    assert [w.start.isoformat() for w in page.weeks] == ["2026-11-09", "2026-11-16"]
    assert [w.figures.referrals_received for w in page.weeks] == [4, 0]
    assert [w.figures.breaches for w in page.weeks] == [0, 1]
    for figure in ("referrals_received", "prompts_sent", "responses_total", "breaches"):
        assert sum(getattr(w.figures, figure) for w in page.weeks) == getattr(page.report, figure)


def add_police_breach(session_factory) -> None:
    """A fifth referral: police are asked and never answer, and the prompt breaches."""
    with session_factory.begin() as session:
        r5 = add_referral(session, "HO-R5", utc(17, 2))
        police = add_target(session, r5, 0, "role:police_dau", "pc-pat", utc(17, 2), "prompted")
        add_prompt(session, police, "pc-pat", utc(17, 2), utc(17, 2, 5))
        audit.record(
            session,
            "breach",
            at=utc(17, 23),
            referral_id="HO-R5",
            target="role:police_dau",
            recipient="pc-pat",
            detail="no response by the end of the working day",
        )


def cells(html: str, section: str) -> list[list[str]]:
    """The body rows of the first table after `section` (an id), as their cells' text."""
    body = html.split(f'id="{section}"')[1].split("<tbody>")[1].split("</tbody>")[0]
    return [
        [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


def test_the_pages_agency_team_and_coverage_figures_are_the_text_and_json_reports(
    session_factory, db_url: str, monkeypatch, capsys
) -> None:
    build_scenario(session_factory)
    add_police_breach(session_factory)
    window = parse_window("2026-11-09", "2026-11-22", LONDON)
    with session_factory() as session:
        report = build_report(session, window, LONDON)
        page = build_report_page(session, window, LONDON, GENERATED)
    monkeypatch.setenv("DATABASE_URL", db_url)
    args = ["report", "--since", "2026-11-09", "--until", "2026-11-22"]
    assert main([*args, "--format", "json"]) == 0
    json_report = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    text = capsys.readouterr().out

    # The page holds the report's value itself: nothing recomputed beside it.
    assert page.report == report
    police = GroupFigures("police", "police", "police", 4, 0, 3, 1, 0)
    assert [g for g in report.by_agency if g.key == "police"] == [police]
    assert json_report["breaches"]["by_agency"]["police"] == 1
    assert json_report["breaches"]["by_team"]["police-dau"] == 1
    assert json_report["coverage"]["by_agency"]["health"]["missed"] == 1
    assert json_report["coverage"]["by_agency"]["police"] == {
        "covered": 0,
        "pending": 2,
        "missed": 2,
        "not_asked": 1,
    }

    html = render_report(page, window_label="Handover report")
    # By agency type: asked, answered, response rate, breaches, unroutable, as the JSON has them.
    agencies = json_report["by_agency"]
    assert cells(html, "chart-breaches") == [
        [
            {"social_care": "Social care", "police": "Police", "health": "Health"}.get(
                key, "Not in the rota"
            ),
            str(g["asked"]),
            str(g["answered"]),
            "\u2014" if g["response_rate"] is None else f"{g['response_rate']:.0%}",
            str(g["breaches"]),
            str(g["unroutables"]),
        ]
        for key, g in agencies.items()
    ]
    assert ["Police", "4", "0", "0%", "1", "0"] in cells(html, "chart-breaches")
    # By team: the same figures, with the report's time to answer.
    teams = cells(html, "chart-teams")
    assert [row[0] for row in teams] == [
        f"{g['label']} ({key})" for key, g in json_report["by_team"].items()
    ]
    assert [[row[2], row[3], row[4], row[7], row[8]] for row in teams] == [
        [
            str(g["asked"]),
            str(g["answered"]),
            f"{g['response_rate']:.0%}",
            str(g["breaches"]),
            str(g["unroutables"]),
        ]
        for g in json_report["by_team"].values()
    ]
    assert teams[1] == [
        "Police-Dau (police-dau)",
        "Police",
        "4",
        "0",
        "0%",
        "\u2014",
        "\u2014",
        "1",
        "0",
    ]
    assert teams[2][5:7] == ["1 h 00 min", "1 h 00 min"]
    # Coverage: each state in words, by agency type, as the JSON counts it, and the one rule.
    assert cells(html, "coverage") == [
        [name, *(str(json_report["coverage"]["by_agency"][agency][s]) for s in STATES)]
        for agency, name in (
            ("social_care", "Social care"),
            ("police", "Police"),
            ("health", "Health"),
        )
    ]
    header = html.split('id="coverage"')[1].split("</thead>")[0]
    assert re.findall(r'<span class="state (\w+)">([^<]+)</span>', header) == [
        ("covered", "covered"),
        ("pending", "pending"),
        ("missed", "missed"),
        ("not_asked", "not asked"),
    ]
    assert f'<p class="rule">{escape(COVERAGE_RULE)}</p>' in html
    assert json_report["coverage"]["rule"] == COVERAGE_RULE and COVERAGE_RULE in text
    assert "all answered" not in html and "All three answered" not in html


STATES = ("covered", "pending", "missed", "not_asked")


def test_the_page_is_self_contained_accessible_and_holds_no_summary(page) -> None:
    html = render_report(page, window_label="Handover report from Mon 9 Nov to Sun 22 Nov")

    assert html.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'<svg role="img" aria-label="[^"]+"', html)) == 5
    assert "<script" not in html and "http" not in html and "@import" not in html
    assert SUMMARY not in html and "NARRATIVE" not in html
    for heading in ("The figures", "Time to respond", "Breaches", "Week by week"):
        assert f">{heading}</h2>" in html
    assert "<caption>By agency type</caption>" in html
    assert '<th scope="row">Hv-North (hv-north)</th><td>Health</td>' in html
    assert '<th scope="row">w/c 9 Nov</th><td class="num">4</td>' in html
    assert '<span class="when">Mon 16 Nov 17:00</span> <span class="stage">breached</span>' in html
    assert (
        "Latest week: referrals -4 on the week before; prompts sent -6 on the week before; "
        "responses -5 on the week before; breaches +1 on the week before." in html
    )
    assert "2026-11" not in html.split("<footer>")[0].split("</header>")[1]  # no ISO times


def test_report_html_writes_the_file_and_a_bad_path_is_a_clear_error(
    session_factory, db_url: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    build_scenario(session_factory)
    monkeypatch.setenv("DATABASE_URL", db_url)
    target = tmp_path / "report.html"

    assert main(["report", "--since", "2026-11-09", "--html", str(target)]) == 0
    assert capsys.readouterr().out == f"report written to {target}\n"
    html = target.read_text(encoding="utf-8")
    assert "Handover report from Mon 9 Nov 2026 00:00" in html
    with session_factory() as session:
        report = build_report(session, parse_window("2026-11-09", None, LONDON), LONDON)
    assert f'<span class="value">{report.prompts_sent}</span>' in html

    missing = tmp_path / "no-such-folder" / "report.html"
    assert main(["report", "--html", str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"handover: --html {missing}: No such file or directory\n"
    assert not missing.exists()


def test_a_county_of_teams_charts_the_slowest_fifteen_and_tables_them_all(page) -> None:
    report = replace(
        page.report,
        by_team=[
            GroupFigures(f"team-{n:02d}", f"Team {n:02d}", "health", 1, 1, 1, 0, 0)
            for n in range(1, 41)
        ],
        minutes_by_team={f"team-{n:02d}": [float(n)] for n in range(1, 41)},
    )
    county = replace(page, report=report)

    assert [r.figures.key for r in charted_teams(report)] == [
        f"team-{n:02d}" for n in range(40, 25, -1)
    ]
    html = render_report(county, window_label="Handover report")
    chart = html.split('id="chart-teams"')[1].split("<table>")[0]
    assert "Team 40" in chart and "Team 26" in chart and "Team 25" not in chart
    assert html.count('<th scope="row">Team ') == 40
    assert "the chart shows the 15 slowest, the table every team" in html


def test_a_recipient_nobody_could_reach_is_passed_over_in_words(session_factory) -> None:
    with session_factory.begin() as session:
        build_rota(session)
    at = datetime(2026, 11, 16, 9, 0, tzinfo=UTC)
    rows = [
        LogRow(at, "HO-R9", "prompt_scheduled", None, "hv-jo", "person:hv-jo", None),
        LogRow(at, "HO-R9", "unreachable", "dispatcher", "hv-jo", "person:hv-jo", None),
        LogRow(at, "HO-R9", "prompt_rerouted", "dispatcher", "sw-sam", "person:hv-jo", None),
        LogRow(at, "HO-R9", "prompt_sent", "dispatcher", "sw-sam", "person:hv-jo", None),
    ]
    with session_factory() as session:
        (timeline,) = build_timelines(rows, LONDON, ReportNames(RotaStore(session), {}))
    target = timeline.targets["person:hv-jo"]
    assert [(s.stage, s.words) for s in target.steps[1:]] == [
        ("unreachable", "Hv-Jo (hv-jo) could not be reached: passed over, on call told"),
        ("passed on", "Passed on to Sw-Sam (sw-sam)"),
        ("sent", "Prompt sent to Sw-Sam (sw-sam)"),
    ]
    assert target.outcome == "waiting"


@pytest.mark.parametrize(
    ("since", "until", "scans"), [("2026-06-01", "2026-11-30", True), ("2026-11-13", None, False)]
)
def test_a_window_holding_the_whole_log_is_read_by_a_scan_and_a_part_through_the_index(
    tmp_path: Path, since: str, until: str | None, scans: bool
) -> None:
    # The page's grouped reads (the targets', the counts' and the referrals' by week) keep the
    # window's bounds; SQLite compares them row by row when the window holds every row (the
    # scenario's log runs from the rota import on 1 June to 16 November).
    window = parse_window(since, until, LONDON)
    _, reads = audit_reads(
        tmp_path,
        build_scenario,
        lambda session: build_report_page(session, window, LONDON, GENERATED),
        naming="AS week",
    )
    assert len(reads) == 3
    for read in reads:
        assert ("+audit_log.at >= ?" in read.statement) is scans
        (step,) = read.steps
        assert ("at>?" in step) is not scans  # the `at` index's range, or none

"""The managers' report page: its data from the log (timelines, teams, weeks) and its HTML."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.cli import main
from bot.pages import charted_teams, render_report
from bot.services.logbook import parse_window
from bot.services.report_page import LogRow, Names, TeamTimes, build_report_page, build_timelines
from bot.services.reports import build_report
from rota.store import RotaStore
from tests.bot.test_logbook import SUMMARY, build_rota, build_scenario

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


def test_teams_breaches_and_weeks_are_the_reports_figures_cut_finer(page) -> None:
    assert page.teams == [
        TeamTimes("hv-north", "Hv-North", "health", 2, 55.0, 60.0, 1),
        TeamTimes("mash", "Mash", "social_care", 2, 20.0, 30.0, 0),
        TeamTimes("police-dau", "Police-Dau", "police", 3, 30.0, 60.0, 0),
    ]
    assert page.breaches_by_agency == {"health": 1}
    # Monday-to-Monday local weeks; their figures add up to the whole window's.
    assert [w.start.isoformat() for w in page.weeks] == ["2026-11-09", "2026-11-16"]
    assert [w.report.referrals_received for w in page.weeks] == [4, 0]
    assert [w.report.breaches for w in page.weeks] == [0, 1]
    for figure in ("referrals_received", "prompts_sent", "responses_total", "breaches"):
        assert sum(getattr(w.report, figure) for w in page.weeks) == getattr(page.report, figure)


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
    teams = [
        TeamTimes(f"team-{n:02d}", f"Team {n:02d}", "health", 1, float(n), float(n), 0)
        for n in range(1, 41)
    ]
    county = replace(page, teams=teams)

    assert [t.team_id for t in charted_teams(county)] == [
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
        (timeline,) = build_timelines(rows, LONDON, Names(RotaStore(session), {}))
    target = timeline.targets["person:hv-jo"]
    assert [(s.stage, s.words) for s in target.steps[1:]] == [
        ("unreachable", "Hv-Jo (hv-jo) could not be reached: passed over, on call told"),
        ("passed on", "Passed on to Sw-Sam (sw-sam)"),
        ("sent", "Prompt sent to Sw-Sam (sw-sam)"),
    ]
    assert target.outcome == "waiting"

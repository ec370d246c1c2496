"""The managers' report page as a manager opens it: written by `handover report --html` after a
real weekend, then looked at in the system's Chromium with the network cut off.

Refresh the screenshot the documentation shows (docs/report.png) with:

    HANDOVER_SCREENSHOT_DIR=docs .venv/bin/pytest -p no:cacheprovider -n 0 \
        tests/e2e/test_report_page.py
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e.conftest import DeploymentFactory
from tests.e2e.test_email_reach import CHROMIUM, CHROMIUM_ARGS
from tests.e2e.test_scenarios import acknowledge

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=LONDON)
TUESDAY_0900 = datetime(2026, 12, 29, 9, 0, tzinfo=LONDON)
TUESDAY_0930 = datetime(2026, 12, 29, 9, 30, tzinfo=LONDON)
WEDNESDAY_0800 = datetime(2026, 12, 30, 8, 0, tzinfo=LONDON)
SUMMARY = "Toddler left alone overnight; SUMMARY-PAGE-3307"
SCREENSHOT = "report.png"
SCREENSHOT_DIR = os.environ.get("HANDOVER_SCREENSHOT_DIR")
CHART_IDS = ("response-time", "teams", "breaches", "coverage", "trend")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_report_page_after_a_weekend_opens_offline_with_charts_and_timelines(
    new_deployment: DeploymentFactory, browser: Browser, tmp_path: Path
) -> None:
    deployment = new_deployment("sqlite", SATURDAY)
    deployment.start_server()
    referrals = []
    for ref, notify in (
        ("LCS-2026-PAGE-1", ["person:hv-jsmith", "team:gp-northgate", "role:police_dau"]),
        ("LCS-2026-PAGE-2", ["person:hv-jsmith"]),
    ):
        status, answer = deployment.api(
            "POST",
            "/api/referrals",
            {
                "external_ref": ref,
                "category": "neglect",
                "urgency": "standard",
                "referrer": "edt-amy",
                "notify": notify,
                "summary": SUMMARY,
            },
        )
        assert status == 201, answer
        referrals.append(answer["referral_id"])
    deployment.settle()
    deployment.advance(TUESDAY_0900)
    deployment.set_clock(TUESDAY_0930)
    # The deputy answers the first: not known to health (an acknowledgement alone is no answer).
    acknowledge(
        deployment, "hv-kpatel", referrals[0], action_id="handover_not_known", event="not_known"
    )
    deployment.advance(WEDNESDAY_0800)  # the second is never answered: it breaches

    page_file = tmp_path / "report.html"
    result = deployment.run("report", "--html", str(page_file))
    assert result.stdout == f"report written to {page_file}\n"
    html = page_file.read_text(encoding="utf-8")
    # Self-contained and minimal: nothing fetched from anywhere, no summary.
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)
    assert "@import" not in html and "<script" not in html
    assert "SUMMARY-PAGE" not in html

    requests: list[str] = []
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.route("**/*", lambda route: (requests.append(route.request.url), route.continue_()))
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    assert requests == [page_file.as_uri()]  # the page asked for nothing but itself

    assert page.locator("h1").inner_text() == "Handover report"
    # Every chart is drawn, visible, labelled, and has its table beside it.
    for chart in CHART_IDS:
        figure = page.locator(f"#chart-{chart}")
        svg = figure.locator("svg[role=img]")
        assert svg.is_visible(), chart
        box = svg.bounding_box()
        assert box is not None and box["width"] > 300 and box["height"] > 150, (chart, box)
        assert svg.get_attribute("aria-label")
        assert figure.locator("table").is_visible(), chart
    # Bars are drawn for the agencies that answered and for the breach.
    assert page.locator("#chart-response-time svg .bar rect").count() >= 1
    breach_rows = page.locator("#chart-breaches tbody tr")
    assert page.locator("#chart-breaches svg .bar rect").count() == breach_rows.count()
    by_agency = {
        row.locator("th").inner_text(): row.locator("td").all_inner_texts()
        for row in breach_rows.all()
    }
    # Police breached without ever answering: they are counted all the same.
    assert by_agency == {
        "Police": ["1", "0", "0%", "1", "0"],
        "Health": ["3", "1", "33%", "2", "0"],
    }
    breaches = [e for e in deployment.log() if e["event"] == "breach"]
    assert sum(int(cells[3]) for cells in by_agency.values()) == len(breaches)
    # Coverage: the states in words by agency type, and the rule in plain words.
    coverage = page.locator("#coverage")
    assert coverage.locator("thead").inner_text().split() == [
        "Agency",
        "type",
        "covered",
        "pending",
        "missed",
        "not",
        "asked",
    ]
    assert {
        row.locator("th").inner_text(): row.locator("td").all_inner_texts()
        for row in coverage.locator("tbody tr").all()
    } == {
        "Social care": ["2", "0", "0", "0"],  # the EDT referrer covers social care
        "Police": ["0", "0", "1", "1"],
        "Health": ["1", "0", "1", "0"],
    }
    assert "An agency is covered when one of its people answered" in coverage.inner_text()
    figures = page.locator(".figures").inner_text()
    assert "2\nreferrals received" in figures

    # A timeline per referral, names beside IDs, local times, in words.
    timelines = page.locator("#timelines article.referral")
    assert timelines.count() == 2
    first = page.locator(f"#ref-{referrals[0]}").locator("xpath=..")
    text = first.inner_text()
    assert f"{referrals[0]} · LCS-2026-PAGE-1" in text
    assert "Received Sat 26 Dec 02:10 from Amy" in text
    assert "Sat 26 Dec 02:10 held: Held for Kiran Patel (hv-kpatel) until Tue 29 Dec 09:00" in text
    assert "Tue 29 Dec 09:00 sent: Prompt sent to Kiran Patel (hv-kpatel)" in text
    assert (
        "Tue 29 Dec 09:30 answered: Answered by Kiran Patel (hv-kpatel): not known to them" in text
    )
    second = page.locator(f"#ref-{referrals[1]}").locator("xpath=..").inner_text()
    assert "reminded: Reminder sent to Kiran Patel (hv-kpatel)" in second
    assert "breached: Breached: no answer by the end of the working day" in second
    for raw in ("+00:00", "T09:00", "None", "{'"):
        assert raw not in page.locator("main").inner_text(), raw

    shot = Path(SCREENSHOT_DIR or tmp_path) / SCREENSHOT
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    page.close()

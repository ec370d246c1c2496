"""Email reach end to end: `handover serve` as a process, the Slack stand-in, a real SMTP relay
(the local one) and a real browser (the system's Chromium, driven by Playwright).

Riverside Medical Practice is on NHSmail, not on the council's Slack: its practice manager's
`contact` is `email`. A referral taken on Boxing Day night asks the practice; at 08:00 on the
first working morning the prompt arrives by email; the practice manager opens its "I hold
information" link on a phone-width screen with JavaScript off, chooses a time and a method, and
records it. The EDT card, the log and the page all show it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, sync_playwright

from bot.mail_standin import MailStandIn
from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import EDT_CHANNEL, wait_for

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=LONDON)
TUESDAY_0800 = datetime(2026, 12, 29, 8, 0, tzinfo=LONDON)
TUESDAY_0840 = datetime(2026, 12, 29, 8, 40, tzinfo=LONDON)
PRACTICE_MANAGER = "sam.bell@riverside.nhs.example"
CHROMIUM = "/usr/bin/chromium"
# Never a downloaded browser: the system's, headless, with nothing phoning home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = {"width": 375, "height": 812}
SCREENSHOT = "email-response-page.png"
# Set to a folder (docs/) to refresh the screenshot the documentation shows.
SCREENSHOT_DIR = os.environ.get("HANDOVER_SCREENSHOT_DIR")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (see .ci/run)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def relay() -> Iterator[MailStandIn]:
    with MailStandIn() as relay:
        yield relay


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_practice_on_nhsmail_answers_by_email_in_a_real_browser(
    backend: str,
    new_deployment: DeploymentFactory,
    relay: MailStandIn,
    browser: Browser,
    tmp_path: Path,
) -> None:
    deployment = new_deployment(backend, SATURDAY)
    deployment.extra_env.update(
        HANDOVER_SMTP_URL=relay.url,
        HANDOVER_MAIL_FROM="Handover <handover@wexcombe.example>",
        HANDOVER_PUBLIC_URL=deployment.base_url,
    )
    deployment.start_server()
    status, answer = deployment.api(
        "POST",
        "/api/referrals",
        {
            "external_ref": "WXC-2026-004187",
            "category": "domestic_abuse",
            "urgency": "standard",
            "referrer": "edt-amy",
            "notify": ["team:gp-riverside"],
            "summary": "SECRET-NARRATIVE never leaves the database",
        },
    )
    assert status == 201, answer
    referral_id = answer["referral_id"]
    assert answer["plan"][0] | {"due_at": None} == {
        "target": "team:gp-riverside",
        "recipient": "gp-riv-pm-bell",
        "via": "manager",
        "due_at": None,
        "immediate": False,
    }
    deployment.advance(SATURDAY.replace(hour=3))
    assert relay.messages() == []  # nothing before the practice opens

    # 08:00 on the first working morning (Monday 28th is the Boxing Day bank holiday).
    deployment.advance(TUESDAY_0800)
    [mail] = wait_for(lambda: relay.messages(to=PRACTICE_MANAGER))
    assert mail.email["Subject"] == f"Handover referral {referral_id}: please respond"
    text = mail.body()
    assert "SECRET-NARRATIVE" not in mail.raw.decode("utf-8", "replace")
    [sent] = [e for e in deployment.log(referral_id) if e["event"] == "prompt_sent"]
    assert (sent["recipient"], sent["at"]) == ("gp-riv-pm-bell", "2026-12-29T08:00:00+00:00")
    assert sent["detail"]["channel"] == "email"
    assert sent["detail"]["message_id"] == mail.message_id
    links = dict(re.findall(r"^(.+):\r?\n(http://\S+/respond/\S+?)\r?$", text, re.MULTILINE))
    assert links, text
    assert list(links) == [
        "Acknowledge",
        "I hold information",
        "Not known to us",
        "Someone else holds it",
    ]

    # The practice manager reads it at 08:40 on her phone, JavaScript off.
    deployment.set_clock(TUESDAY_0840)
    context = browser.new_context(java_script_enabled=False, viewport=PHONE)
    page = context.new_page()
    response = page.goto(links["I hold information"])
    assert response is not None and response.status == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert page.title() == f"I hold information: handover referral {referral_id} - Handover"
    assert page.locator("h1").inner_text() == "I hold information"
    assert "WXC-2026-004187" in page.locator("dl.facts").inner_text()
    # Nothing wider than the phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    # The keyboard reaches the skip link, then the form's fields in reading order.
    focused = []
    for _ in range(5):
        page.keyboard.press("Tab")
        focused.append(page.locator(":focus").evaluate("e => e.id || e.textContent.trim()"))
    assert focused == [
        "skip-link",
        "contact_by",
        "method-phone",
        "Record",
        "Acknowledge",  # the first of "Answer differently"
    ]
    for label in ("I will contact the social worker by", "How", "Phone call"):
        assert page.get_by_text(label, exact=True).is_visible()

    page.get_by_label("I will contact the social worker by").select_option(label="Today 11:00")
    page.get_by_label("Phone call").check()
    shot = Path(SCREENSHOT_DIR or tmp_path) / SCREENSHOT
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    with page.expect_navigation():
        page.get_by_role("button", name="Record").click()
    assert page.locator("h1").inner_text() == "Thank you: your answer is recorded"
    assert "Holds information, by you (Sam Bell, practice manager, Riverside Medical Practice)" in (
        page.locator("[role=status]").inner_text()
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    context.close()

    # The log, and the EDT card in Slack, show it.
    deployment.settle()
    [held] = [e for e in deployment.log(referral_id) if e["event"] == "has_information"]
    assert (held["actor"], held["at"], held["target"]) == (
        "gp-riv-pm-bell",
        "2026-12-29T08:40:00+00:00",
        "team:gp-riverside",
    )
    assert held["detail"]["contact_by"] == "2026-12-29T11:00:00+00:00"
    assert held["detail"]["method"] == "phone"

    def card_shows_it() -> bool:
        cards = [
            m
            for m in deployment.standin.channel(EDT_CHANNEL)
            if (m.get("metadata") or {}).get("event_type") == "handover_card"
        ]
        return bool(cards) and "holds information" in json.dumps(cards[-1]["blocks"])

    wait_for(card_shows_it)
    assert "SECRET-NARRATIVE" not in deployment.standin.all_text()

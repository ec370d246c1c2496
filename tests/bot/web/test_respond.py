"""The email response pages through the real web app (Flask's test client), on SQLite and
PostgreSQL: each answer as Slack offers it, recorded by the same service with the same
authorisation, and every refusal (forged, altered, expired, replayed, no CSRF token, a second
answer, someone not allowed) answered as the contract says and logged."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from itsdangerous import URLSafeSerializer
from slack_sdk import WebClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import TestResponse

from bot.clock import FixedClock
from bot.context import Services
from bot.delivery.kinds import ResponseKind
from bot.models import AuditEvent, Referral, ReferralStatus, Response, Target
from bot.response_links import LinkClaim, ResponseLinks
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from bot.web.app import create_app
from bot.web.http import create_web_app
from bot.web.respond import SECURITY_HEADERS
from tests.handlers.slack_payloads import (
    BOT_TOKEN,
    EDT_CHANNEL,
    NOW,
    SIGNING_SECRET,
    SUMMARY,
    Scenario,
    build_scenario,
)

PUBLIC_URL = "https://handover.wexcombe.example"
EXPIRES = NOW + timedelta(days=7)


@dataclass
class Pages:
    client: FlaskClient
    links: ResponseLinks
    scenario: Scenario
    slack: SlackStandIn
    clock: FixedClock
    factory: sessionmaker[Session]

    def path(self, answer: ResponseKind, person: str = "hv-kpatel", **claim) -> str:
        fields = {"prompt_id": self.scenario.prompt_id, "expires_at": EXPIRES, **claim}
        token = self.links.token(LinkClaim(person_id=person, answer=answer, **fields))
        return f"/respond/{token}"

    def form(self, path: str) -> tuple[TestResponse, str]:
        """GET a page, and its form's CSRF token."""
        page = self.client.get(path)
        found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        return page, found.group(1) if found else ""

    def answer(self, path: str, **fields: str) -> TestResponse:
        _, csrf = self.form(path)
        return self.client.post(path, data={"csrf_token": csrf, **fields})

    def events(self, name: str) -> list[AuditEvent]:
        with self.factory() as session:
            return list(
                session.scalars(
                    select(AuditEvent).where(AuditEvent.event == name).order_by(AuditEvent.id)
                )
            )


@pytest.fixture
def pages(session_factory: sessionmaker[Session]) -> Iterator[Pages]:
    with SlackStandIn(channels=[EDT_CHANNEL], allow_unknown_users=True, rate_limit=None) as slack:
        client = WebClient(base_url=slack.url, token=BOT_TOKEN)
        scenario = build_scenario(session_factory, client)
        clock = FixedClock(NOW)
        settings = Settings(
            slack_bot_token=BOT_TOKEN,
            slack_signing_secret=SIGNING_SECRET,
            slack_api_url=slack.url,
            edt_channel=EDT_CHANNEL,
            smtp_url="smtp://127.0.0.1:2525",
            mail_from="handover@wexcombe.example",
            public_url=PUBLIC_URL,
        )
        services = Services(settings, session_factory, clock)
        web = create_web_app(create_app(settings, client, services=services), services)
        links = ResponseLinks(SIGNING_SECRET, PUBLIC_URL)
        yield Pages(web.test_client(), links, scenario, slack, clock, session_factory)


def refusal(event: AuditEvent) -> dict:
    return json.loads(event.detail)


def assert_secured(response: TestResponse) -> None:
    for header, value in SECURITY_HEADERS.items():
        assert response.headers[header] == value
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


# ----- answering -------------------------------------------------------------------------------


def test_acknowledging_shows_the_prompt_records_once_and_tells_slack(pages: Pages) -> None:
    path = pages.path(ResponseKind.ACKNOWLEDGED)
    page, csrf = pages.form(path)
    assert page.status_code == 200 and csrf
    assert_secured(page)
    for text in (
        "Handover referral HO-TEST01",
        "LCS-2026-000123",
        "Domestic abuse",
        "Do you hold information about this child or family?",
        "You are answering as <strong>Hv Kpatel, worker, Health Visiting North</strong>",
        '<button type="submit" class="button">Acknowledge</button>',
    ):
        assert text in page.text
    assert SUMMARY not in page.text and "NARRATIVE" not in page.text
    assert "<script" not in page.text

    done = pages.client.post(path, data={"csrf_token": csrf})
    assert done.status_code == 303 and done.headers["Location"] == path
    assert_secured(done)
    thanks = pages.client.get(path)
    assert thanks.status_code == 200
    assert "Thank you: your answer is recorded" in thanks.text
    assert "<strong>Acknowledged</strong>, by you (Hv Kpatel" in thanks.text
    [event] = pages.events("acknowledged")
    assert (event.actor, event.at, event.target) == ("hv-kpatel", NOW, "person:hv-kpatel")
    with pages.factory() as session:
        assert session.get(Target, pages.scenario.target_id).state == "acknowledged"
    # Slack shows it as after a click: the prompt DM updated, a reply under the EDT card.
    [update] = pages.slack.calls("chat.update")
    assert update.args["ts"] == pages.scenario.dm_ts
    replies = [c for c in pages.slack.calls("chat.postMessage") if c.args.get("thread_ts")]
    assert [r.args["thread_ts"] for r in replies] == [pages.scenario.card_ts]


def test_i_hold_information_offers_the_modals_times_and_methods(pages: Pages) -> None:
    path = pages.path(ResponseKind.HAS_INFORMATION)
    page, csrf = pages.form(path)
    assert '<label for="contact_by">I will contact the social worker by</label>' in page.text
    slots = re.findall(r'<option value="([^"]+)">([^<]+)</option>', page.text)
    # Monday 09:12: today's whole hours from 10:00, then the next working day's four times.
    assert [label for _, label in slots] == [
        "Today 10:00", "Today 11:00", "Today 12:00", "Today 13:00", "Today 14:00",
        "Today 15:00", "Today 16:00", "Today 17:00",
        "Tue 17 Nov 10:00", "Tue 17 Nov 12:00", "Tue 17 Nov 14:00", "Tue 17 Nov 16:00",
    ]  # fmt: skip
    assert "<legend>How</legend>" in page.text
    assert 'id="method-phone"' in page.text and "Note in the case system" in page.text

    empty = pages.client.post(path, data={"csrf_token": csrf})
    assert empty.status_code == 422
    assert "There is a problem" in empty.text
    assert '<a href="#contact_by">Choose when you will contact the social worker.</a>' in (
        empty.text
    )
    assert '<a href="#method">Choose how you will contact the social worker.</a>' in empty.text
    assert pages.events("has_information") == []

    chosen = slots[2][0]
    done = pages.answer(path, contact_by=chosen, method="phone")
    assert done.status_code == 303
    [event] = pages.events("has_information")
    assert json.loads(event.detail) | {"prompt_id": None} == {
        "prompt_id": None,
        "contact_by": "2026-11-16T12:00:00+00:00",
        "method": "phone",
        "followup_id": 1,  # the promise the social worker is asked about (closing-the-loop.md)
    }


def test_someone_else_holds_it_searches_the_rota_without_javascript(pages: Pages) -> None:
    path = pages.path(ResponseKind.REDIRECTED)
    own_team = pages.client.get(path)
    options = re.findall(r'<option value="([a-z-]+)"', own_team.text)
    assert options == ["hv-cover", "hv-jones", "hv-lead", "hv-senior"]  # never themselves
    found = pages.client.get(f"{path}?q=mgr")
    assert re.findall(r'<option value="([a-z-]+)"', found.text) == ["edt-mgr", "gp-mgr"]
    done = pages.answer(path, colleague="hv-jones")
    assert done.status_code == 303
    [event] = pages.events("redirected")
    assert json.loads(event.detail)["to"] == "person:hv-jones"
    with pages.factory() as session:
        specs = session.scalars(select(Target.spec).where(Target.redirected_from_id.is_not(None)))
        assert list(specs) == ["person:hv-jones"]


# ----- refusals --------------------------------------------------------------------------------


def test_a_forged_link_is_a_404_and_logged(pages: Pages) -> None:
    page = pages.client.get("/respond/not-a-link-of-ours")
    assert page.status_code == 404 and "This link does not work" in page.text
    assert_secured(page)
    [event] = pages.events("response_refused")
    assert (event.referral_id, event.actor) == (None, None)
    assert refusal(event) == {"via": "email link", "reason": "forged"}


def test_an_altered_link_is_a_404_and_logged(pages: Pages) -> None:
    token = pages.path(ResponseKind.ACKNOWLEDGED).rsplit("/", 1)[1]
    body, signature = token.split(".")
    serializer = URLSafeSerializer("another key")
    claimed = serializer.load_payload(body.encode())
    claimed["p"] = pages.scenario.role_prompt_id  # someone else's prompt, same signature
    changed = serializer.dump_payload(claimed).decode() + "." + signature
    page = pages.client.post(f"/respond/{changed}", data={"csrf_token": "x"})
    assert page.status_code == 404
    [event] = pages.events("response_refused")
    assert refusal(event) == {"via": "email link", "reason": "altered"}
    assert pages.events("acknowledged") == []


def test_an_expired_link_is_a_410_and_logged(pages: Pages) -> None:
    path = pages.path(ResponseKind.ACKNOWLEDGED, expires_at=NOW)
    page = pages.client.get(path)
    assert page.status_code == 410 and "This link has expired" in page.text
    [event] = pages.events("response_refused")
    assert (event.referral_id, event.actor, event.target) == (
        "HO-TEST01",
        "hv-kpatel",
        "person:hv-kpatel",
    )
    assert refusal(event) == {
        "via": "email link",
        "reason": "expired",
        "response": "acknowledged",
        "prompt_id": pages.scenario.prompt_id,
    }


def test_a_post_without_its_csrf_token_records_nothing_and_is_logged(pages: Pages) -> None:
    path = pages.path(ResponseKind.ACKNOWLEDGED)
    other_form = pages.form(pages.path(ResponseKind.NOT_KNOWN))[1]
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": other_form}):
        page = pages.client.post(path, data=data)
        assert page.status_code == 400 and "This form has expired" in page.text
        assert f'href="{path}"' in page.text
    assert pages.events("acknowledged") == []
    assert [refusal(e)["reason"] for e in pages.events("response_refused")] == ["csrf"] * 3
    # A form left open longer than 12 hours is stale too.
    _, csrf = pages.form(path)
    pages.clock.advance(timedelta(hours=12, minutes=1))
    assert pages.client.post(path, data={"csrf_token": csrf}).status_code == 400


def test_a_replayed_form_and_a_second_answer_show_who_answered_and_are_logged(
    pages: Pages,
) -> None:
    path = pages.path(ResponseKind.ACKNOWLEDGED)
    _, csrf = pages.form(path)
    assert pages.client.post(path, data={"csrf_token": csrf}).status_code == 303
    pages.clock.advance(timedelta(minutes=3))
    replay = pages.client.post(path, data={"csrf_token": csrf})
    assert replay.status_code == 409
    assert "Thank you: your answer is recorded" in replay.text  # it was theirs

    # Their deputy opens a link of their own: the answer already given, by whom and when.
    cover = pages.path(ResponseKind.ACKNOWLEDGED, person="hv-cover")
    page = pages.client.get(cover)
    assert page.status_code == 200
    assert "This prompt has already been answered" in page.text
    assert "<strong>Acknowledged</strong>, by Hv Kpatel, worker, Health Visiting North" in page.text
    assert "Mon 16 Nov 2026 09:12 GMT" in page.text
    second = pages.client.post(cover, data={"csrf_token": pages.links.form_token(cover[9:], NOW)})
    assert second.status_code == 409
    with pages.factory() as session:
        assert len(session.scalars(select(Response)).all()) == 1
    assert [(e.actor, refusal(e)["reason"]) for e in pages.events("response_refused")] == [
        ("hv-kpatel", "already answered"),
        ("hv-cover", "already answered"),
    ]


def test_an_acknowledged_prompt_may_still_be_answered_not_known_by_email(pages: Pages) -> None:
    """Seeing a prompt is not an answer (docs/coverage.md): after an acknowledgement, the deputy's
    "Not known to us" link still records."""
    path = pages.path(ResponseKind.ACKNOWLEDGED)
    _, csrf = pages.form(path)
    assert pages.client.post(path, data={"csrf_token": csrf}).status_code == 303
    cover = pages.path(ResponseKind.NOT_KNOWN, person="hv-cover")
    _, csrf = pages.form(cover)
    assert pages.client.post(cover, data={"csrf_token": csrf}).status_code == 303
    with pages.factory() as session:
        kinds = [r.kind for r in session.scalars(select(Response).order_by(Response.id))]
    assert kinds == ["acknowledged", "not_known"]
    [event] = pages.events("not_known")
    assert event.actor == "hv-cover"


def test_someone_not_allowed_is_refused_by_the_same_rule_as_in_slack(pages: Pages) -> None:
    page = pages.client.get(pages.path(ResponseKind.ACKNOWLEDGED, person="hv-jones"))
    assert page.status_code == 403 and "You cannot answer this prompt" in page.text
    [event] = pages.events("response_refused")
    assert event.actor == "hv-jones"
    assert refusal(event) | {"prompt_id": None} == {
        "response": "acknowledged",
        "prompt_id": None,
        "via": "email link",
        "in_rota": True,
    }


def test_a_closed_referral_takes_no_answer(pages: Pages) -> None:
    path = pages.path(ResponseKind.NOT_KNOWN)
    _, csrf = pages.form(path)
    with pages.factory.begin() as session:
        session.get(Referral, "HO-TEST01").status = ReferralStatus.CLOSED
    assert "This referral is closed" in pages.client.get(path).text
    assert pages.client.post(path, data={"csrf_token": csrf}).status_code == 409
    assert pages.events("not_known") == []


def test_the_stylesheet_is_served_with_the_same_headers(pages: Pages) -> None:
    css = pages.client.get("/respond/static/respond.css")
    assert css.status_code == 200 and css.mimetype == "text/css"
    assert_secured(css)

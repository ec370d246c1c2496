"""The contact check answered by email (docs/closing-the-loop.md, docs/email.md), through the
real web app (Flask's test client), on SQLite and PostgreSQL: its two signed links record
"Yes, contact made" / "No, contact missed" through the service the Slack buttons use, once, by
someone who may say so; forged, altered, expired, CSRF-less and second answers are refused and
logged as for a prompt's links."""

from __future__ import annotations

import json
from datetime import timedelta

from itsdangerous import URLSafeSerializer
from sqlalchemy import select

from bot.models import ContactFollowup, ContactState, OutboxMessage, Response
from bot.response_links import ContactAnswer, LinkClaim
from tests.bot.web.test_respond import EXPIRES, Pages, assert_secured, refusal
from tests.bot.web.test_respond import pages as pages  # the fixture
from tests.handlers.slack_payloads import NOW

PROMISED = NOW + timedelta(hours=1)


def followup(pages: Pages) -> int:
    """hv-kpatel promised to phone by NOW + 1 h; edt-amy referred."""
    with pages.factory.begin() as session:
        response = Response(
            referral_id="HO-TEST01",
            target_id=pages.scenario.target_id,
            prompt_id=pages.scenario.prompt_id,
            kind="has_information",
            responder_id="hv-kpatel",
            at=NOW,
        )
        session.add(response)
        session.flush()
        promise = ContactFollowup(
            referral_id="HO-TEST01",
            target_id=pages.scenario.target_id,
            response_id=response.id,
            professional_id="hv-kpatel",
            method="phone",
            contact_by=PROMISED,
            referrer_id="edt-amy",
            owner_team=None,
        )
        session.add(promise)
        session.flush()
        return promise.id


def path(pages: Pages, followup_id: int, answer: ContactAnswer, person: str, **claim) -> str:
    fields = {"expires_at": EXPIRES, **claim}
    token = pages.links.token(LinkClaim(followup_id, person, answer, **fields))
    return f"/respond/{token}"


def state(pages: Pages, followup_id: int) -> tuple[str, str | None]:
    with pages.factory() as session:
        found = session.get(ContactFollowup, followup_id)
        assert found is not None
        return found.state, found.answered_by


def test_contact_made_shows_the_check_records_once_as_slack_does(pages: Pages) -> None:
    fid = followup(pages)
    made = path(pages, fid, ContactAnswer.MADE, "edt-amy")
    page, csrf = pages.form(made)
    assert page.status_code == 200 and csrf
    assert_secured(page)
    for text in (
        "Handover referral HO-TEST01",
        "<h1>Yes, contact made</h1>",
        "Did the contact happen?",
        "Hv Kpatel, worker, Health Visiting North",
        "You are answering as <strong>Edt Amy",
        '<button type="submit" class="button">Yes, contact made</button>',
        "No, contact missed</a>",
    ):
        assert text in page.text, text
    assert "<script" not in page.text and 'name="viewport"' in page.text
    assert "NARRATIVE" not in page.text

    pages.clock.advance(timedelta(minutes=90))
    done = pages.client.post(made, data={"csrf_token": csrf})
    assert done.status_code == 303 and done.headers["Location"] == made
    assert_secured(done)
    thanks = pages.client.get(made)
    assert "Thank you: your answer is recorded" in thanks.text
    assert "<strong>Yes, contact made</strong>, by you (Edt Amy" in thanks.text
    [event] = pages.events("contact_confirmed")
    assert (event.actor, event.recipient, event.at) == (
        "edt-amy",
        "hv-kpatel",
        NOW + timedelta(minutes=90),
    )
    assert json.loads(event.detail)["reason"] == "answered"
    assert state(pages, fid) == (ContactState.CONFIRMED, "edt-amy")


def test_contact_missed_is_recorded_and_owes_what_a_slack_click_owes(pages: Pages) -> None:
    fid = followup(pages)
    missed = path(pages, fid, ContactAnswer.MISSED, "edt-amy")
    assert pages.answer(missed).status_code == 303
    [event] = pages.events("contact_missed")
    assert (event.actor, event.recipient) == ("edt-amy", "hv-kpatel")
    assert json.loads(event.detail)["reason"] == "answered"
    assert pages.events("contact_confirmed") == []
    assert state(pages, fid) == (ContactState.MISSED, "edt-amy")
    with pages.factory() as session:
        owed = session.scalars(
            select(OutboxMessage.kind).where(OutboxMessage.kind != "prompt")
        ).all()
    assert "contact_missed" in owed


def test_a_second_answer_shows_who_answered_records_nothing_and_is_logged(pages: Pages) -> None:
    fid = followup(pages)
    assert pages.answer(path(pages, fid, ContactAnswer.MADE, "edt-amy")).status_code == 303
    other = path(pages, fid, ContactAnswer.MISSED, "edt-mgr")  # oversight may answer too
    viewed = pages.client.get(other)
    assert viewed.status_code == 200 and 'name="csrf_token"' not in viewed.text
    token = other.rsplit("/", 1)[1]
    second = pages.client.post(
        other, data={"csrf_token": pages.links.form_token(token, pages.clock.now())}
    )
    assert second.status_code == 409
    assert_secured(second)
    assert "This contact check has already been answered" in second.text
    assert "<strong>Yes, contact made</strong>, by Edt Amy" in second.text
    assert pages.events("contact_missed") == []
    [event] = pages.events("response_refused")
    assert event.actor == "edt-mgr" and event.referral_id == "HO-TEST01"
    assert refusal(event) == {
        "via": "email link",
        "reason": "already answered",
        "response": "contact_missed",
        "followup_id": fid,
    }
    assert state(pages, fid) == (ContactState.CONFIRMED, "edt-amy")


def test_someone_not_allowed_is_refused_by_the_same_rule_as_in_slack(pages: Pages) -> None:
    fid = followup(pages)
    page = pages.answer(path(pages, fid, ContactAnswer.MADE, "edt-bob"))
    assert page.status_code == 403 and "You cannot answer this contact check" in page.text
    assert_secured(page)
    [event] = pages.events("response_refused")
    assert (event.actor, event.recipient) == ("edt-bob", "hv-kpatel")
    assert refusal(event) == {
        "response": "contact_made",
        "followup_id": fid,
        "via": "email link",
    }
    assert pages.events("contact_confirmed") == []
    assert state(pages, fid) == (ContactState.AWAITING, None)


def test_forged_altered_and_expired_contact_links_are_refused_and_logged(pages: Pages) -> None:
    fid = followup(pages)
    made = path(pages, fid, ContactAnswer.MADE, "edt-amy")
    body, signature = made.rsplit("/", 1)[1].split(".")
    serializer = URLSafeSerializer("another key")
    claimed = serializer.load_payload(body.encode())
    claimed["a"] = "contact_missed"  # the other answer, same signature
    altered = serializer.dump_payload(claimed).decode() + "." + signature
    assert pages.client.post(f"/respond/{altered}", data={"csrf_token": "x"}).status_code == 404
    assert pages.client.get("/respond/not-a-link-of-ours").status_code == 404
    expired = pages.client.get(path(pages, fid, ContactAnswer.MADE, "edt-amy", expires_at=NOW))
    assert expired.status_code == 410 and "This link has expired" in expired.text
    assert_secured(expired)
    altered_event, forged_event, expired_event = pages.events("response_refused")
    assert refusal(altered_event) == {"via": "email link", "reason": "altered"}
    assert refusal(forged_event) == {"via": "email link", "reason": "forged"}
    assert (expired_event.referral_id, expired_event.actor, expired_event.recipient) == (
        "HO-TEST01",
        "edt-amy",
        "hv-kpatel",
    )
    assert refusal(expired_event) == {
        "via": "email link",
        "reason": "expired",
        "response": "contact_made",
        "followup_id": fid,
    }
    assert state(pages, fid) == (ContactState.AWAITING, None)


def test_a_post_without_its_csrf_token_records_nothing_and_is_logged(pages: Pages) -> None:
    fid = followup(pages)
    made = path(pages, fid, ContactAnswer.MADE, "edt-amy")
    other_form = pages.form(path(pages, fid, ContactAnswer.MISSED, "edt-amy"))[1]
    for data in ({}, {"csrf_token": "forged"}, {"csrf_token": other_form}):
        page = pages.client.post(made, data=data)
        assert page.status_code == 400 and "This form has expired" in page.text
    assert [refusal(e)["reason"] for e in pages.events("response_refused")] == ["csrf"] * 3
    assert pages.events("contact_confirmed") == []
    assert state(pages, fid) == (ContactState.AWAITING, None)


def test_a_link_to_a_contact_check_handover_does_not_know_records_nothing(pages: Pages) -> None:
    gone = path(pages, 99999, ContactAnswer.MADE, "edt-amy")
    assert "no longer in Handover" in pages.client.get(gone).text
    csrf = pages.links.form_token(gone.rsplit("/", 1)[1], pages.clock.now())
    page = pages.client.post(gone, data={"csrf_token": csrf})
    assert page.status_code == 404 and "no longer in Handover" in page.text
    [event] = pages.events("response_refused")
    assert refusal(event)["reason"] == "contact check not found"

"""The referral modal over real HTTP: `/handover` opens it, its submission records the referral,
bad input is answered in the modal keyed by block_id, and its external selects search the rota.

The bot runs in-process (create_app + create_web_app) against the Slack stand-in, on SQLite and
PostgreSQL; requests are signed as Slack signs them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from bot.models import AuditEvent, Referral, Target
from handlers import ids
from tests.bot.test_api import CONTRACT_CATEGORIES
from tests.e2e.harness import modal_state
from tests.handlers.slack_payloads import (
    SAMPLE_KEYS,
    Harness,
    HttpAnswer,
    block_suggestion,
    build_rota,
    running_bot,
    slack_user,
    view_submission,
    wait_for,
)

AMY = slack_user("edt-amy")  # referrer
BOB = slack_user("edt-bob")  # EDT, without the referrer permission
SUMMARY = "Baby seen with bruising by neighbour; SUMMARY-MODAL-9931"
BLOCK_IDS = [
    "external_ref",
    "category",
    "urgency",
    "notify_people",
    "notify_teams",
    "notify_roles",
]


@pytest.fixture
def bot(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    with session_factory.begin() as session:
        build_rota(session)
    with running_bot(session_factory, in_process=True) as harness:
        yield harness


def good_state(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "external_ref": "LCS-2026-000777",
        "category": "physical_abuse",
        "urgency": "urgent",
        "people": ("hv-kpatel",),
        "teams": ("gp-northgate",),
        "roles": ("police_dau",),
        "summary": SUMMARY,
    }
    fields.update(changes)
    return modal_state(**fields)


def submit(bot: Harness, user: str, state: dict[str, Any], channel: str = "C0EDTCARDS") -> Any:
    payload = view_submission(
        user,
        ids.REFERRAL_MODAL,
        private_metadata=json.dumps({"channel_id": channel}),
        values=state,
    )
    answer = bot.send_payload(payload)
    assert answer.status == 200, answer.body
    return answer.json if answer.body else None


def counts(session_factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with session_factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Referral)) or 0,
            session.scalar(select(func.count()).select_from(Target)) or 0,
            session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
        )


def test_payload_shapes_follow_the_slack_samples() -> None:
    payload = view_submission(AMY, ids.REFERRAL_MODAL, private_metadata="{}", values={})
    assert set(payload) <= SAMPLE_KEYS["view_submission"]


def test_slash_command_opens_the_modal_with_the_contract_block_ids(bot: Harness) -> None:
    answer, _ = bot.send_command(AMY, "")
    assert answer.status == 200
    (call,) = wait_for(lambda: bot.calls("views.open"))
    assert call.status == 200 and call.response["ok"] is True
    assert call.args["trigger_id"] == "13345224609.738474920.8088930838d88f008e2"
    view = call.args["view"]
    assert view["callback_id"] == ids.REFERRAL_MODAL
    assert [b["block_id"] for b in view["blocks"] if b["type"] == "input"] == BLOCK_IDS
    # No free text: the only typed field is the case system's reference.
    typed = [
        b["block_id"]
        for b in view["blocks"]
        if b.get("element", {}).get("type") == "plain_text_input"
    ]
    assert typed == ["external_ref"]
    # Option values are the contract's words (docs/reference/slack.md).
    chosen = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert [o["value"] for o in chosen["category"]["options"]] == list(CONTRACT_CATEGORIES)
    assert [o["value"] for o in chosen["urgency"]["options"]] == ["urgent", "standard"]
    selects = {
        b["block_id"]: b["element"]
        for b in view["blocks"]
        if b["type"] == "input" and b["element"]["type"] == "multi_external_select"
    }
    assert {k: v["action_id"] for k, v in selects.items()} == {
        "notify_people": ids.ACTION_NOTIFY_PEOPLE,
        "notify_teams": ids.ACTION_NOTIFY_TEAMS,
        "notify_roles": ids.ACTION_NOTIFY_ROLES,
    }
    assert json.loads(view["private_metadata"]) == {"channel_id": "C0SOMEWHERE"}
    assert [v["callback_id"] for v in bot.standin.views()] == [ids.REFERRAL_MODAL]


def test_non_referrers_are_refused_the_modal_and_the_submission(
    bot: Harness, session_factory: sessionmaker[Session]
) -> None:
    for user in (BOB, "U0NOTINROTA"):
        answer, url = bot.send_command(user, "")
        assert answer.status == 200
        (refusal,) = wait_for(lambda url=url: bot.catcher.answers(url))
        assert refusal["response_type"] == "ephemeral"
        assert "Only EDT referrers" in refusal["text"]
        assert submit(bot, user, good_state()) == {
            "response_action": "errors",
            "errors": {"external_ref": "Only EDT referrers may post referrals."},
        }
    assert bot.calls("views.open") == []
    assert counts(session_factory) == (0, 0, 0)


def test_a_submission_records_the_referral_and_shows_the_plan_privately(
    bot: Harness, session_factory: sessionmaker[Session]
) -> None:
    assert submit(bot, AMY, good_state()) is None  # a plain ack closes the modal
    with session_factory() as session:
        (referral,) = session.scalars(select(Referral))
        assert (referral.external_ref, referral.category, referral.urgency) == (
            "LCS-2026-000777",
            "physical_abuse",
            "urgent",
        )
        # A summary smuggled into the submission's state is ignored: nothing typed in Slack
        # reaches the database.
        assert (referral.source, referral.referrer_id, referral.summary) == (
            "slack",
            "edt-amy",
            "",
        )
        assert SUMMARY not in json.dumps([e.detail for e in session.scalars(select(AuditEvent))])
        targets = session.scalars(select(Target).order_by(Target.position))
        assert [t.spec for t in targets] == [
            "person:hv-kpatel",
            "team:gp-northgate",
            "role:police_dau",
        ]
        received = session.scalars(
            select(AuditEvent).where(AuditEvent.event == "referral_received")
        ).one()
        assert received.actor == "edt-amy" and json.loads(received.detail)["source"] == "slack"
        referral_id = referral.referral_id
    assert bot.wakes  # the dispatcher is asked to send what is due at once
    (ephemeral,) = wait_for(lambda: bot.calls("chat.postEphemeral"))
    assert ephemeral.args["channel"] == "C0EDTCARDS" and ephemeral.args["user"] == AMY
    assert f"Handover referral {referral_id} received" == ephemeral.args["text"]
    plan = json.dumps(ephemeral.args["blocks"])
    assert "person:hv-kpatel" in plan and "role:police_dau" in plan
    assert "SUMMARY-MODAL" not in bot.standin.all_text()


# Each case: what is changed in a good submission, and the errors expected (exactly, or by block).
BAD_INPUT: dict[str, tuple[dict[str, Any], dict[str, str] | set[str]]] = {
    "bad case ref": (
        {"external_ref": "LCS 2026/000777!"},
        {"external_ref": "must be 1 to 64 of the characters A-Z a-z 0-9 . _ : / -"},
    ),
    "no targets": (
        {"people": (), "teams": (), "roles": ()},
        {"notify_people": "Choose at least one professional, team or role."},
    ),
    "no category": ({"category": None}, {"category"}),
    "no urgency": ({"urgency": None}, {"urgency"}),
    "unknown team": ({"teams": ("gp-northgate", "gp-nowhere")}, {"notify_teams"}),
    "unknown role": ({"roles": ("astronaut",)}, {"notify_roles"}),
    "unknown person": ({"people": ("hv-kpatel", "hv-nobody")}, {"notify_people"}),
    "too many targets": (
        {"people": tuple(f"hv-{n:02d}" for n in range(51))},
        {"notify_people": "Choose at most 50 professionals, teams and roles in all."},
    ),
    "a target chosen twice": (
        {"people": ("hv-kpatel", "hv-kpatel")},
        {"notify_people": "person:hv-kpatel is chosen twice."},
    ),
    "several": (
        {"external_ref": "", "people": (), "teams": (), "roles": ()},
        {"external_ref", "notify_people"},
    ),
}


def test_bad_input_is_answered_in_the_modal_keyed_by_block_id(
    bot: Harness, session_factory: sessionmaker[Session]
) -> None:
    for case, (changes, errors) in BAD_INPUT.items():
        answer = submit(bot, AMY, good_state(**changes))
        assert answer["response_action"] == "errors", case
        if isinstance(errors, dict):
            assert answer["errors"] == errors, case
        else:
            assert set(answer["errors"]) == errors, (case, answer)
        assert set(answer["errors"]) <= set(BLOCK_IDS), case
        assert all(0 < len(message) <= 150 for message in answer["errors"].values()), case
        assert "SUMMARY-MODAL" not in json.dumps(answer), case
    assert counts(session_factory) == (0, 0, 0)
    assert bot.calls("chat.postEphemeral") == []
    assert bot.wakes == []


def test_a_case_reference_pasted_with_spaces_around_it_is_accepted(
    bot: Harness, session_factory: sessionmaker[Session]
) -> None:
    assert submit(bot, AMY, good_state(external_ref="  LCS-2026-000778\n")) is None
    with session_factory() as session:
        assert session.scalars(select(Referral.external_ref)).all() == ["LCS-2026-000778"]


def test_the_same_case_reference_twice(
    bot: Harness, session_factory: sessionmaker[Session]
) -> None:
    assert submit(bot, AMY, good_state()) is None
    before = counts(session_factory)
    # The same referral again (a double click on Send): one referral, still accepted.
    assert submit(bot, AMY, good_state()) is None
    assert counts(session_factory)[:2] == before[:2]
    with session_factory() as session:
        referral_id = session.scalars(select(Referral.referral_id)).one()
    # Different details under the same case reference: refused, naming the first referral.
    answer = submit(bot, AMY, good_state(category="neglect"))
    assert answer == {
        "response_action": "errors",
        "errors": {
            "external_ref": f"This case reference was already used for referral {referral_id} "
            "with different details."
        },
    }
    assert counts(session_factory)[:2] == before[:2]


def options(answer: HttpAnswer) -> list[str]:
    assert answer.status == 200, answer.body
    return [option["value"] for option in answer.json["options"]]


def test_external_selects_search_people_teams_and_roles(bot: Harness) -> None:
    def ask(action_id: str, block_id: str, value: str) -> list[str]:
        return options(bot.send_payload(block_suggestion(AMY, action_id, block_id, value)))

    assert ask(ids.ACTION_NOTIFY_PEOPLE, "notify_people", "patel") == ["hv-kpatel"]
    assert ask(ids.ACTION_NOTIFY_PEOPLE, "notify_people", "HV-") == [
        "hv-cover",
        "hv-jones",
        "hv-kpatel",
        "hv-lead",
        "hv-senior",
    ]
    assert ask(ids.ACTION_NOTIFY_TEAMS, "notify_teams", "north") == ["hv-north", "gp-northgate"]
    assert ask(ids.ACTION_NOTIFY_ROLES, "notify_roles", "pol") == ["police_dau"]
    assert ask(ids.ACTION_NOTIFY_ROLES, "notify_roles", "") == ["edt_manager", "police_dau"]
    assert ask(ids.ACTION_NOTIFY_TEAMS, "notify_teams", "%") == []  # LIKE wildcards are literal
    labels = bot.send_payload(block_suggestion(AMY, ids.ACTION_NOTIFY_PEOPLE, "x", "kpatel")).json
    assert labels["options"][0]["text"] == {
        "type": "plain_text",
        "text": "Hv Kpatel — worker, Health Visiting North",
    }

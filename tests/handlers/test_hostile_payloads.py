"""Correctly signed but malformed payloads, an unreachable database, and typed text in commands,
through signed Slack requests over real HTTP (SQLite and PostgreSQL).

Bad input gets the usual answer (a field error in the modal, a private note, empty options) and
changes nothing; nothing a person typed is echoed into Slack.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from bot.db import create_db_engine, make_session_factory
from bot.models import AuditEvent, OutboxMessage, Referral, Response, Target
from handlers import ids
from handlers.blocks.home import HOME_NEXT
from handlers.blocks.response import (
    ACTION_COLLEAGUE,
    ACTION_CONTACT_BY,
    ACTION_METHOD,
    BLOCK_COLLEAGUE,
    BLOCK_CONTACT_BY,
    BLOCK_METHOD,
)
from handlers.guards import DATABASE_DOWN
from tests.e2e.harness import modal_state
from tests.handlers.slack_payloads import (
    EDT_CHANNEL,
    Harness,
    HttpAnswer,
    Scenario,
    block_actions,
    block_suggestion,
    has_info_values,
    redirect_values,
    running_bot,
    sign,
    slack_user,
    view_submission,
    wait_for,
)

KPATEL = slack_user("hv-kpatel")
AMY = slack_user("edt-amy")
NOT_KNOWN_PROMPT = "This prompt is no longer known to Handover."
CHOOSE_TIME = "Choose when you will contact the social worker."
CHOOSE_METHOD = "Choose how you will contact the social worker."
CHOOSE_COLLEAGUE = "Choose the colleague who holds the information."


def nothing_recorded(session_factory: sessionmaker[Session], scenario: Scenario) -> None:
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Response)) == 0
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0
        assert session.get(Target, scenario.target_id).state == "prompted"
        assert session.scalar(select(func.count()).select_from(Target)) == 3
        for row_id in scenario.escalation_ids:
            assert session.get(OutboxMessage, row_id).state == "pending"


def modal_answer(answer: HttpAnswer) -> dict[str, Any]:
    assert answer.status == 200, answer.body
    return answer.json


def metadata(scenario: Scenario, prompt_id: Any = None) -> str:
    return json.dumps(
        {
            "prompt_id": scenario.prompt_id if prompt_id is None else prompt_id,
            "channel": scenario.dm_channel,
            "message_ts": scenario.dm_ts,
        }
    )


def phone() -> dict[str, Any]:
    return {ACTION_METHOD: {"type": "radio_buttons", "selected_option": {"value": "phone"}}}


# ----- malformed modal state ----------------------------------------------------------------

HAS_INFO_STATES: dict[str, tuple[Any, dict[str, str]]] = {
    "block is a string": (
        {BLOCK_CONTACT_BY: "x"},
        {BLOCK_CONTACT_BY: CHOOSE_TIME, BLOCK_METHOD: CHOOSE_METHOD},
    ),
    "action is a list": (
        {BLOCK_CONTACT_BY: {ACTION_CONTACT_BY: []}, BLOCK_METHOD: phone()},
        {BLOCK_CONTACT_BY: CHOOSE_TIME},
    ),
    "state is null": (None, {BLOCK_CONTACT_BY: CHOOSE_TIME, BLOCK_METHOD: CHOOSE_METHOD}),
    "value is a number": (has_info_values(5), {BLOCK_CONTACT_BY: CHOOSE_TIME}),
    "value is a list": (has_info_values(["x"]), {BLOCK_CONTACT_BY: CHOOSE_TIME}),
    "method is a list": (
        {
            BLOCK_CONTACT_BY: has_info_values("2026-11-16T14:00:00+00:00")[BLOCK_CONTACT_BY],
            BLOCK_METHOD: {ACTION_METHOD: {"selected_option": {"value": ["phone"]}}},
        },
        {BLOCK_METHOD: CHOOSE_METHOD},
    ),
}


def test_malformed_has_info_state_is_a_field_error(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    for case, (values, errors) in HAS_INFO_STATES.items():
        payload = view_submission(
            KPATEL, ids.HAS_INFO_MODAL, private_metadata=metadata(scenario), values={}
        )
        if values is None:
            payload["view"]["state"] = None
        else:
            payload["view"]["state"]["values"] = values
        answer = modal_answer(bot.send_payload(payload))
        assert answer == {"response_action": "errors", "errors": errors}, case
    nothing_recorded(session_factory, scenario)
    assert bot.calls("chat.update") == [] and bot.calls("chat.postMessage")[3:] == []


@pytest.mark.parametrize(
    "value",
    [["hv-kpatel"], {"id": "hv-jones"}, 7, "hv-jones\ud800", "hv-jones\x00"],
    ids=["list", "dict", "number", "lone-surrogate", "nul"],
)
def test_malformed_redirect_choice_is_a_field_error(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session], value: Any
) -> None:
    values = redirect_values(value)
    payload = view_submission(
        KPATEL, ids.REDIRECT_MODAL, private_metadata=metadata(scenario), values=values
    )
    answer = modal_answer(bot.send_payload(payload))
    assert answer == {"response_action": "errors", "errors": {BLOCK_COLLEAGUE: CHOOSE_COLLEAGUE}}
    nothing_recorded(session_factory, scenario)


@pytest.mark.parametrize("prompt_id", [10**30, str(10**30), 2**63, -3, 0, True, "1e3", None])
def test_a_prompt_id_out_of_range_in_modal_metadata(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session], prompt_id: Any
) -> None:
    raw = json.dumps({"prompt_id": prompt_id}) if prompt_id is not None else "{}"
    payload = view_submission(
        KPATEL,
        ids.HAS_INFO_MODAL,
        private_metadata=raw,
        values=has_info_values("2026-11-16T14:00:00+00:00"),
    )
    answer = modal_answer(bot.send_payload(payload))
    assert answer == {"response_action": "errors", "errors": {BLOCK_CONTACT_BY: NOT_KNOWN_PROMPT}}
    nothing_recorded(session_factory, scenario)


@pytest.mark.parametrize("action", [ids.ACK, ids.HAS_INFO])
@pytest.mark.parametrize("value", ["1" * 30, str(2**63), "-1", "", "\ud800"])
def test_a_garbage_click_gets_the_usual_private_note(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    action: str,
    value: str,
) -> None:
    answer = bot.send_payload(
        block_actions(
            KPATEL, action, value, channel_id=scenario.dm_channel, message_ts=scenario.dm_ts
        )
    )
    assert answer.status == 200
    [note] = wait_for(lambda: bot.standin.ephemerals(KPATEL))
    assert note["channel"] == scenario.dm_channel
    assert note["blocks"][0]["text"]["text"] == NOT_KNOWN_PROMPT
    assert bot.calls("views.open") == []
    nothing_recorded(session_factory, scenario)


def test_a_click_with_a_malformed_actions_list(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session]
) -> None:
    payload = block_actions(
        KPATEL, ids.ACK, str(scenario.prompt_id), channel_id=EDT_CHANNEL, message_ts="1.2"
    )
    payload["actions"][0]["value"] = {"prompt": scenario.prompt_id}
    payload["container"] = "not a container"
    assert bot.send_payload(payload).status == 200
    [note] = wait_for(lambda: bot.standin.ephemerals(KPATEL))
    assert note["blocks"][0]["text"]["text"] == NOT_KNOWN_PROMPT
    nothing_recorded(session_factory, scenario)


# ----- the referral modal -------------------------------------------------------------------


@pytest.fixture
def rota_only(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    from tests.handlers.slack_payloads import build_rota

    with session_factory.begin() as session:
        build_rota(session)
    with running_bot(session_factory, in_process=True) as harness:
        yield harness


def referral_counts(session_factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with session_factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Referral)) or 0,
            session.scalar(select(func.count()).select_from(Target)) or 0,
            session.scalar(select(func.count()).select_from(AuditEvent)) or 0,
        )


def good_referral(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "external_ref": "LCS-2026-000901",
        "category": "neglect",
        "urgency": "urgent",
        "people": ("hv-kpatel",),
        "summary": "Hostile-payload test referral SUMMARY-HOSTILE-1",
    }
    fields.update(changes)
    return modal_state(**fields)


def referral_submission(values: Any) -> dict[str, Any]:
    payload = view_submission(
        AMY,
        ids.REFERRAL_MODAL,
        private_metadata=json.dumps({"channel_id": EDT_CHANNEL}),
        values={},
    )
    payload["view"]["state"] = values if values is None else {"values": values}
    return payload


def _without_value(state: dict[str, Any]) -> dict[str, Any]:
    del state["notify_people"]["notify_people_select"]["selected_options"][0]["value"]
    return state


def _set(state: dict[str, Any], block: str, action: str, key: str, value: Any) -> dict[str, Any]:
    state[block][action][key] = value
    return state


REFERRAL_STATES: dict[str, tuple[Any, set[str]]] = {
    "selected option without value": (_without_value(good_referral()), {"notify_people"}),
    "selected option value is a list": (
        _set(
            good_referral(people=()),
            "notify_teams",
            "notify_teams_select",
            "selected_options",
            [{"value": ["gp-northgate"]}],
        ),
        {"notify_teams"},
    ),
    "selected options not a list": (
        _set(
            good_referral(people=()), "notify_roles", "notify_roles_select", "selected_options", 5
        ),
        {"notify_people"},
    ),
    "option value with a lone surrogate": (
        _set(
            good_referral(people=()),
            "notify_people",
            "notify_people_select",
            "selected_options",
            [{"value": "hv-kpatel\ud800"}],
        ),
        {"notify_people"},
    ),
    "category option is a string": (
        _set(good_referral(), "category", "category_select", "selected_option", "neglect"),
        {"category"},
    ),
    "case reference is a number": (
        _set(good_referral(), "external_ref", "external_ref_input", "value", 12345),
        {"external_ref"},
    ),
    "block is a list": ({**good_referral(), "urgency": ["urgent"]}, {"urgency"}),
    "state is null": (None, {"external_ref", "category", "urgency", "notify_people"}),
}


def test_malformed_referral_modal_state_is_a_field_error(
    rota_only: Harness, session_factory: sessionmaker[Session]
) -> None:
    for case, (values, blocks) in REFERRAL_STATES.items():
        answer = modal_answer(rota_only.send_payload(referral_submission(values)))
        assert answer["response_action"] == "errors", case
        assert set(answer["errors"]) == blocks, (case, answer)
        assert all(0 < len(m) <= 150 for m in answer["errors"].values()), case
        assert "SUMMARY-HOSTILE" not in json.dumps(answer), case
    assert referral_counts(session_factory) == (0, 0, 0)
    assert rota_only.calls("chat.postEphemeral") == [] and rota_only.wakes == []


# ----- options requests ---------------------------------------------------------------------

OPTION_REQUESTS = [
    (ids.ACTION_NOTIFY_PEOPLE, "notify_people"),
    (ids.ACTION_NOTIFY_TEAMS, "notify_teams"),
    (ids.ACTION_NOTIFY_ROLES, "notify_roles"),
    (ACTION_COLLEAGUE, BLOCK_COLLEAGUE),
]


@pytest.mark.parametrize(("action_id", "block_id"), OPTION_REQUESTS)
def test_malformed_options_requests_get_options(
    rota_only: Harness, action_id: str, block_id: str
) -> None:
    def ask(value: Any) -> list[str]:
        answer = rota_only.send_payload(block_suggestion(AMY, action_id, block_id, value))
        assert answer.status == 200, (value, answer.body)
        return [option["value"] for option in answer.json["options"]]

    everything = ask("")
    assert everything
    assert ask(None) == everything
    assert ask(["a"]) == everything
    assert ask({"q": "a"}) == everything
    assert ask(7) == everything
    assert ask("x" * 200_000) == []
    assert ask("\ud800") == everything
    assert ask("a\x00") == ask("a")
    # Lone surrogates are dropped; the rest of the query still searches.
    assert ask("jon\udfff") == ask("jon")
    assert ask("  JON  ") == ask("jon")
    # Only the first 100 characters count.
    assert ask("jon" + "z" * 200) == ask("jon" + "z" * 97) == []


# ----- typed text is not echoed -------------------------------------------------------------


def sent_text(bot: Harness) -> str:
    return (json.dumps(bot.catcher.posts) + bot.standin.all_text()).lower()


@pytest.mark.parametrize(
    ("who", "typed", "expected"),
    [
        ("hv-jones", "oncall SECRETROLE_Jane_Doe", "That role is not in the rota."),
        ("hv-jones", "oncall role:Secret Jane", "That role is not in the rota."),
        ("hv-jones", "oncall " + "SECRETLONG" * 500, "That role is not in the rota."),
        ("hv-jones", "oncall " + "secretlong" * 7, "That role is not in the rota."),
        (
            "edt-mgr",
            "log SECRETLOG_Jane",
            "No referral with that ID. Use `/handover log open`, `/handover log overdue` or "
            "`/handover log REFERRAL_ID`.",
        ),
        ("edt-mgr", "log HO-SECRETJANE", "No referral with that ID."),
        ("edt-amy", "close nosuch SECRETREASON Jane Doe", "No referral with that ID."),
        (
            "edt-amy",
            "close SECRETCLOSE_Jane",
            "Give a reason: `/handover close REFERRAL_ID REASON`",
        ),
    ],
    ids=[
        "oncall-capitals",
        "oncall-spaces",
        "oncall-5000",
        "oncall-65",
        "log",
        "log-near-id",
        "close-unknown",
        "close-no-reason",
    ],
)
def test_typed_arguments_are_not_echoed(
    bot: Harness,
    scenario: Scenario,
    session_factory: sessionmaker[Session],
    who: str,
    typed: str,
    expected: str,
) -> None:
    answer = bot.command_answer(slack_user(who), typed)
    assert answer["response_type"] == "ephemeral"
    assert answer["text"].startswith(expected)
    shown = sent_text(bot)
    for word in typed.split()[1:]:
        assert word.lower().removeprefix("role:") not in shown
    assert "jane" not in shown and "secret" not in shown
    with session_factory() as session:
        assert session.get(Referral, scenario.referral_id).status == "open"
        assert session.scalar(select(func.count()).select_from(AuditEvent)) == 0


def test_well_formed_identifiers_are_still_named(bot: Harness, scenario: Scenario) -> None:
    role = bot.command_answer(slack_user("hv-jones"), "oncall astronaut")
    assert role["text"] == "No shift in the rota names the role `astronaut`."
    log = bot.command_answer(slack_user("edt-mgr"), "log ho-zz9999")
    assert log["text"].startswith("No referral HO-ZZ9999.")
    close = bot.command_answer(slack_user("edt-amy"), "close HO-ZZ9999 duplicate")
    assert close["text"] == "There is no referral HO-ZZ9999."


# ----- the database is unreachable ----------------------------------------------------------


@pytest.fixture
def unreachable(db_url: str, tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Sessions on a database that is gone: dropped (PostgreSQL) or unopenable (SQLite)."""
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite":
        gone = f"sqlite:///{tmp_path / 'no-such-directory' / 'handover.db'}"
    else:
        name = f"{url.database}_dropped"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
        gone = url.set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(gone)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def bot_without_database(unreachable: sessionmaker[Session]) -> Iterator[Harness]:
    with running_bot(unreachable, in_process=True) as harness:
        yield harness


def test_clicks_tell_the_user_privately_when_the_database_is_down(
    bot_without_database: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Over real HTTP: the replay guard meets the dead database first and lets the click through
    # (a click's job is refused by its writer instead).
    bot = bot_without_database.http
    for user, action in ((KPATEL, ids.ACK), (AMY, ids.HAS_INFO)):
        answer = bot.send_payload(
            block_actions(user, action, "1", channel_id=EDT_CHANNEL, message_ts="1700000000.000100")
        )
        assert answer.status == 200
        [note] = wait_for(lambda user=user: bot.standin.ephemerals(user))
        assert note["channel"] == EDT_CHANNEL
        assert note["blocks"][0]["text"]["text"] == DATABASE_DOWN
    # The Home tab's page buttons have no channel to answer in: a DM says so.
    answer = bot.send_payload(block_actions(AMY, HOME_NEXT, "2", channel_id="", message_ts=""))
    assert answer.status == 200
    [dm] = wait_for(lambda: bot.calls("chat.postMessage"))
    assert dm.args["channel"] == AMY
    assert dm.args["blocks"][0]["text"]["text"] == DATABASE_DOWN
    assert bot.calls("views.open") == [] and bot.calls("chat.update") == []
    assert bot.calls("views.publish") == []
    # The modal's check meets the database itself; acknowledge and the page button are jobs
    # whose write the database refused (bot/slackjobs/writer.py), each after its attempts.
    logged = [r for r in caplog.records if r.exc_info and "database unavailable" in r.message]
    assert [r.getMessage() for r in logged] == [
        "could not check a has_information click: database unavailable"
    ]
    refused = [r.getMessage() for r in caplog.records if r.name == "bot.slackjobs.writer"]
    assert refused.count("the database refused 1 slack job(s): their users are told") == 2
    assert len([m for m in refused if m.startswith("could not write 1 slack job(s)")]) == 6


@pytest.mark.parametrize(
    "typed", ["", "oncall", "oncall police_dau", "close HO-TEST01 duplicate", "log open"]
)
def test_commands_tell_the_user_privately_when_the_database_is_down(
    bot_without_database: Harness, typed: str
) -> None:
    answer = bot_without_database.command_answer(AMY, typed)
    assert answer == {"path": answer["path"], "text": DATABASE_DOWN, "response_type": "ephemeral"}
    assert bot_without_database.calls("views.open") == []


@pytest.mark.parametrize(("action_id", "block_id"), OPTION_REQUESTS)
def test_options_are_empty_when_the_database_is_down(
    bot_without_database: Harness, action_id: str, block_id: str
) -> None:
    answer = bot_without_database.send_payload(block_suggestion(AMY, action_id, block_id, "jon"))
    assert answer.status == 200, answer.body
    assert answer.json == {"options": []}


def test_modal_submissions_answer_in_the_modal_when_the_database_is_down(
    bot_without_database: Harness,
) -> None:
    bot = bot_without_database
    submissions = [
        (
            view_submission(
                KPATEL,
                ids.HAS_INFO_MODAL,
                private_metadata=json.dumps({"prompt_id": 1}),
                values=has_info_values("2026-11-16T14:00:00+00:00"),
            ),
            BLOCK_CONTACT_BY,
        ),
        (
            view_submission(
                KPATEL,
                ids.REDIRECT_MODAL,
                private_metadata=json.dumps({"prompt_id": 1}),
                values={
                    BLOCK_COLLEAGUE: {ACTION_COLLEAGUE: {"selected_option": {"value": "hv-jones"}}}
                },
            ),
            BLOCK_COLLEAGUE,
        ),
        (referral_submission(good_referral()), "external_ref"),
    ]
    for payload, block in submissions:
        answer = modal_answer(bot.send_payload(payload))
        assert answer == {"response_action": "errors", "errors": {block: DATABASE_DOWN}}
    assert bot.calls("chat.postEphemeral") == [] and bot.wakes == []


# ----- bodies Bolt could not parse: 400 before it sees them --------------------------------


def _form_payload(payload: Any) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


def _click(scenario: Scenario, **changes: Any) -> dict[str, Any]:
    payload = block_actions(
        KPATEL, ids.ACK, str(scenario.prompt_id), channel_id=scenario.dm_channel,
        message_ts=scenario.dm_ts,
    )  # fmt: skip
    payload.update(changes)
    return payload


FORM = "application/x-www-form-urlencoded"
UNPARSEABLE: dict[str, tuple[Any, str, str]] = {
    "team is a number": (lambda s: _form_payload(_click(s, team=5)), FORM, "team must be"),
    "user is a string": (
        lambda s: _form_payload(_click(s, user=KPATEL)),
        FORM,
        "user must be an object with an id",
    ),
    "payload is not JSON": (lambda s: b"payload=%7Bnot-json", FORM, "payload is not valid JSON"),
    "invalid UTF-8": (
        lambda s: _form_payload(_click(s)).replace(b"UHVKPATEL", b"%FF%FEPATEL", 1),
        FORM,
        "the form is malformed or not UTF-8",
    ),
    "raw invalid UTF-8": (lambda s: b"payload=\xff", FORM, "the body is not UTF-8"),
    "deep nesting": (
        lambda s: b"payload=" + b"%5B" * 5000 + b"%5D" * 5000,
        FORM,
        "payload is not valid JSON",
    ),
    "wrong content type": (
        lambda s: _form_payload(_click(s)),
        "text/plain",
        "content type must be",
    ),
    "event is a list": (
        lambda s: b'{"type":"event_callback","event_id":"Ev1","event":[]}',
        "application/json",
        "event must be an object",
    ),
}


@pytest.mark.parametrize("case", list(UNPARSEABLE))
def test_a_signed_body_bolt_cannot_parse_is_400_and_changes_nothing(
    bot: Harness, scenario: Scenario, session_factory: sessionmaker[Session], case: str
) -> None:
    make, content_type, reason = UNPARSEABLE[case]
    body = make(scenario)
    answer = bot.http.post(body, content_type, sign(body))  # bot/web/http.py answers: over HTTP
    assert answer.status == 400
    assert answer.json["error"].startswith(reason)
    nothing_recorded(session_factory, scenario)
    assert bot.calls("chat.postEphemeral") == [] and bot.calls("chat.update") == []


def test_an_unsigned_body_is_401_whatever_it_holds(bot: Harness, scenario: Scenario) -> None:
    for body in (b"payload=\xff", _form_payload(_click(scenario))):
        answer = bot.http.post(body, FORM, sign(body, secret="not-the-signing-secret"))
        assert (answer.status, answer.json) == (401, {"error": "invalid signature"})


def test_the_event_dedupe_middleware_never_raises(bot: Harness) -> None:
    from bot.web.app import _make_event_dedupe

    class Broken:
        def begin(self):
            raise RuntimeError("the database driver fell over")

    dedupe = _make_event_dedupe(replace(bot.services, session_factory=Broken()))
    handed_on: list[object] = []

    def next_() -> str:
        handed_on.append(1)
        return "next"

    quiet = logging.getLogger("test.dedupe")
    bodies: list[Any] = [
        None,
        [],
        "event_callback",
        {"type": "event_callback"},
        {"type": "event_callback", "event_id": ["Ev1"]},
        {"type": "event_callback", "event_id": {"id": 1}},
        {"type": "event_callback", "event_id": "E" * 65},
        {"type": "event_callback", "event_id": "Ev\x00"},
        {"type": "event_callback", "event_id": "Ev1"},  # valid: the broken database is met
    ]
    for body in bodies:
        assert dedupe(body, next_, quiet) == "next"
    assert len(handed_on) == len(bodies)

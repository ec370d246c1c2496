"""The App Home tab and `/handover log`: views built from the database, within Block Kit's limits,
published through Bolt (`App.dispatch`, signed requests) to the local Slack stand-in over HTTP."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from slack_bolt import BoltRequest
from slack_sdk import WebClient
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import FixedClock
from bot.context import Services
from bot.delivery.home import refresh_homes
from bot.services.home import manager_slack_user_ids
from bot.services.logbook import Overdue
from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from bot.slack_standin.blockkit import check_message_blocks, check_view
from bot.web.app import create_app
from bot.web.work import WorkQueue
from handlers.blocks.home import (
    HOME_NEXT,
    HOME_PREVIOUS,
    build_log_overdue_message,
    build_unknown_user_home,
    overdue_line,
)
from handlers.home import build_home_view
from handlers.ids import RESPONSE_ACTIONS
from handlers.log_command import REFUSAL, handle_log
from tests.bot.factories import new_referral, new_target
from tests.bot.services.test_logbook import (
    LONDON,
    NOW,
    SUMMARY,
    add_step_row,
    build_rota,
    build_scenario,
    utc,
)
from tests.handlers.slack_payloads import sign

SECRET = "signing-secret-for-tests"
TOKEN = "xoxb-test"


def all_text(view: Any) -> str:
    return json.dumps(view, ensure_ascii=False)


def section_texts(view: dict[str, Any]) -> list[str]:
    return [b["text"]["text"] for b in view["blocks"] if b["type"] == "section"]


def settings_for(db_url: str, api_url: str = "http://127.0.0.1:9/api/") -> Settings:
    return Settings(
        database_url=db_url,
        slack_bot_token=TOKEN,
        slack_signing_secret=SECRET,
        slack_api_url=api_url,
    )


# ----- views built from the database ----------------------------------------------------------


def test_manager_home_shows_overdue_referrals_and_coverage(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    build_scenario(session_factory)
    settings = settings_for(db_url)
    with session_factory() as session:
        view = build_home_view(session, "UMIA", NOW, settings)
    assert check_view(view, allowed_types=("home",)) == []
    assert view["type"] == "home"
    texts = section_texts(view)
    referral_texts = {t.split("*")[1]: t for t in texts if t.startswith("*HO-")}
    assert list(referral_texts) == ["HO-R3", "HO-R2", "HO-R1"]
    assert (
        "Social care ✅ covered · Police ⏳ pending · Health ✅ covered" in referral_texts["HO-R1"]
    )
    assert ":warning:" not in referral_texts["HO-R1"]
    assert "Social care ✅ covered · Police 🚫 missed · Health 🚫 missed" in referral_texts["HO-R2"]
    assert "*Gap: police missed, health missed*" in referral_texts["HO-R2"]
    assert "`LCS-HO-R2`" in referral_texts["HO-R2"]
    assert (
        "Domestic abuse · Standard · received Sat 14 Nov 2026 02:00 GMT" in referral_texts["HO-R2"]
    )
    assert "*Gap: police not asked*" in referral_texts["HO-R3"]
    overdue = next(t for t in texts if t.startswith(":alarm_clock:"))
    assert overdue.splitlines() == [
        ":alarm_clock: *HO-R3* `person:hv-jo` → `hv-jo`: not sent, due Mon 16 Nov 2026 09:00 GMT",
        # Reminded, escalated and breached since: the log's latest step, not the first one due.
        ":alarm_clock: *HO-R2* `person:hv-jo` → `hv-jo`: no response, breached "
        "Mon 16 Nov 2026 17:00 GMT",
    ]
    assert "HO-R4" not in all_text(view)  # closed
    assert "NARRATIVE-SECRET" not in all_text(view)
    assert SUMMARY not in all_text(view)


def test_professional_home_lists_their_open_prompts_with_the_four_buttons(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    scenario = build_scenario(session_factory)
    settings = settings_for(db_url)
    with session_factory() as session:
        view = build_home_view(session, "UHVJO", NOW, settings)
        police_view = build_home_view(session, "UPAT", NOW, settings)
    assert check_view(view, allowed_types=("home",)) == []
    actions = [b for b in view["blocks"] if b["type"] == "actions"]
    assert len(actions) == 1
    buttons = actions[0]["elements"]
    assert [b["action_id"] for b in buttons] == list(RESPONSE_ACTIONS)
    assert {b["value"] for b in buttons} == {str(scenario.prompts["R2 hv"])}
    assert "*HO-R2*" in section_texts(view)[0]
    assert "HO-R3" not in all_text(view)  # held, not yet sent
    assert "NARRATIVE-SECRET" not in all_text(view)
    # Police only acknowledged R1: it stays, to be answered (see the test below).
    assert "*HO-R1*" in all_text(police_view)


def test_professional_home_after_escalation_shows_the_prompt_and_when_it_was_sent(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    scenario = build_scenario(session_factory)
    prompt_id = scenario.prompts["R2 hv"]
    with session_factory.begin() as session:
        add_step_row(session, prompt_id, "remind", utc(16, 10, 20), utc(16, 10, 20))
        add_step_row(session, prompt_id, "breach", utc(16, 17), utc(16, 17))
    with session_factory() as session:
        view = build_home_view(session, "UHVJO", NOW, settings_for(db_url))
    [actions] = [b for b in view["blocks"] if b["type"] == "actions"]
    assert {b["value"] for b in actions["elements"]} == {str(prompt_id)}
    assert "Asked of `person:hv-jo` at Mon 16 Nov 2026 09:20 GMT." in section_texts(view)[0]


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ({}, "no response, reminder due Mon 16 Nov 2026 10:20 GMT"),
        (
            {"next_step": "remind", "next_step_at": utc(16, 10, 20)},
            "no response, reminder due Mon 16 Nov 2026 10:20 GMT",
        ),
        (
            {"last_step": "remind", "last_step_at": utc(16, 10, 21)},
            "no response, reminded Mon 16 Nov 2026 10:21 GMT",
        ),
        (
            {
                "last_step": "escalate",
                "last_step_at": utc(16, 11, 20),
                "next_step": "escalate_channel",
                "next_step_at": utc(16, 13, 20),
            },
            "no response, escalated Mon 16 Nov 2026 11:20 GMT",
        ),
        (
            {"last_step": "escalate_channel", "last_step_at": utc(16, 13, 20)},
            "no response, escalation channel Mon 16 Nov 2026 13:20 GMT",
        ),
        (
            {"last_step": "breach", "last_step_at": utc(16, 17)},
            "no response, breached Mon 16 Nov 2026 17:00 GMT",
        ),
    ],
)
def test_overdue_line_names_the_latest_step(steps: dict[str, Any], expected: str) -> None:
    item = Overdue("HO-R2", "person:hv-jo", 7, "hv-jo", "prompted", utc(16, 10, 20), **steps)
    assert (
        overdue_line(item, LONDON) == f":alarm_clock: *HO-R2* `person:hv-jo` → `hv-jo`: {expected}"
    )
    [_, section] = build_log_overdue_message([item], LONDON)
    assert section["text"]["text"] == overdue_line(item, LONDON)


def test_a_slack_user_not_in_the_rota_gets_an_explanation(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    build_scenario(session_factory)
    with session_factory() as session:
        view = build_home_view(session, "USTRANGER", NOW, settings_for(db_url))
    assert view == build_unknown_user_home()
    assert "not in the rota" in all_text(view)
    assert check_view(view, allowed_types=("home",)) == []


def add_many_open_referrals(session_factory: sessionmaker[Session], count: int) -> None:
    with session_factory.begin() as session:
        build_rota(session)
        for n in range(count):
            received = utc(13, 9) + timedelta(minutes=n)
            referral_id = f"HO-P{n:04d}"
            session.add(
                new_referral(
                    referral_id,
                    received,
                    external_ref=f"LCS-{'X' * 50}-{n:04d}",
                    category="exploitation",
                    urgency="urgent",
                    summary=SUMMARY,
                    request_hash=f"{n:064d}",
                )
            )
            session.flush()
            session.add(
                new_target(referral_id, "team:mash", "sw-sam", received, planned_via="duty")
            )


def test_manager_home_paginates_300_open_referrals_within_block_kit_limits(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    add_many_open_referrals(session_factory, 300)
    settings = settings_for(db_url)
    with session_factory() as session:
        pages = {page: build_home_view(session, "UMIA", NOW, settings, page) for page in (1, 2, 15)}
        beyond = build_home_view(session, "UMIA", NOW, settings, 99)
    for page, view in pages.items():
        assert check_view(view, allowed_types=("home",)) == [], page
        assert len(view["blocks"]) <= 100
        assert all(len(t) <= 3000 for t in section_texts(view))
        assert f"Open referrals: page {page} of 15" in all_text(view)
    first_ids = [t.split("*")[1] for t in section_texts(pages[1]) if t.startswith("*HO-")]
    assert first_ids == [f"HO-P{n:04d}" for n in range(299, 279, -1)]
    last_ids = [t.split("*")[1] for t in section_texts(pages[15]) if t.startswith("*HO-")]
    assert last_ids == [f"HO-P{n:04d}" for n in range(19, -1, -1)]

    def nav(view: dict[str, Any]) -> dict[str, str]:
        block = next(b for b in view["blocks"] if b.get("block_id") == "home_pagination")
        return {e["action_id"]: e["value"] for e in block["elements"]}

    assert nav(pages[1]) == {HOME_NEXT: "2"}
    assert nav(pages[2]) == {HOME_PREVIOUS: "1", HOME_NEXT: "3"}
    assert nav(pages[15]) == {HOME_PREVIOUS: "14"}
    assert beyond == pages[15] or "page 15 of 15" in all_text(beyond)
    assert "300 open referrals" in all_text(pages[1])
    assert "Social care ✅ covered · Police ❌ not asked · Health ❌ not asked" in all_text(
        pages[1]
    )
    assert "NARRATIVE-SECRET" not in all_text(pages[1])


def test_manager_slack_user_ids(session_factory: sessionmaker[Session]) -> None:
    build_scenario(session_factory)
    with session_factory() as session:
        # Managers and oversight: each Home shows referrals.
        assert manager_slack_user_ids(session) == ["UHEADSUE", "UHVLEE", "UMIA"]


# ----- /handover log --------------------------------------------------------------------------


class Responses:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> None:
        self.calls.append(kwargs)


def services_for(
    db_url: str, session_factory: sessionmaker[Session], api_url: str = ""
) -> Services:
    settings = settings_for(db_url, api_url or "http://127.0.0.1:9/api/")
    return Services(settings, session_factory, FixedClock(NOW))


def test_log_command_is_refused_privately_to_non_managers(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    build_scenario(session_factory)
    services = services_for(db_url, session_factory)
    for user in ("UHVJO", "USTRANGER"):
        respond = Responses()
        handle_log(services, {"user_id": user, "text": "log open"}, ["open"], respond)
        assert respond.calls == [{"text": REFUSAL, "response_type": "ephemeral"}]


def test_log_command_for_a_manager_open_overdue_and_one_referral(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    build_scenario(session_factory)
    services = services_for(db_url, session_factory)
    answers: dict[str, dict[str, Any]] = {}
    for args in ([], ["overdue"], ["ho-r2"], ["HO-NOPE"]):
        respond = Responses()
        handle_log(services, {"user_id": "UMIA"}, args, respond)
        assert len(respond.calls) == 1
        assert respond.calls[0]["response_type"] == "ephemeral"
        answers[" ".join(args) or "open"] = respond.calls[0]
    for answer in answers.values():
        assert "NARRATIVE-SECRET" not in all_text(answer)
        if "blocks" in answer:
            assert check_message_blocks(answer["blocks"]) == []

    open_text = all_text(answers["open"]["blocks"])
    assert open_text.index("HO-R3") < open_text.index("HO-R2") < open_text.index("HO-R1")
    assert "Gap: police missed, health missed" in open_text

    overdue_texts = [b["text"]["text"] for b in answers["overdue"]["blocks"][1:]]
    assert overdue_texts[0].splitlines()[0].startswith(":alarm_clock: *HO-R3*")
    assert overdue_texts[0].splitlines()[1].startswith(":alarm_clock: *HO-R2*")

    history = "\n".join(
        b["text"]["text"] for b in answers["ho-r2"]["blocks"] if b["type"] == "section"
    )
    assert "asked `pc-pat` at Sat 14 Nov 2026 02:05 GMT" in history
    assert "redirected by `pc-pat` at Sat 14 Nov 2026 03:05 GMT" in history
    assert "asked `hv-jo` at Mon 16 Nov 2026 09:20 GMT (late)" in history
    assert ":warning: *Never answered:* `person:hv-jo`" in history
    # Not the referral ID format (HO- and 6 Crockford base32 characters): not echoed.
    assert answers["HO-NOPE"]["text"].startswith("No referral with that ID.")


def test_an_acknowledged_prompt_stays_on_the_home_with_the_two_answers(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    build_scenario(session_factory)
    with session_factory() as session:
        view = build_home_view(session, "UPAT", NOW, settings_for(db_url))
    [actions] = [b for b in view["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [
        "handover_has_info",
        "handover_not_known",
    ]
    assert "You acknowledged it: please answer." in all_text(view)


def test_need_to_know_an_unrelated_manager_sees_nothing_oversight_sees_all(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    """A school head sees no health and police referral; the health visitors' manager sees
    those concerning her team; the EDT manager (oversight) sees every one."""
    build_scenario(session_factory)
    settings = settings_for(db_url)
    services = services_for(db_url, session_factory)

    def home_ids(user: str) -> list[str]:
        with session_factory() as session:
            view = build_home_view(session, user, NOW, settings)
        assert check_view(view, allowed_types=("home",)) == []
        return [t.split("*")[1] for t in section_texts(view) if t.startswith("*HO-")]

    def log(user: str, *args: str) -> str:
        respond = Responses()
        handle_log(services, {"user_id": user}, list(args), respond)
        [answer] = respond.calls
        return all_text(answer)

    assert home_ids("UHEADSUE") == []
    assert "HO-R" not in log("UHEADSUE", "open")
    assert "HO-R" not in log("UHEADSUE", "overdue")
    assert "HO-R2" not in log("UHEADSUE", "HO-R2")
    with session_factory() as session:
        view = build_home_view(session, "UHEADSUE", NOW, settings)
    assert "0 open referrals concerning your teams" in all_text(view)

    # hv-jo is asked in R1, R2 and R3 (R4 is closed).
    assert home_ids("UHVLEE") == ["HO-R3", "HO-R2", "HO-R1"]
    assert "HO-R2" in log("UHVLEE", "HO-R2")
    assert home_ids("UMIA") == ["HO-R3", "HO-R2", "HO-R1"]
    assert all(f"HO-R{n}" in log("UMIA", "open") for n in (1, 2, 3))


def test_a_referrer_sees_the_referrals_they_made_with_states_and_offers(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    build_scenario(session_factory)
    with session_factory() as session:
        view = build_home_view(session, "UAMY", NOW, settings_for(db_url))
    assert check_view(view, allowed_types=("home",)) == []
    mine = {
        b["block_id"]: b["text"]["text"]
        for b in view["blocks"]
        if b.get("block_id", "").startswith("home_mine_")
    }
    assert list(mine) == ["home_mine_HO-R3", "home_mine_HO-R2", "home_mine_HO-R1"]
    assert "• `person:hv-jo`: holds information" in mine["home_mine_HO-R1"]
    assert "• `role:police_dau`: acknowledged, no answer yet" in mine["home_mine_HO-R1"]
    assert "• `role:police_dau`: redirected to a colleague" in mine["home_mine_HO-R2"]
    assert "Police 🚫 missed" in mine["home_mine_HO-R2"]
    assert "NARRATIVE-SECRET" not in all_text(view)


def test_log_command_open_within_message_limits_for_300_referrals(
    db_url: str, session_factory: sessionmaker[Session]
) -> None:
    add_many_open_referrals(session_factory, 300)
    services = services_for(db_url, session_factory)
    respond = Responses()
    handle_log(services, {"user_id": "UMIA"}, ["open"], respond)
    blocks = respond.calls[0]["blocks"]
    assert check_message_blocks(blocks) == []
    assert len(blocks) <= 50
    assert "Showing 100 of 300" in all_text(blocks)


# ----- signed requests through Bolt, to the stand-in -------------------------------------------


@contextmanager
def serving_bot(services: Services, standin: SlackStandIn) -> Iterator[Callable[[bytes, str], int]]:
    """The real Bolt app; yields `post(body, content_type)`, which signs the body and hands it to
    `App.dispatch` as the Flask adapter would (tests/handlers/slack_payloads.py)."""
    client = WebClient(base_url=standin.url, token=TOKEN)
    work = WorkQueue()
    bolt = create_app(services.settings, client, services=replace(services, after_ack=work.submit))

    def post(body: bytes, content_type: str) -> int:
        headers = {"Content-Type": content_type, **sign(body, secret=SECRET)}
        return bolt.dispatch(BoltRequest(body=body.decode(), headers=headers)).status

    try:
        yield post
    finally:
        work.shutdown(wait=True)  # the work its listeners queued ends here


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the stand-in")


@pytest.fixture
def standin() -> Iterator[SlackStandIn]:
    users = [
        StandInUser(id="UMIA", name="mgr-mia"),
        StandInUser(id="UHVJO", name="hv-jo"),
    ]
    with SlackStandIn(users=users) as running:
        yield running


def home_opened(user: str, event_id: str) -> bytes:
    return json.dumps(
        {
            "token": "legacy",
            "team_id": "T0STANDIN",
            "api_app_id": "A0HANDOVER",
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "event": {
                "type": "app_home_opened",
                "user": user,
                "channel": "D0HOME",
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
        }
    ).encode()


def test_app_home_opened_publishes_the_home(
    db_url: str, session_factory: sessionmaker[Session], standin: SlackStandIn
) -> None:
    scenario = build_scenario(session_factory)
    services = services_for(db_url, session_factory, standin.url)
    with serving_bot(services, standin) as post:
        assert post(home_opened("UMIA", "Ev0MANAGER"), "application/json") == 200
        assert post(home_opened("UHVJO", "Ev0PROF"), "application/json") == 200
        wait_for(lambda: len(standin.calls("views.publish")) == 2)

    published = {call.args["user_id"] for call in standin.calls("views.publish")}
    assert published == {"UMIA", "UHVJO"}
    assert all(call.response["ok"] for call in standin.calls("views.publish"))
    manager = standin.home_view("UMIA")
    assert manager is not None
    assert "Social care ✅ covered · Police 🚫 missed · Health 🚫 missed" in all_text(
        manager["blocks"]
    )
    professional = standin.home_view("UHVJO")
    assert professional is not None
    values = {
        e["value"] for b in professional["blocks"] if b["type"] == "actions" for e in b["elements"]
    }
    assert values == {str(scenario.prompts["R2 hv"])}
    assert "NARRATIVE-SECRET" not in standin.all_text()


def test_next_button_publishes_the_next_page_and_refresh_homes(
    db_url: str, session_factory: sessionmaker[Session], standin: SlackStandIn
) -> None:
    add_many_open_referrals(session_factory, 45)
    services = services_for(db_url, session_factory, standin.url)
    payload = {
        "type": "block_actions",
        "team": {"id": "T0STANDIN"},
        "user": {"id": "UMIA"},
        "api_app_id": "A0HANDOVER",
        "token": "legacy",
        "trigger_id": "1.2.3",
        "container": {"type": "view", "view_id": "V0HOME"},
        "view": {"id": "V0HOME", "type": "home", "private_metadata": "1"},
        "actions": [
            {
                "type": "button",
                "action_id": HOME_NEXT,
                "block_id": "home_pagination",
                "value": "2",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    with serving_bot(services, standin) as post:
        assert post(body, "application/x-www-form-urlencoded") == 200
        wait_for(lambda: len(standin.calls("views.publish")) == 1)
    view = standin.home_view("UMIA")
    assert view is not None
    assert "Open referrals: page 2 of 3" in all_text(view["blocks"])

    client = WebClient(base_url=standin.url, token=TOKEN)
    refresh_homes(client, session_factory, ["UMIA", "UNOBODY", "UMIA"], NOW, services.settings)
    calls = standin.calls("views.publish")
    # UNOBODY is unknown to Slack: its error is logged and the others still refreshed.
    assert [c.args["user_id"] for c in calls[1:]] == ["UMIA", "UNOBODY"]
    assert "Open referrals: page 1 of 3" in all_text(standin.home_view("UMIA")["blocks"])

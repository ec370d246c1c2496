"""Bank-holiday scenarios through the installed `handover` commands, across real restarts.

Each scenario takes a referral through the signed case-system API while `handover serve` runs,
stops the server (killed or terminated), restarts it on the prompt days of the simulated clock
and checks who was prompted at exactly which instant, in Slack (the stand-in) and in the log:

- Christmas 2026: a referral on Christmas Eve evening waits out Christmas Day, the weekend and
  the Boxing Day substitute holiday (Mon 28 Dec), with an immediate long-gap alert;
- Easter 2027 in England and in Scotland: Easter Monday is a holiday in England only, and the
  clocks go forward on Easter Sunday;
- 12 July 2027: a bank holiday in Northern Ireland only.

Every test runs on SQLite and on PostgreSQL (the `db_url` fixture).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.e2e.harness import Deployment, deploy, slack_user_of, wait_for

pytestmark = pytest.mark.slow  # starts processes

LONDON = ZoneInfo("Europe/London")
REFERRER = "edt-amy"
SUMMARY = "Scenario summary HV-NARRATIVE-88231: never to be seen in Slack"


def london(year: int, month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=LONDON)


@pytest.fixture
def deployment_at(db_url: str, tmp_path: Path) -> Iterator[Callable[[datetime], Deployment]]:
    """`deployment_at(start)`: the sample rota on `db_url`, a stand-in and the clock at start."""
    made: list[Deployment] = []

    def make(start: datetime) -> Deployment:
        deployment = deploy(tmp_path, db_url, start, migrated=True)  # db_url is migrated
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.stop_all()
        deployment.close()
        deployment.standin.stop()


# ----- helpers --------------------------------------------------------------------------------


def post_referral(d: Deployment, external_ref: str, notify: list[str]) -> dict[str, Any]:
    status, body = d.api(
        "POST",
        "/api/referrals",
        {
            "external_ref": external_ref,
            "category": "domestic_abuse",
            "urgency": "standard",
            "referrer": REFERRER,
            "notify": notify,
            "summary": SUMMARY,
        },
    )
    assert status == 201, (status, body)
    return body


def plan_of(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["target"]: entry for entry in body["plan"]}


def prompts_in_dm(d: Deployment, person_id: str, referral_id: str) -> list[dict[str, Any]]:
    """Prompt DMs (not alerts, cards or escalation steps) of `referral_id` to `person_id`."""
    found = []
    for message in d.standin.dm(slack_user_of(person_id)):
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if (
            metadata.get("event_type") == "handover_prompt"
            and payload["referral_id"] == referral_id
        ):
            found.append(message)
    return found


def alerts_in_dm(d: Deployment, person_id: str, referral_id: str, kind: str) -> list[dict]:
    found = []
    for message in d.standin.dm(slack_user_of(person_id)):
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if (
            metadata.get("event_type") == "handover_alert"
            and payload.get("referral_id") == referral_id
            and payload.get("kind") == kind
        ):
            found.append(message)
    return found


def events(log: list[dict[str, Any]], event: str, **match: str) -> list[dict[str, Any]]:
    return [
        record
        for record in log
        if record["event"] == event and all(record.get(k) == v for k, v in match.items())
    ]


def instant(record: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(record["at"])


def assert_prompted_once(
    d: Deployment, referral_id: str, target: str, recipient: str, at: datetime
) -> None:
    """The log has exactly one on-time `prompt_sent` for `target`, to `recipient`, at `at`."""
    log = d.log(referral_id)
    sent = events(log, "prompt_sent", target=target)
    assert [(r["recipient"], instant(r)) for r in sent] == [(recipient, at)], sent
    assert sent[0]["at"] == at.isoformat(), "the log shows the local time with its offset"
    assert not events(log, "prompt_sent_late", target=target)
    assert len(prompts_in_dm(d, recipient, referral_id)) == 1


def assert_nothing_due(d: Deployment, referral_id: str) -> None:
    """A full dispatcher pass at the simulated now sends nothing for the referral."""
    result = d.run("dispatch", "--once")
    assert "dispatch: 0 prompts sent" in result.stdout, result.stdout
    assert not events(d.log(referral_id), "prompt_sent")


def acknowledge(
    d: Deployment,
    person_id: str,
    referral_id: str,
    *,
    action_id: str = "handover_ack",
    event: str = "acknowledged",
) -> None:
    """`person_id` clicks Acknowledge (or the button `action_id`) on their prompt (a signed
    block_actions request), and the log records `event`."""
    message = prompts_in_dm(d, person_id, referral_id)[-1]
    user_id = slack_user_of(person_id)
    channel = message["channel"]
    button = next(
        element
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
        if element["action_id"] == action_id
    )
    payload = {
        "type": "block_actions",
        "team": {"id": "T0STANDIN", "domain": "handover-standin"},
        "user": {"id": user_id, "username": person_id, "name": person_id, "team_id": "T0STANDIN"},
        "api_app_id": "A0HANDOVER",
        "token": "verification-token-unused",
        "container": {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"{time.monotonic_ns()}.1.demo",
        "channel": {"id": channel, "name": "directmessage"},
        "message": {"type": "message", "ts": message["ts"], "text": message["text"]},
        "response_url": d.standin.response_url(f"ack-{person_id}"),
        "actions": [
            {
                "action_id": action_id,
                "block_id": "handover_prompt_actions",
                "text": button["text"],
                "value": button["value"],
                "type": "button",
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    status, _ = d.slack({"payload": json.dumps(payload)})
    assert status == 200
    wait_for(lambda: events(d.log(referral_id), event, actor=person_id), timeout=20)


def restart(d: Deployment, server: Any, at: datetime, sig: int) -> Any:
    """Stop the server with `sig`, move the clock to `at` while it is down, start it again."""
    d.kill(server, sig)
    d.set_clock(at)
    server = d.start_server()
    d.settle()
    return server


# ----- scenarios ------------------------------------------------------------------------------


def test_christmas_eve_referral_waits_for_tuesday_29_december(deployment_at) -> None:
    received = london(2026, 12, 24, 18, 0)  # Christmas Eve, after the afternoon closure
    d = deployment_at(received)
    server = d.start_server()
    body = post_referral(
        d,
        "WXC-2026-XMAS-01",
        ["person:hv-jsmith", "team:gp-northgate", "person:mw-rhughes"],
    )
    referral_id = body["referral_id"]
    plan = plan_of(body)
    assert (plan["person:hv-jsmith"]["recipient"], plan["person:hv-jsmith"]["via"]) == (
        "hv-kpatel",
        "deputy",
    )
    assert plan["person:hv-jsmith"]["due_at"] == "2026-12-29T09:00:00+00:00"
    assert plan["team:gp-northgate"]["due_at"] == "2026-12-29T08:00:00+00:00"
    assert plan["person:mw-rhughes"]["due_at"] == "2026-12-29T08:00:00+00:00"
    assert {(a["kind"], a["target"]) for a in body["alerts"] if a["kind"] == "long_gap"} == {
        ("long_gap", "person:hv-jsmith"),
        ("long_gap", "team:gp-northgate"),
        ("long_gap", "person:mw-rhughes"),
    }

    # At once: the on-call EDT manager hears of the referral and of each long gap.
    d.settle()
    assert len(alerts_in_dm(d, "edt-mgr-raj", referral_id, "on_call")) == 1
    assert len(alerts_in_dm(d, "edt-mgr-raj", referral_id, "long_gap")) == 3
    log = d.log(referral_id)
    gaps = events(log, "long_gap_alert")
    assert {r["target"] for r in gaps} == {
        "person:hv-jsmith",
        "team:gp-northgate",
        "person:mw-rhughes",
    }
    assert all(instant(r) == received for r in gaps)
    assert [instant(r) for r in events(log, "on_call_alerted", recipient="edt-mgr-raj")] == [
        received
    ]

    # Killed overnight; back on Christmas Day, then on the Boxing Day substitute holiday.
    server = restart(d, server, london(2026, 12, 25, 10, 0), signal.SIGKILL)
    assert_nothing_due(d, referral_id)
    server = restart(d, server, london(2026, 12, 28, 9, 0), signal.SIGTERM)
    assert_nothing_due(d, referral_id)

    # Tuesday 29 December: the GP practice and the midwife at 08:00, the deputy at 09:00.
    d.advance(london(2026, 12, 29, 8, 0))
    assert_prompted_once(
        d, referral_id, "team:gp-northgate", "gp-drjones", london(2026, 12, 29, 8, 0)
    )
    assert_prompted_once(
        d, referral_id, "person:mw-rhughes", "mw-rhughes", london(2026, 12, 29, 8, 0)
    )
    assert not prompts_in_dm(d, "hv-kpatel", referral_id)
    d.advance(london(2026, 12, 29, 9, 0))
    assert_prompted_once(
        d, referral_id, "person:hv-jsmith", "hv-kpatel", london(2026, 12, 29, 9, 0)
    )
    assert not prompts_in_dm(d, "hv-jsmith", referral_id)  # on leave: her deputy is asked
    assert SUMMARY not in d.standin.all_text()


def test_easter_referral_in_england_and_scotland(deployment_at) -> None:
    received = london(2027, 3, 25, 18, 30)  # Maundy Thursday evening, still GMT
    d = deployment_at(received)
    server = d.start_server()
    body = post_referral(d, "WXC-2027-EASTER-01", ["person:hv-jsmith", "person:hv-fife-boyd"])
    referral_id = body["referral_id"]
    plan = plan_of(body)
    assert plan["person:hv-fife-boyd"]["due_at"] == "2027-03-29T09:00:00+01:00"
    assert plan["person:hv-jsmith"]["due_at"] == "2027-03-30T09:00:00+01:00"
    d.settle()
    assert {r["target"] for r in events(d.log(referral_id), "long_gap_alert")} == {
        "person:hv-jsmith",
        "person:hv-fife-boyd",
    }

    # Good Friday is a bank holiday in both nations.
    server = restart(d, server, london(2027, 3, 26, 9, 0), signal.SIGKILL)
    assert_nothing_due(d, referral_id)

    # Easter Monday, after the clocks went forward: a working day in Scotland only.
    server = restart(d, server, london(2027, 3, 29, 8, 59), signal.SIGTERM)
    assert_nothing_due(d, referral_id)
    d.advance(london(2027, 3, 29, 9, 0))
    monday_9 = london(2027, 3, 29, 9, 0)
    assert monday_9 == datetime(2027, 3, 29, 8, 0, tzinfo=UTC)  # 09:00 BST
    assert_prompted_once(d, referral_id, "person:hv-fife-boyd", "hv-fife-boyd", monday_9)
    assert not prompts_in_dm(d, "hv-jsmith", referral_id)
    d.set_clock(london(2027, 3, 29, 9, 20))
    acknowledge(d, "hv-fife-boyd", referral_id)

    # Easter Tuesday: England's first working morning.
    d.advance(london(2027, 3, 30, 9, 0))
    tuesday_9 = london(2027, 3, 30, 9, 0)
    assert_prompted_once(d, referral_id, "person:hv-jsmith", "hv-jsmith", tuesday_9)
    log = d.log(referral_id)
    acked = events(log, "acknowledged", actor="hv-fife-boyd")
    assert [r["at"] for r in acked] == ["2027-03-29T09:20:00+01:00"]
    # Answered within twenty minutes: no reminder ever went to Scotland.
    assert not events(log, "reminder_sent", target="person:hv-fife-boyd")


def test_twelfth_of_july_is_a_holiday_in_northern_ireland_only(deployment_at) -> None:
    received = london(2027, 7, 10, 11, 0)  # Saturday
    d = deployment_at(received)
    server = d.start_server()
    body = post_referral(d, "WXC-2027-JULY-01", ["person:hv-jsmith", "person:hv-bel-doherty"])
    referral_id = body["referral_id"]
    plan = plan_of(body)
    assert plan["person:hv-jsmith"]["due_at"] == "2027-07-12T09:00:00+01:00"
    assert plan["person:hv-bel-doherty"]["due_at"] == "2027-07-13T09:00:00+01:00"
    d.settle()

    # Down for the rest of the weekend; back on Monday 12 July just before 09:00.
    server = restart(d, server, london(2027, 7, 12, 8, 59), signal.SIGTERM)
    assert_nothing_due(d, referral_id)
    d.advance(london(2027, 7, 12, 9, 0))
    monday_9 = london(2027, 7, 12, 9, 0)
    assert_prompted_once(d, referral_id, "person:hv-jsmith", "hv-jsmith", monday_9)
    assert not prompts_in_dm(d, "hv-bel-doherty", referral_id)
    d.set_clock(london(2027, 7, 12, 9, 30))
    acknowledge(d, "hv-jsmith", referral_id)

    # Killed on the Twelfth; Belfast is asked on Tuesday 13 July at 09:00.
    server = restart(d, server, london(2027, 7, 12, 15, 0), signal.SIGKILL)
    assert not events(d.log(referral_id), "prompt_sent", target="person:hv-bel-doherty")
    d.advance(london(2027, 7, 13, 9, 0))
    assert_prompted_once(
        d, referral_id, "person:hv-bel-doherty", "hv-bel-doherty", london(2027, 7, 13, 9, 0)
    )
    log = d.log(referral_id)
    assert [r["at"] for r in events(log, "acknowledged", actor="hv-jsmith")] == [
        "2027-07-12T09:30:00+01:00"
    ]
    assert not events(log, "reminder_sent", target="person:hv-jsmith")

"""On-call alerts must be acknowledged, end to end and across restarts (SQLite and PostgreSQL).

`handover serve` runs at the default dispatch interval. The on-call EDT manager ignores an
alert; the bot is killed and started again around each instant, and still the alert is sent
again at +10 minutes and posted to the EDT channel at +20, each logged at its instant. A second
alert is acknowledged after its re-page: its DMs show who took it and nothing more is sent.

The clock is simulated (HANDOVER_CLOCK_FILE): each restart happens two simulated seconds before
the instant, and the clock then moves to it, so the restarted bot must wake for it by itself.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from handlers import ids
from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import EDT_CHANNEL, Deployment, slack_user_of, wait_for
from tests.handlers.slack_payloads import block_actions

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=LONDON)  # edt-mgr-raj is on call
RAJ = slack_user_of("edt-mgr-raj")
REPAGE = timedelta(minutes=10)  # HANDOVER_ONCALL_REPAGE_MINUTES's default
# An API referral's on-call alert is in Slack within 2 s (docs/timing.md); margin for a loaded
# machine.
FIRST_ALERT_WAIT = 10.0


def post_referral(deployment: Deployment, external_ref: str) -> str:
    status, answer = deployment.api(
        "POST",
        "/api/referrals",
        {
            "external_ref": external_ref,
            "category": "neglect",
            "urgency": "urgent",
            "referrer": "edt-amy",
            "notify": ["role:police_dau"],
            "summary": "SUMMARY-ONCALL-5531",
        },
    )
    assert status == 201, (status, answer)
    return answer["referral_id"]


def alert_dms(deployment: Deployment, referral_id: str) -> list[dict[str, Any]]:
    """Raj's on-call DMs about the referral (the alert, then any re-page), oldest first."""
    return [
        m
        for m in deployment.standin.dm(RAJ)
        if m["metadata"]["event_type"] == "handover_alert"
        and m["metadata"]["event_payload"]["referral_id"] == referral_id
    ]


def unanswered_posts(deployment: Deployment, referral_id: str) -> list[dict[str, Any]]:
    return [
        m
        for m in deployment.standin.channel(EDT_CHANNEL)
        if m["metadata"]["event_type"] == "handover_alert"
        and m["metadata"]["event_payload"]
        == {**m["metadata"]["event_payload"], "referral_id": referral_id}
        and m["metadata"]["event_payload"]["kind"] == "oncall_unanswered"
    ]


def buttons(message: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        element
        for block in message["blocks"]
        if block["type"] == "actions"
        for element in block["elements"]
    ]


def events(deployment: Deployment, referral_id: str, name: str) -> list[dict[str, Any]]:
    return [e for e in deployment.log(referral_id) if e["event"] == name]


def restart_just_before(deployment: Deployment, server: Any, instant: datetime, sig: int) -> Any:
    """Stop the bot (`sig`) once it has settled what it sent, start it again two simulated
    seconds before `instant`, then move the clock to `instant`: the restarted bot has to wake
    for it. (A kill between a send and its commit is the claim lease's business.)"""
    deployment.settle()
    deployment.kill(server, sig)
    deployment.set_clock(instant - timedelta(seconds=2))
    restarted = deployment.start_server()
    time.sleep(0.5)
    deployment.set_clock(instant)
    return restarted


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_ignored_alert_is_repaged_then_posted_across_restarts_and_an_ack_stops_it(
    new_deployment: DeploymentFactory, backend: str
) -> None:
    deployment = new_deployment(backend, SATURDAY)
    deployment.dispatch_interval = None  # the default, 30 s
    server = deployment.start_server()

    ignored = post_referral(deployment, "LCS-2026-000701")
    taken = post_referral(deployment, "LCS-2026-000702")
    [alert] = wait_for(lambda: alert_dms(deployment, ignored), timeout=FIRST_ALERT_WAIT)
    [first] = wait_for(lambda: alert_dms(deployment, taken), timeout=FIRST_ALERT_WAIT)
    [button] = buttons(alert)
    assert button["action_id"] == ids.ONCALL_ACK

    # Killed mid-night; back two seconds before the re-pages are due.
    server = restart_just_before(deployment, server, SATURDAY + REPAGE, signal.SIGKILL)
    for referral_id in (ignored, taken):
        wait_for(lambda r=referral_id: len(alert_dms(deployment, r)) == 2, timeout=10)
    again = alert_dms(deployment, ignored)[1]
    assert again["metadata"]["event_payload"]["kind"] == "oncall_repage"
    assert again["blocks"][0]["text"]["text"] == (
        "Not yet acknowledged: New referral: you are on call"
    )
    assert buttons(again) == [button]  # the same alert, the same button
    for referral_id in (ignored, taken):
        [repaged] = wait_for(lambda r=referral_id: events(deployment, r, "on_call_repaged"))
        assert (repaged["at"], repaged["recipient"], repaged["target"]) == (
            "2026-12-26T02:20:00+00:00",
            "edt-mgr-raj",
            "role:edt_manager",
        )

    # Raj takes the second referral's alert, from its first DM.
    deployment.set_clock(SATURDAY + REPAGE + timedelta(minutes=1))
    status, _ = deployment.slack_payload(
        block_actions(
            RAJ,
            ids.ONCALL_ACK,
            buttons(first)[0]["value"],
            channel_id=first["channel"],
            message_ts=first["ts"],
        )
    )
    assert status == 200
    [acked] = wait_for(lambda: events(deployment, taken, "on_call_acknowledged"))
    assert (acked["at"], acked["actor"], acked["target"]) == (
        "2026-12-26T02:21:00+00:00",
        "edt-mgr-raj",
        "role:edt_manager",
    )
    assert acked["detail"]["repages_sent"] == 1

    def shown_acknowledged() -> bool:
        dms = alert_dms(deployment, taken)
        return all(not buttons(m) and "Acknowledged" in json.dumps(m["blocks"]) for m in dms)

    wait_for(shown_acknowledged, timeout=5)
    assert f"by <@{RAJ}> at Sat 26 Dec 2026 02:21 GMT" in json.dumps(
        alert_dms(deployment, taken)[0]["blocks"]
    )
    assert buttons(alert_dms(deployment, ignored)[0]) == [button]  # the other alert still open
    assert unanswered_posts(deployment, ignored) == []

    # Stopped politely this time; back before the EDT-channel posts are due.
    server = restart_just_before(deployment, server, SATURDAY + 2 * REPAGE, signal.SIGTERM)
    [post] = wait_for(lambda: unanswered_posts(deployment, ignored), timeout=10)
    assert f"*Did not answer:* <@{RAJ}>" in post["blocks"][1]["text"]["text"]
    assert post["text"] == f"Handover referral {ignored}: on-call alert not acknowledged"
    [unanswered] = wait_for(lambda: events(deployment, ignored, "on_call_unanswered"))
    assert unanswered["at"] == "2026-12-26T02:30:00+00:00"
    assert unanswered["detail"]["not_answered_by"] == ["edt-mgr-raj"]

    # Nothing more: each alert was re-paged once, and the acknowledged one never posted.
    deployment.advance(SATURDAY + 5 * REPAGE)
    deployment.wait_idle(settle=1.5)
    assert [len(alert_dms(deployment, r)) for r in (ignored, taken)] == [2, 2]
    assert len(unanswered_posts(deployment, ignored)) == 1
    assert unanswered_posts(deployment, taken) == []
    assert events(deployment, taken, "on_call_unanswered") == []
    assert deployment.query(
        "SELECT state FROM outbox WHERE referral_id = :r AND kind = 'oncall_unanswered'",
        r=taken,
    ) == [("cancelled",)]
    assert "SUMMARY-ONCALL" not in deployment.standin.all_text()

"""`handover serve` in Socket Mode, end to end: no inbound HTTP, everything through the WebSocket.

The stand-in runs with Socket Mode on; `serve` gets `SLACK_APP_TOKEN`, asks the stand-in's
`apps.connections.open` for a URL (Bolt's SocketModeHandler, with the WebClient's base URL
`SLACK_API_URL`) and connects. A weekend then happens as in the HTTP tests, but the slash
command, the modal submission, the button click and the Home tab all arrive as envelopes the
bot must ack within Slack's 3 seconds.
"""

from __future__ import annotations

import subprocess
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from bot.delivery import metadata
from handlers import ids
from tests.e2e.conftest import DeploymentFactory
from tests.e2e.harness import (
    EDT_CHANNEL,
    HANDOVER,
    Deployment,
    modal_state,
    slack_user_of,
    wait_for,
)

pytestmark = pytest.mark.slow

LONDON = ZoneInfo("Europe/London")
# Saturday 26 December 2026, 02:10 GMT (Boxing Day); Monday 28th is its substitute bank holiday.
SATURDAY = datetime(2026, 12, 26, 2, 10, tzinfo=LONDON)
TUESDAY_0900 = datetime(2026, 12, 29, 9, 0, tzinfo=LONDON)

EDT_AMY = slack_user_of("edt-amy")
EDT_MGR_RAJ = slack_user_of("edt-mgr-raj")  # edt_manager on shift over the weekend
HV_KPATEL = slack_user_of("hv-kpatel")  # hv-jsmith's deputy (hv-jsmith is on leave)
APP_TOKEN = "xapp-1-A0HANDOVER-e2e-socket"


def start_in_socket_mode(deployment: Deployment) -> Any:
    """`handover serve` with SLACK_APP_TOKEN; waits until its WebSocket is connected."""
    env = {**deployment.env, "SLACK_APP_TOKEN": APP_TOKEN}
    env.pop("SLACK_SIGNING_SECRET")  # Socket Mode needs no signing secret
    process = deployment.start("serve", env=env)
    wait_for(lambda: process.poll() is not None or deployment.standin.socket_connections(), 30)
    assert process.poll() is None, deployment.logs()
    return process


def by_type(messages: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [m for m in messages if (m.get("metadata") or {}).get("event_type") == event_type]


def log_events(deployment: Deployment, referral_id: str, event: str) -> list[dict[str, Any]]:
    return [e for e in deployment.log(referral_id) if e["event"] == event]


def assert_acked_at_once(envelope: dict[str, Any]) -> None:
    """Acked on the first delivery, within Slack's 3 seconds (no retry was needed)."""
    assert envelope["state"] == "acked", envelope
    assert envelope["ack"]["late"] is False and envelope["ack"]["retry_attempt"] == 0
    assert [a["retry_attempt"] for a in envelope["attempts"]] == [0]
    assert envelope["via"] == "socket"


def test_a_weekend_in_socket_mode(new_deployment: DeploymentFactory) -> None:
    # The transport is under test here; the core loop runs on both databases in HTTP mode.
    deployment = new_deployment("sqlite", SATURDAY, standin_args=("--socket-mode",))
    start_in_socket_mode(deployment)
    standin = deployment.standin
    assert [c["method"] for c in standin.calls()][:2] == ["auth.test", "apps.connections.open"]

    # `/handover` in the EDT channel opens the referral modal, through the socket.
    command = standin.deliver("command", user=EDT_AMY, text="", channel=EDT_CHANNEL)
    assert_acked_at_once(command)
    assert command["type"] == "slash_commands" and command["payload"]["team_id"] == "T0STANDIN"
    opened = wait_for(lambda: standin.calls("views.open"), timeout=10)
    view = opened[-1]["response"]["view"]
    assert view["callback_id"] == ids.REFERRAL_MODAL

    # Submitting it: a plain ack (no response_action) closes the modal.
    submitted = standin.deliver(
        "view_submission",
        user=EDT_AMY,
        view_id=view["id"],
        values=modal_state(
            external_ref="LCS-2026-009001",
            category="neglect",
            urgency="standard",
            people=("hv-jsmith",),
            roles=("police_dau",),
            summary="Neighbour reports shouting; SUMMARY-SOCKET-5150",
        ),
    )
    assert_acked_at_once(submitted)
    assert submitted["accepts_response_payload"] is True and submitted["ack"]["payload"] is None
    [(referral_id, source)] = deployment.query(
        "SELECT referral_id, source FROM referrals WHERE external_ref = 'LCS-2026-009001'"
    )
    assert source == "slack"

    # At once: the on-call EDT manager is alerted.
    deployment.settle()
    alerts = [
        m["metadata"]["event_payload"]
        for m in by_type(standin.dm(EDT_MGR_RAJ), metadata.ALERT_EVENT_TYPE)
        if m["metadata"]["event_payload"]["kind"] == "on_call"
    ]
    assert [a["referral_id"] for a in alerts] == [referral_id]
    (alerted,) = log_events(deployment, referral_id, "on_call_alerted")
    assert alerted["at"] == "2026-12-26T02:10:00+00:00"

    # Slack refreshes the connection over the holiday: the bot reconnects by itself.
    assert standin.post("socket/disconnect", {"reason": "refresh_requested"})["connections"] == 1
    wait_for(lambda: [c["id"] for c in standin.socket_connections()] == ["link-2"], timeout=15)
    assert len(standin.calls("apps.connections.open")) == 2

    # Nothing for the health visitor's deputy until Tuesday 09:00.
    assert by_type(standin.dm(HV_KPATEL), metadata.PROMPT_EVENT_TYPE) == []
    deployment.advance(TUESDAY_0900)
    [prompt] = by_type(standin.dm(HV_KPATEL), metadata.PROMPT_EVENT_TYPE)
    assert prompt["metadata"]["event_payload"]["referral_id"] == referral_id
    (sent,) = [
        e
        for e in log_events(deployment, referral_id, "prompt_sent")
        if e["recipient"] == "hv-kpatel"
    ]
    assert sent["at"] == "2026-12-29T09:00:00+00:00" and sent["detail"]["ts"] == prompt["ts"]

    # The deputy clicks Acknowledge: the click arrives through the new connection.
    click = standin.deliver("click", user=HV_KPATEL, action_id=ids.ACK, ts=prompt["ts"])
    assert_acked_at_once(click)
    assert click["attempts"][0]["connection"] == "link-2"
    (acknowledged,) = wait_for(
        lambda: log_events(deployment, referral_id, "acknowledged"), timeout=20
    )
    assert acknowledged["actor"] == "hv-kpatel"
    assert acknowledged["at"] == "2026-12-29T09:00:00+00:00"
    wait_for(
        lambda: [c for c in standin.calls("chat.update") if c["args"]["ts"] == prompt["ts"]],
        timeout=10,
    )

    # She opens the app's Home tab: it is published for her.
    home = standin.deliver("event", user=HV_KPATEL, event={"type": "app_home_opened"})
    assert_acked_at_once(home)
    publishes = wait_for(
        lambda: [c for c in standin.calls("views.publish") if c["args"]["user_id"] == HV_KPATEL],
        timeout=10,
    )
    assert publishes[-1]["status"] == 200

    # Every envelope was acked on its first delivery; the summary never left the database.
    envelopes = standin.get("envelopes")["envelopes"]
    assert {e["state"] for e in envelopes} == {"acked"}
    assert "SUMMARY-SOCKET-5150" not in standin.all_text()


def test_serve_in_socket_mode_refused_by_slack_exits_1_without_a_traceback(
    new_deployment: DeploymentFactory,
) -> None:
    deployment = new_deployment(
        "sqlite", SATURDAY, standin_args=("--socket-mode", "--app-token", "xapp-1-the-real-one")
    )
    env = {**deployment.env, "SLACK_APP_TOKEN": APP_TOKEN}
    result = subprocess.run(
        [*HANDOVER, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stderr
    assert "handover: Slack refused SLACK_APP_TOKEN (invalid_auth)" in result.stderr
    assert "Traceback" not in result.stderr
    assert APP_TOKEN not in result.stderr + result.stdout

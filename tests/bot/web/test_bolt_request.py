"""Bolt is handed the body the guard parsed (bot/web/http.py's `bolt_request`): the request it
gets must be the one Bolt's own Flask adapter would have made from the raw body."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from slack_bolt.request import BoltRequest

from bot.web.http import bolt_request
from bot.web.slack_guard import FORM, JSON, Accepted, check_slack_request
from tests.e2e.harness import slack_signature

SECRET = "bolt-request-test-secret"

CLICK = {
    "type": "block_actions",
    "team": {"id": "T0STANDIN", "domain": "handover"},
    "user": {"id": "U0HV01", "username": "kpatel", "team_id": "T0STANDIN"},
    "api_app_id": "A0HANDOVER",
    "container": {"type": "message", "message_ts": "1.2", "channel_id": "D0HV01"},
    "trigger_id": "1.2.trigger",
    "channel": {"id": "D0HV01", "name": "directmessage"},
    "response_url": "https://hooks.slack.com/actions/T0/1/x",
    "actions": [{"action_id": "handover_ack", "block_id": "b", "value": "17", "type": "button"}],
}
COMMAND = {
    "team_id": "T0STANDIN",
    "channel_id": "C0EDT",
    "user_id": "U0EDT01",
    "command": "/handover",
    "text": "oncall",
    "response_url": "https://hooks.slack.com/commands/T0/1/x",
    "trigger_id": "1.2.trigger",
    "is_enterprise_install": "false",
    "enterprise_id": "",
}
EVENT = {
    "type": "event_callback",
    "team_id": "T0STANDIN",
    "api_app_id": "A0HANDOVER",
    "event_id": "Ev0001",
    "event": {"type": "app_home_opened", "user": "U0HV01", "tab": "home"},
    "authorizations": [{"team_id": "T0STANDIN", "user_id": "U0BOT", "is_bot": True}],
}
SUBMISSION = {
    "type": "view_submission",
    "team": {"id": "T0STANDIN"},
    "user": {"id": "U0HV01"},
    "view": {"callback_id": "handover_has_info", "private_metadata": "{}", "state": {}},
}


def signed(body: bytes, content_type: str) -> dict[str, str]:
    return {"Content-Type": content_type, **slack_signature(body, secret=SECRET)}


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (urlencode({"payload": json.dumps(CLICK)}).encode(), FORM),
        (urlencode(COMMAND).encode(), FORM),
        (json.dumps(EVENT).encode(), JSON),
        (urlencode({"payload": json.dumps(SUBMISSION)}).encode(), FORM),
        (json.dumps({"type": "url_verification", "challenge": "c" * 20}).encode(), JSON),
    ],
    ids=["click", "command", "event", "view_submission", "url_verification"],
)
def test_the_request_is_the_one_bolts_adapter_would_make(body: bytes, content_type: str) -> None:
    headers = signed(body, content_type)
    verdict = check_slack_request(body, headers, signing_secret=SECRET, now=time.time())
    assert isinstance(verdict, Accepted)
    ours = bolt_request(verdict, body.decode(), "a=1", headers)
    bolts = BoltRequest(body=body.decode(), query="a=1", headers=headers)
    assert ours.body == bolts.body
    assert ours.raw_body == bolts.raw_body == body.decode()
    assert (ours.mode, ours.content_type) == ("http", bolts.content_type)
    assert (ours.headers, ours.query) == (bolts.headers, bolts.query)
    assert dict(ours.context) == dict(bolts.context)
    assert ours.to_copyable().body == bolts.body  # as a lazy listener's copy would read it


def test_a_command_that_mentions_payload_is_still_a_command() -> None:
    # Bolt's own parser takes any form body containing "payload" for an interaction.
    body = urlencode({**COMMAND, "text": "log payload"}).encode()
    headers = signed(body, FORM)
    verdict = check_slack_request(body, headers, signing_secret=SECRET, now=time.time())
    assert isinstance(verdict, Accepted) and verdict.kind == "command"
    request = bolt_request(verdict, body.decode(), "", headers)
    assert (request.body["command"], request.body["text"]) == ("/handover", "log payload")
    assert request.context.user_id == "U0EDT01"

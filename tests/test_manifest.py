"""manifest.yml validates against Slack's schema and matches what the code registers and calls."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import jsonschema
import pytest
import yaml
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient

from bot.clock import FixedClock
from bot.context import Services
from bot.db import make_session_factory
from bot.settings import Settings
from bot.slack_standin import SlackStandIn
from bot.web.app import create_app
from bot.workspaces.oauth import REDIRECT_PATH
from handlers import ids

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "tests" / "data" / "manifest.schema.1.0.0.json"
SECRET = "manifest-test-secret"

# The bot scope each Web API method needs (Slack's method reference pages).
METHOD_SCOPES = {
    "chat_postMessage": {"chat:write"},
    "chat_update": {"chat:write"},
    "chat_delete": {"chat:write"},
    "chat_postEphemeral": {"chat:write"},
    "conversations_open": {"im:write"},
    "conversations_history": {"im:history", "channels:history", "groups:history"},
    "users_lookupByEmail": {"users:read.email", "users:read"},
    "users_info": {"users:read"},
    "views_open": set(),
    "views_publish": set(),
    "views_update": set(),
    "auth_test": set(),
}


@pytest.fixture(scope="module")
def manifest() -> dict:
    return yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))


def test_manifest_validates_against_slacks_schema(manifest: dict) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft7Validator(schema).validate(manifest)


def test_the_command_and_urls_point_at_the_bolt_endpoint(manifest: dict) -> None:
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == ids.COMMAND
    settings = manifest["settings"]
    urls = [
        command["url"],
        settings["event_subscriptions"]["request_url"],
        settings["interactivity"]["request_url"],
        settings["interactivity"]["message_menu_options_url"],
    ]
    assert all(url.endswith("/slack/events") for url in urls)
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True


def test_the_oauth_redirect_is_bolts_on_the_same_host(manifest: dict) -> None:
    # Partner workspaces install through it (docs/partner-workspaces.md).
    [redirect] = manifest["oauth_config"]["redirect_urls"]
    events = manifest["settings"]["event_subscriptions"]["request_url"]
    assert redirect == events.removesuffix("/slack/events") + REDIRECT_PATH


def _methods_called_by_the_bot() -> set[str]:
    pattern = re.compile(r"\.(chat_\w+|conversations_\w+|users_\w+|views_\w+|auth_test)\(")
    called: set[str] = set()
    for folder in ("bot", "handlers"):
        for path in (ROOT / folder).rglob("*.py"):
            if "slack_standin" in path.parts:
                continue
            called |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return called


def test_scopes_are_exactly_what_the_calls_need(manifest: dict) -> None:
    called = _methods_called_by_the_bot()
    assert called, "no Web API calls found: the scan is broken"
    unknown = called - METHOD_SCOPES.keys()
    assert not unknown, f"add the scopes of {sorted(unknown)} to METHOD_SCOPES and the manifest"
    needed = {"commands"}.union(*(METHOD_SCOPES[m] for m in called))
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == needed


def _signed(body: str) -> BoltRequest:
    timestamp = str(int(time.time()))
    signature = hmac.new(
        SECRET.encode(), f"v0:{timestamp}:{body}".encode(), hashlib.sha256
    ).hexdigest()
    content_type = (
        "application/json" if body.startswith("{") else "application/x-www-form-urlencoded"
    )
    return BoltRequest(
        body=body,
        headers={
            "content-type": [content_type],
            "x-slack-request-timestamp": [timestamp],
            "x-slack-signature": [f"v0={signature}"],
        },
    )


@pytest.fixture
def bolt_app(engine):
    with SlackStandIn() as slack:
        settings = Settings(
            database_url=str(engine.url), slack_bot_token="xoxb-test", slack_signing_secret=SECRET
        )
        services = Services(
            settings=settings,
            session_factory=make_session_factory(engine),
            clock=FixedClock(datetime(2026, 12, 26, 2, 10, tzinfo=UTC)),
        )
        client = WebClient(base_url=slack.url, token="xoxb-test")
        app = create_app(settings, client, services=services)
        app.standin = slack  # the test reads what the command answered
        yield app


def _event(event_type: str) -> str:
    return json.dumps(
        {
            "type": "event_callback",
            "team_id": "T0STANDIN",
            "api_app_id": "A0HANDOVER",
            "event_id": f"Ev{event_type}",
            "event_time": int(time.time()),
            "event": {"type": event_type, "user": "U0NOBODY01", "tab": "home"},
        }
    )


def test_every_subscribed_event_has_a_listener_and_others_have_none(
    manifest: dict, bolt_app
) -> None:
    for event_type in manifest["settings"]["event_subscriptions"]["bot_events"]:
        assert bolt_app.dispatch(_signed(_event(event_type))).status == 200, event_type
    # An event the manifest does not subscribe to finds no listener.
    assert bolt_app.dispatch(_signed(_event("reaction_added"))).status == 404


def test_the_manifest_command_has_a_listener(manifest: dict, bolt_app) -> None:
    command = manifest["features"]["slash_commands"][0]["command"]
    response_url = urllib.parse.quote(bolt_app.standin.response_url("help"), safe="")
    body = (
        f"command={command}&text=help&user_id=U0NOBODY01&team_id=T0STANDIN"
        f"&channel_id=C0EDTCARDS&trigger_id=1.2.3&response_url={response_url}"
    )
    assert bolt_app.dispatch(_signed(body)).status == 200
    deadline = time.monotonic() + 10
    while not bolt_app.standin.responses("help") and time.monotonic() < deadline:
        time.sleep(0.05)
    [answer] = bolt_app.standin.responses("help")
    assert "/handover oncall" in json.dumps(answer)
    other = body.replace(command, "/other")
    assert bolt_app.dispatch(_signed(other)).status == 404

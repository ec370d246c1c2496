"""The checks `/slack/events` makes before Bolt: the signature first, then the body's shape."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from bot.web.slack_guard import (
    FORM,
    JSON,
    MAX_DEPTH,
    Accepted,
    Refused,
    check_slack_request,
    request_kind,
)

SECRET = "guard-test-signing-secret"
NOW = 1_800_000_000
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "slack-samples"


def signed(body: bytes, content_type: str = FORM, *, at: int = NOW, secret: str = SECRET):
    digest = hmac.new(secret.encode(), f"v0:{at}:".encode() + body, hashlib.sha256).hexdigest()
    return {
        "X-Slack-Request-Timestamp": str(at),
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": content_type,
    }


def check(body: bytes, headers: dict[str, str]) -> Accepted | Refused:
    return check_slack_request(body, headers, signing_secret=SECRET, now=NOW)


def sample(name: str, **fill: Any) -> dict[str, Any]:
    """A Slack sample payload (its strings are empty) with the IDs a real one carries."""
    payload = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    payload.update(fill)
    if isinstance(payload.get("user"), dict):
        payload["user"]["id"] = "U0SAMPLE01"
    if isinstance(payload.get("response_url"), str):
        payload["response_url"] = "https://hooks.slack.com/actions/T0/1/x"
    return payload


def form(payload: dict[str, Any]) -> bytes:
    return urlencode({"payload": json.dumps(payload)}).encode()


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("interactive-components_BlockActionPayload.json", "block_actions"),
        ("interactive-components_MessageShortcutPayload.json", "message_action"),
        ("views_ViewClosedPayload.json", "view_closed"),
        ("views_ViewSubmissionPayload.json", "view_submission"),
    ],
)
def test_slack_samples_are_accepted(name: str, kind: str) -> None:
    body = form(sample(name))
    assert check(body, signed(body)) == Accepted(kind, signed(body)["X-Slack-Signature"][3:], NOW)


def test_an_event_a_command_and_a_url_verification_are_accepted() -> None:
    event = sample("events_AppHomeOpenedPayload.json", type="event_callback", event_id="Ev01")
    body = json.dumps(event).encode()
    assert check(body, signed(body, JSON)).kind == "event_callback"
    command = json.loads((SAMPLES / "slash-commands_SlashCommandPayload.json").read_text())
    command.update(command="/handover", user_id="U0SAMPLE01", response_url="https://h.example/1")
    body = urlencode(command).encode()
    accepted = check(body, signed(body))
    assert isinstance(accepted, Accepted) and accepted.kind == "command"
    assert accepted.replay_guarded
    body = b'{"type":"url_verification","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmH"}'
    verification = check(body, signed(body, "application/json; charset=utf-8"))
    assert verification.kind == "url_verification" and not verification.replay_guarded


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing or malformed X-Slack-Request-Timestamp"),
        ({"X-Slack-Request-Timestamp": "soon"}, "missing or malformed X-Slack-Request-Timestamp"),
        ({"X-Slack-Request-Timestamp": "٣٣"}, "missing or malformed X-Slack-Request-Timestamp"),
        ({"X-Slack-Request-Timestamp": "9" * 30}, "missing or malformed X-Slack-Request-Timestamp"),
        (signed(b"payload=x", at=NOW - 301), "stale X-Slack-Request-Timestamp"),
        (signed(b"payload=x", at=NOW + 301), "stale X-Slack-Request-Timestamp"),
        (signed(b"payload=x", secret="guessed"), "invalid signature"),
        ({**signed(b"payload=x"), "X-Slack-Signature": "v0=zz\u00e9"}, "invalid signature"),
        ({"X-Slack-Request-Timestamp": str(NOW)}, "invalid signature"),
    ],
    ids=[
        "no-headers",
        "word",
        "arabic-digits",
        "huge",
        "stale",
        "future",
        "wrong-secret",
        "non-ascii-signature",
        "no-signature",
    ],
)
def test_a_bad_signature_is_401_before_the_body_is_read(
    headers: dict[str, str], reason: str
) -> None:
    # The body is garbage: a 400 would show that it was parsed before the signature held.
    assert check(b"payload=x", headers) == Refused(401, reason)


def test_invalid_utf8_with_a_valid_signature_is_400_not_an_exception() -> None:
    body = b"payload=\xff\xfe"
    assert check(body, signed(body)) == Refused(400, "the body is not UTF-8")


def block_actions(**changes: Any) -> dict[str, Any]:
    payload = sample("interactive-components_BlockActionPayload.json")
    payload["actions"] = [{"action_id": "handover_ack", "block_id": "b", "value": "1"}]
    payload.update(changes)
    return payload


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (block_actions(team=5), "team must be a string or an object"),
        (block_actions(team={"id": ["T0"]}), "team.id must be a string"),
        (block_actions(user="U0SAMPLE01"), "user must be an object with an id"),
        (block_actions(user={"id": 5}), "user.id must be a Slack ID"),
        (block_actions(user={"id": "U0 1"}), "user.id must be a Slack ID"),
        (block_actions(user={"id": "U0\x00"}), "user.id must be a Slack ID"),
        (block_actions(channel="C0"), "channel must be an object"),
        (block_actions(actions=[]), "actions must be a non-empty array"),
        (
            block_actions(actions=[{"action_id": 5}]),
            "each action must be an object with an action_id",
        ),
        (block_actions(response_url="javascript:x"), "response_url must be an http(s) URL"),
        (block_actions(type=["block_actions"]), "unknown payload type"),
        (block_actions(type="dialog_submission"), "unknown payload type"),
        (
            {**sample("views_ViewSubmissionPayload.json"), "view": "V0"},
            "view must be an object with a callback_id",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_a_payload_bolt_could_not_route_is_400(payload: dict[str, Any], reason: str) -> None:
    body = form(payload)
    assert check(body, signed(body)) == Refused(400, reason)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"payload=%FF", FORM, "the form is malformed or not UTF-8"),
        (b"payload=[]", FORM, "payload must be a JSON object"),
        (b"payload=nope", FORM, "payload is not valid JSON"),
        (b"payload=" + b"%5B" * 3000, FORM, "payload is not valid JSON"),
        (b"a=1&a=2", FORM, "the form repeats the field 'a'"),
        (b"&".join(b"f%d=1" % i for i in range(101)), FORM, "the form is malformed or not UTF-8"),
        (b"hello=world", FORM, "not a Slack request"),
        (b"command=%2Fhandover&user_id=U1", FORM, "a slash command needs response_url"),
        (b'{"type":"event_callback","event":[]}', JSON, "event must be an object"),
        (
            b'{"type":"event_callback","event_id":["x"],"event":{"type":"x"}}',
            JSON,
            "event_id must be a short ASCII string",
        ),
        (
            b'{"type":"event_callback","team_id":5,"event":{"type":"x"}}',
            JSON,
            "team_id must be a string",
        ),
        (
            b'{"type":"event_callback","event":{"type":"x","user":[1]}}',
            JSON,
            "user must be a string or an object",
        ),
        (b"[1]", JSON, "the body must be a JSON object"),
        (b'{"type": NaN}', JSON, "the body is not valid JSON"),
        (b'{"type":"url_verification"}', JSON, "url_verification needs a challenge string"),
        (
            b"{}",
            "text/plain",
            "content type must be application/x-www-form-urlencoded or application/json",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) > 20 else "",
)
def test_a_malformed_body_is_400(body: bytes, content_type: str, reason: str) -> None:
    assert request_kind(body, content_type) == Refused(400, reason)


def test_nesting_is_limited_but_slacks_own_depth_passes() -> None:
    deep = {"type": "event_callback", "event": {"type": "x"}}
    node = deep["event"]
    for _ in range(MAX_DEPTH - 3):
        node["a"] = {}
        node = node["a"]
    assert request_kind(json.dumps(deep).encode(), JSON) == "event_callback"
    node["a"] = {"b": {}}
    assert request_kind(json.dumps(deep).encode(), JSON) == Refused(
        400, f"the body nests deeper than {MAX_DEPTH} levels"
    )

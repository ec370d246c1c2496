"""What `/slack/events` checks before Bolt or the database sees a request.

Order matters: the signature first (a 401 needs nothing but the secret), then the body's shape
(a 400 for anything Bolt could not parse or route: invalid UTF-8, a content type Slack never
sends, JSON that is not an object or nests too deep, a `team` or `user` of the wrong type), and
only then, in the caller, the database. The shapes follow Slack's payloads in
tests/data/slack-samples; fields the handlers read defensively (a view's state, an
action's value) are left to them so that they can give their usual answers.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

SIGNATURE_WINDOW_SECONDS = 300  # as Bolt's own check (slack_sdk's SignatureVerifier)
MAX_DEPTH = 48  # Slack's deepest payloads (rich text in a message) nest about 15 levels
MAX_FORM_FIELDS = 100

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# Request kinds
URL_VERIFICATION = "url_verification"
EVENT_CALLBACK = "event_callback"
APP_RATE_LIMITED = "app_rate_limited"
SSL_CHECK = "ssl_check"
COMMAND = "command"
INTERACTIVE_TYPES = frozenset(
    {"block_actions", "block_suggestion", "view_submission", "view_closed", "shortcut",
     "message_action"}
)  # fmt: skip
# A replay of these could repeat a side effect or reveal data again: each is answered once.
# Events have their own dedupe by event_id; url_verification and ssl_check change nothing; an
# options request (block_suggestion) changes nothing, shows only rota names to a Slack user,
# and the same query typed twice within a second is a genuine second request.
REPLAY_GUARDED = (INTERACTIVE_TYPES - {"block_suggestion"}) | {COMMAND}
# Kinds whose listeners ack before any database work and guard against replays themselves,
# after the ack (handlers/deferred.py): the HTTP layer hands them to Bolt at once.
ACKED_FIRST = frozenset({COMMAND, "block_actions"})


@dataclass(frozen=True)
class Refused:
    """The request is answered `status` with `{"error": reason}` before Bolt sees it."""

    status: int
    reason: str


@dataclass(frozen=True)
class Accepted:
    """A correctly signed request of a shape Bolt can parse."""

    kind: str  # a payload type, `command`, `event_callback`, ...
    signature: str  # the hex HMAC: unique to (timestamp, body)
    timestamp: int
    # The body as Bolt reads it (the payload of an interaction, the fields of a command, the
    # JSON of an event), parsed once here and handed on so that Bolt need not parse it again.
    body: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def replay_guarded(self) -> bool:
        return self.kind in REPLAY_GUARDED

    @property
    def acked_first(self) -> bool:
        """Answered without the database: its listener acks, then works (and guards replays)."""
        return self.kind in ACKED_FIRST


def check_slack_request(
    body: bytes, headers: Mapping[str, str], *, signing_secret: str, now: float
) -> Accepted | Refused:
    """Check the signature (at `now`, unix seconds), then the shape; never raises."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "").strip()
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return Refused(401, "missing or malformed X-Slack-Request-Timestamp")
    if abs(now - int(timestamp)) > SIGNATURE_WINDOW_SECONDS:
        return Refused(401, "stale X-Slack-Request-Timestamp")
    # Over the raw bytes: slack_sdk's verifier decodes the body first and raises on bad UTF-8.
    base = b"v0:" + timestamp.encode("ascii") + b":" + body
    digest = hmac.new(signing_secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    given = headers.get("X-Slack-Signature", "").strip()
    if not hmac.compare_digest(f"v0={digest}".encode(), given.encode("utf-8", "replace")):
        return Refused(401, "invalid signature")
    parsed = parse_request(body, headers.get("Content-Type", ""))
    if isinstance(parsed, Refused):
        return parsed
    kind, data = parsed
    return Accepted(kind, digest, int(timestamp), data)


def request_kind(body: bytes, content_type: str) -> str | Refused:
    """The kind of a Slack request body, or why it is refused (400)."""
    parsed = parse_request(body, content_type)
    return parsed if isinstance(parsed, Refused) else parsed[0]


def parse_request(body: bytes, content_type: str) -> tuple[str, dict[str, Any]] | Refused:
    """The kind of a Slack request body and the body as Bolt reads it, or why it is refused."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Refused(400, "the body is not UTF-8")
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == JSON:
        return _json_kind(text)
    if media_type == FORM:
        return _form_kind(text)
    return Refused(400, f"content type must be {FORM} or {JSON}")


def _parse_object(text: str, what: str) -> dict[str, Any] | Refused:
    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(text, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        return Refused(400, f"{what} is not valid JSON")
    if not isinstance(data, dict):
        return Refused(400, f"{what} must be a JSON object")
    if _depth(data) > MAX_DEPTH:
        return Refused(400, f"{what} nests deeper than {MAX_DEPTH} levels")
    return data


def _depth(value: Any) -> int:
    """How deep objects and arrays nest in `value` (iteratively: it may be very deep)."""
    if not isinstance(value, dict | list):
        return 0
    deepest = 0
    pending = [(value, 1)]  # only objects and arrays: a scalar adds no depth
    while pending:
        item, depth = pending.pop()
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                pending.append((child, depth + 1))
    return deepest


def _json_kind(text: str) -> tuple[str, dict[str, Any]] | Refused:
    data = _parse_object(text, "the body")
    if isinstance(data, Refused):
        return data
    kind = data.get("type")
    if kind == URL_VERIFICATION:
        challenge = data.get("challenge")
        if not isinstance(challenge, str) or not 0 < len(challenge) <= 256:
            return Refused(400, "url_verification needs a challenge string")
        return kind, data
    if kind == APP_RATE_LIMITED:
        return kind, data
    if kind != EVENT_CALLBACK:
        return Refused(400, "unknown request type")
    problem = (
        _optional(data, "team_id", str)
        or _optional(data, "api_app_id", str)
        or _optional(data, "enterprise_id", str)
        or _optional(data, "authorizations", list)
        or _event_id_problem(data.get("event_id"))
        or _event_problem(data.get("event"))
    )
    if problem:
        return Refused(400, problem)
    authorizations = data.get("authorizations") or []
    if not all(isinstance(a, dict) for a in authorizations):
        return Refused(400, "authorizations must be objects")
    return kind, data


def _event_id_problem(event_id: Any) -> str | None:
    if event_id is None:
        return None
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or not event_id.isascii():
        return "event_id must be a short ASCII string"
    return None


def _event_problem(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "event must be an object"
    if not isinstance(event.get("type"), str):
        return "event.type must be a string"
    return (
        _optional(event, "user", (str, dict))
        or _optional(event, "channel", (str, dict))
        or _optional(event, "team", (str, dict))
        or _optional(event, "subtype", str)
        or _optional(event, "tab", str)
    )


def _optional(data: dict[str, Any], key: str, types: type | tuple[type, ...]) -> str | None:
    """A problem when `data[key]` is present, not null and not of `types`."""
    value = data.get(key)
    if value is None or isinstance(value, types):
        return None
    names = types if isinstance(types, tuple) else (types,)
    wanted = " or ".join(_TYPE_NAMES[t] for t in names)
    return f"{key} must be {wanted}"


_TYPE_NAMES = {str: "a string", dict: "an object", list: "an array"}


def _form_kind(text: str) -> tuple[str, dict[str, Any]] | Refused:
    try:
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        return Refused(400, "the form is malformed or not UTF-8")
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            return Refused(400, f"the form repeats the field {key[:40]!r}")
        fields[key] = value
    if "payload" in fields:
        return _payload_kind(fields["payload"])
    if "ssl_check" in fields:
        return SSL_CHECK, fields
    if "command" in fields:
        for name in ("command", "user_id", "response_url"):
            if not fields.get(name):
                return Refused(400, f"a slash command needs {name}")
        if any("\x00" in value for value in fields.values()):
            return Refused(400, "a slash command's fields cannot hold NUL characters")
        problem = _id_problem("user_id", fields["user_id"]) or _url_problem(
            "response_url", fields["response_url"]
        )
        return Refused(400, problem) if problem else (COMMAND, fields)
    return Refused(400, "not a Slack request")


def _payload_kind(text: str) -> tuple[str, dict[str, Any]] | Refused:
    payload = _parse_object(text, "payload")
    if isinstance(payload, Refused):
        return payload
    kind = payload.get("type")
    if not isinstance(kind, str) or kind not in INTERACTIVE_TYPES:
        return Refused(400, "unknown payload type")
    user = payload.get("user")
    if not isinstance(user, dict):
        return Refused(400, "user must be an object with an id")
    problem = (
        _id_problem("user.id", user.get("id"))
        or _url_problem("response_url", payload.get("response_url"), optional=True)
        or _optional(payload, "team", (str, dict))
        or _nested_id(payload, "team")
        or _optional(payload, "enterprise", (str, dict))
        or _nested_id(payload, "enterprise")
        or _optional(payload, "channel", dict)
        or _nested_id(payload, "channel")
        or _optional(payload, "api_app_id", str)
        or _shape_of(kind, payload)
    )
    return Refused(400, problem) if problem else (kind, payload)


def _id_problem(name: str, value: Any) -> str | None:
    """Slack IDs (U0123ABCD) are short printable ASCII; the handlers look them up as keys."""
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        return f"{name} must be a Slack ID"
    if not value.isascii() or not value.isprintable() or " " in value:
        return f"{name} must be a Slack ID"
    return None


def _url_problem(name: str, value: Any, *, optional: bool = False) -> str | None:
    """Replies go to a response_url: it must be an http(s) URL."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.startswith(("https://", "http://")):
        return f"{name} must be an http(s) URL"
    if len(value) > 2048 or not value.isascii() or not value.isprintable() or " " in value:
        return f"{name} must be an http(s) URL"
    return None


def _nested_id(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if isinstance(value, dict) and not isinstance(value.get("id"), (str, type(None))):
        return f"{key}.id must be a string"
    return None


def _shape_of(kind: str, payload: dict[str, Any]) -> str | None:
    """What Bolt needs to route each payload type to its listener."""
    if kind == "block_actions":
        actions = payload.get("actions")
        if not isinstance(actions, list) or not actions:
            return "actions must be a non-empty array"
        for action in actions:
            if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
                return "each action must be an object with an action_id"
            if _optional(action, "block_id", str):
                return "action block_id must be a string"
        return None
    if kind == "block_suggestion":
        if not isinstance(payload.get("action_id"), str):
            return "action_id must be a string"
        return _optional(payload, "block_id", str)
    if kind in ("view_submission", "view_closed"):
        view = payload.get("view")
        if not isinstance(view, dict) or not isinstance(view.get("callback_id"), str):
            return "view must be an object with a callback_id"
        return _optional(view, "private_metadata", str)
    if not isinstance(payload.get("callback_id"), str):  # shortcut, message_action
        return "callback_id must be a string"
    return None

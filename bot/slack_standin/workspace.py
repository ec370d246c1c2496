"""The simulated Slack workspace: its state and the Web API methods the bot uses.

``Workspace.dispatch`` takes one parsed call and returns the HTTP reply; it never sleeps or does
I/O, so the HTTP layer can hold no locks while it waits out an injected hang.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.slack_standin.blockkit import MAX_MESSAGE_TEXT, check_message_blocks, check_view
from bot.slack_standin.model import (
    DEFAULT_RATE_LIMIT,
    Fault,
    RateLimit,
    RecordedCall,
    Reply,
    StandInUser,
)
from bot.slack_standin.specs import SpecTable, load_spec_table

# Arguments that slack_sdk sends as JSON text inside form bodies and as objects inside JSON bodies.
JSON_ARGUMENTS = ("blocks", "attachments", "view", "metadata")

_STATUS_ERRORS = {
    500: "fatal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


class SlackError(Exception):
    """A Slack error answer (``ok: false``) raised inside a method implementation."""

    def __init__(self, error: str, messages: Iterable[str] = (), **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.messages = list(messages)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The JSON body Slack would answer with."""
        body: dict[str, Any] = {"ok": False, "error": self.error, **self.extra}
        if self.messages:
            body["response_metadata"] = {"messages": self.messages}
        return body


def _truthy(value: Any) -> bool:
    return value is True or value == 1 or str(value).strip().lower() in ("1", "true")


def _ts_key(ts: Any, argument: str) -> Decimal:
    try:
        return Decimal(str(ts))
    except InvalidOperation as exc:
        raise SlackError("invalid_ts_" + argument) from exc


def _encode_cursor(ts: str) -> str:
    return base64.b64encode(f"next_ts:{ts}".encode()).decode()


def _decode_cursor(cursor: str) -> Decimal:
    try:
        text = base64.b64decode(cursor.encode(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise SlackError("invalid_cursor") from exc
    prefix, _, ts = text.partition(":")
    if prefix != "next_ts":
        raise SlackError("invalid_cursor")
    try:
        return Decimal(ts)
    except InvalidOperation as exc:
        raise SlackError("invalid_cursor") from exc


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


class Workspace:
    """One Slack workspace with a bot user, its users, channels, messages and views."""

    def __init__(
        self,
        *,
        team_id: str = "T0STANDIN",
        team_name: str = "Handover Stand-in",
        team_domain: str = "handover-standin",
        bot_user_id: str = "U0HANDOVER",
        bot_id: str = "B0HANDOVER",
        app_id: str = "A0HANDOVER",
        bot_name: str = "handover",
        users: Iterable[StandInUser] = (),
        channels: Iterable[str] = (),
        auto_create_channels: bool = False,
        allow_unknown_users: bool = False,
        tokens: Iterable[str] | None = None,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        clock: Callable[[], float] = time.time,
        spec_table: SpecTable | None = None,
    ) -> None:
        self.team_id = team_id
        self.team_name = team_name
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_name = bot_name
        self.auto_create_channels = auto_create_channels
        self.allow_unknown_users = allow_unknown_users
        self._tokens = frozenset(tokens) if tokens is not None else None
        self._rate_limit = rate_limit
        self._clock = clock
        self._spec = spec_table or load_spec_table()
        self._lock = threading.RLock()
        self._users: dict[str, StandInUser] = {}
        self._configured_channels = set(channels)
        self.add_users(users)
        self._revoked: set[str] = set()
        self._reset_state()

    # ----- configuration -------------------------------------------------------------------

    def _reset_state(self) -> None:
        with self._lock:
            self._channels: dict[str, dict[str, Any]] = {
                channel_id: {"id": channel_id, "is_im": False}
                for channel_id in self._configured_channels
            }
            self._dm_by_user: dict[str, str] = {}
            self._messages: dict[str, list[dict[str, Any]]] = {}
            self._ephemerals: list[dict[str, Any]] = []
            self._views: dict[str, dict[str, Any]] = {}
            self._view_by_external_id: dict[str, str] = {}
            self._home_by_user: dict[str, str] = {}
            self._calls: list[RecordedCall] = []
            self._responses: list[dict[str, Any]] = []
            self._faults: list[Fault] = []
            self._buckets: dict[str, tuple[float, float]] = {}
            self._last_ts_micros = 0
            self._view_counter = 0
            self._dm_counter = 0

    def reset(self) -> None:
        """Forget messages, views, calls, faults and revoked tokens; keep users and channels."""
        with self._lock:
            self._revoked.clear()
            self._reset_state()

    def add_users(self, users: Iterable[StandInUser]) -> None:
        """Add people to the directory (replacing any with the same ID)."""
        with self._lock:
            for user in users:
                self._users[user.id] = user

    def add_channels(self, channel_ids: Iterable[str]) -> None:
        """Create public channels that chat.postMessage may post to."""
        with self._lock:
            for channel_id in channel_ids:
                self._configured_channels.add(channel_id)
                self._channels.setdefault(channel_id, {"id": channel_id, "is_im": False})

    def set_rate_limit(self, rate_limit: RateLimit | None) -> None:
        """Change chat.postMessage's per-channel limit; ``None`` turns it off."""
        with self._lock:
            self._rate_limit = rate_limit
            self._buckets.clear()

    def inject(self, fault: Fault) -> None:
        """Queue a fault; the first queued fault matching a call is delivered."""
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[dict[str, Any]]:
        """The faults still queued."""
        with self._lock:
            return [fault.to_dict() for fault in self._faults if fault.remaining > 0]

    def revoke_token(self, token: str) -> None:
        """Make every later call with ``token`` answer ``token_revoked``."""
        with self._lock:
            self._revoked.add(token)

    def post_as_user(self, channel: str, user_id: str, text: str) -> str:
        """Store a message a person wrote in ``channel`` (a channel or user ID); return its ts."""
        with self._lock:
            channel_id = self._resolve_post_channel(channel)
            ts = self._next_ts()
            message = {"type": "message", "text": text, "user": user_id, "team": self.team_id}
            self._messages.setdefault(channel_id, []).append({**message, "ts": ts})
            return ts

    def record_response(self, name: str, body: Any) -> None:
        """Keep a message the app sent to a ``response_url`` (slash commands, interactions)."""
        with self._lock:
            self._responses.append(
                {"name": name, "body": copy.deepcopy(body), "timestamp": self._clock()}
            )

    # ----- inspection ----------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        """Every recorded call, oldest first, optionally only of one method."""
        with self._lock:
            return [copy.deepcopy(c) for c in self._calls if method in (None, c.method)]

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Stored messages (with ``channel`` and ``metadata``), oldest first."""
        with self._lock:
            channels = [channel] if channel is not None else list(self._messages)
            found = [
                {**copy.deepcopy(message), "channel": channel_id}
                for channel_id in channels
                for message in self._messages.get(channel_id, [])
            ]
        return sorted(found, key=lambda message: Decimal(message["ts"]))

    def dm_channel_for(self, user_id: str) -> str | None:
        """The DM channel between the app and ``user_id``, once one exists."""
        with self._lock:
            return self._dm_by_user.get(user_id)

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages, oldest first, optionally only those shown to ``user``."""
        with self._lock:
            return [copy.deepcopy(e) for e in self._ephemerals if user in (None, e["user"])]

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        """The Home tab last published for ``user_id``."""
        with self._lock:
            view_id = self._home_by_user.get(user_id)
            return copy.deepcopy(self._views[view_id]) if view_id else None

    def views(self) -> list[dict[str, Any]]:
        """Every modal and Home view, in the order they were first created."""
        with self._lock:
            return [copy.deepcopy(view) for view in self._views.values()]

    def responses(self, name: str | None = None) -> list[dict[str, Any]]:
        """Messages sent to response URLs, oldest first, optionally only to ``name``."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._responses if name in (None, r["name"])]

    def all_text(self) -> str:
        """Every string in every recorded call's arguments and response-URL message, one a line."""
        with self._lock:
            sent = [call.args for call in self._calls] + [r["body"] for r in self._responses]
            return "\n".join(text for item in sent for text in _strings(item))

    # ----- dispatch ------------------------------------------------------------------------

    def dispatch(self, method: str, args: dict[str, Any], bearer: str | None) -> Reply:
        """Answer one Web API call and record it."""
        args = dict(args)
        token = bearer or (args.get("token") if isinstance(args.get("token"), str) else None)
        # The token is a secret: it is never recorded.
        args.pop("token", None)
        _normalise_json_arguments(args)
        with self._lock:
            reply = self._answer(method, args, token)
            self._calls.append(
                RecordedCall(
                    method=method,
                    args=copy.deepcopy(args),
                    timestamp=self._clock(),
                    status=reply.status,
                    response=copy.deepcopy(reply.body),
                )
            )
        return reply

    def _answer(self, method: str, args: dict[str, Any], token: str | None) -> Reply:
        if not self._spec.is_known(method):
            return _error_reply(SlackError("unknown_method", req_method=method))
        try:
            self._authenticate(method, token)
        except SlackError as exc:
            return _error_reply(exc)
        spec = self._spec.methods.get(method)
        if spec is None:
            return _error_reply(
                SlackError(
                    "not_implemented_in_standin",
                    [f"[ERROR] {method} is a Slack method the stand-in does not simulate"],
                )
            )
        problems = spec.problems(args)
        if problems:
            return _error_reply(SlackError("invalid_arguments", problems))
        fault = self._take_fault(method)
        if fault is not None and not fault.after_apply:
            return self._deliver_before(fault)
        reply = self._apply(method, args)
        if fault is not None:
            # The call took effect; only its answer is lost or replaced.
            return self._deliver_after(fault, reply)
        return reply

    def _apply(self, method: str, args: dict[str, Any]) -> Reply:
        implementation = getattr(self, "_" + method.replace(".", "_"))
        try:
            body = implementation(args)
        except SlackError as exc:
            return _error_reply(exc)
        except _RateLimited as exc:
            return _ratelimited_reply(exc.retry_after)
        return Reply(status=200, body={"ok": True, **body})

    def _authenticate(self, method: str, token: str | None) -> None:
        if not token:
            raise SlackError("not_authed")
        if token in self._revoked:
            raise SlackError("token_revoked")
        if method == "apps.connections.open":
            # Socket Mode needs an app-level token; bot tokens are refused as on Slack.
            if not token.startswith("xapp-"):
                raise SlackError("not_allowed_token_type")
            return
        accepted = token in self._tokens if self._tokens is not None else token.startswith("xoxb-")
        if not accepted:
            raise SlackError("invalid_auth")

    def _take_fault(self, method: str) -> Fault | None:
        for fault in self._faults:
            if fault.matches(method):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _deliver_before(self, fault: Fault) -> Reply:
        if fault.kind == "status":
            return _status_reply(fault.status)
        if fault.kind == "ratelimit":
            return _ratelimited_reply(fault.retry_after)
        if fault.kind == "error":
            return _error_reply(SlackError(fault.error))
        # A hang that is not applied ends as a gateway failure, should the client still wait.
        return Reply(status=503, body=_status_reply(503).body, delay=fault.seconds)

    def _deliver_after(self, fault: Fault, applied: Reply) -> Reply:
        if fault.kind == "hang":
            return Reply(applied.status, applied.body, applied.headers, delay=fault.seconds)
        return self._deliver_before(fault)

    # ----- helpers ---------------------------------------------------------------------------

    def _next_ts(self) -> str:
        micros = max(int(self._clock() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _known_user(self, user_id: str) -> StandInUser | None:
        user = self._users.get(user_id)
        if user is None and self.allow_unknown_users and user_id[:1] in ("U", "W"):
            user = StandInUser(id=user_id, name=user_id.lower())
            self._users[user_id] = user
        return user

    def _open_dm(self, user_id: str) -> tuple[str, bool]:
        existing = self._dm_by_user.get(user_id)
        if existing is not None:
            return existing, True
        self._dm_counter += 1
        channel_id = f"D{self._dm_counter:010d}"
        self._channels[channel_id] = {
            "id": channel_id,
            "is_im": True,
            "user": user_id,
            "created": int(self._clock()),
        }
        self._dm_by_user[user_id] = channel_id
        return channel_id, False

    def _resolve_post_channel(self, channel: str) -> str:
        if channel[:1] in ("U", "W"):
            user = self._known_user(channel)
            if user is None:
                raise SlackError("channel_not_found")
            if user.deleted:
                raise SlackError("user_disabled")
            return self._open_dm(channel)[0]
        return self._existing_channel(channel, create=self.auto_create_channels)

    def _existing_channel(self, channel: str, *, create: bool = False) -> str:
        if channel in self._channels:
            return channel
        if create and channel[:1] in ("C", "G"):
            self._channels[channel] = {"id": channel, "is_im": False}
            return channel
        raise SlackError("channel_not_found")

    def _find_message(self, channel: str, ts: str) -> dict[str, Any]:
        for message in self._messages.get(channel, []):
            if message["ts"] == ts:
                return message
        raise SlackError("message_not_found")

    def _check_message_content(self, args: dict[str, Any], *, require_content: bool) -> None:
        text = args.get("text")
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            raise SlackError("invalid_blocks_format", ["[ERROR] blocks must be a JSON array"])
        if blocks is not None:
            problems = check_message_blocks(blocks)
            if problems:
                raise SlackError("invalid_blocks", problems)
        has_content = any(
            args.get(name) not in (None, "", [])
            for name in ("text", "blocks", "attachments", "markdown_text", "file_ids")
        )
        if require_content and not has_content:
            raise SlackError("no_text", ["[ERROR] text or blocks is required"])
        if isinstance(text, str) and len(text) > MAX_MESSAGE_TEXT:
            raise SlackError("msg_too_long")

    def _metadata(self, args: dict[str, Any]) -> dict[str, Any] | None:
        metadata = args.get("metadata")
        if metadata in (None, ""):
            return None
        if not isinstance(metadata, dict):
            raise SlackError("invalid_metadata_format", ["[ERROR] metadata must be a JSON object"])
        event_type = metadata.get("event_type")
        payload = metadata.get("event_payload")
        if not isinstance(event_type, str) or not event_type or not isinstance(payload, dict):
            raise SlackError(
                "invalid_metadata_format",
                ["[ERROR] metadata needs a string event_type and an object event_payload"],
            )
        return {"event_type": event_type, "event_payload": copy.deepcopy(payload)}

    def _bot_profile(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "deleted": False,
            "name": self.bot_name,
            "app_id": self.app_id,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
        }

    def _take_rate_token(self, channel: str) -> None:
        limit = self._rate_limit
        if limit is None:
            return
        now = time.monotonic()
        tokens, last = self._buckets.get(channel, (float(limit.burst), now))
        tokens = min(float(limit.burst), tokens + (now - last) * limit.per_second)
        if tokens < 1.0:
            self._buckets[channel] = (tokens, now)
            raise _RateLimited(max(1, math.ceil((1.0 - tokens) / limit.per_second)))
        self._buckets[channel] = (tokens - 1.0, now)

    def _public_message(self, message: dict[str, Any], *, with_metadata: bool) -> dict[str, Any]:
        public = copy.deepcopy(message)
        if not with_metadata:
            public.pop("metadata", None)
        return public

    # ----- methods ---------------------------------------------------------------------------

    def _auth_test(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": self.team_name,
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, args: dict[str, Any]) -> dict[str, Any]:
        raise SlackError(
            "not_implemented_in_standin", ["[ERROR] Socket Mode is not simulated; use HTTP mode"]
        )

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check_message_content(args, require_content=True)
        metadata = self._metadata(args)
        channel = self._resolve_post_channel(str(args["channel"]))
        thread_ts = args.get("thread_ts")
        if thread_ts:
            self._find_message(channel, str(thread_ts))
        self._take_rate_token(channel)
        ts = self._next_ts()
        message: dict[str, Any] = {
            "type": "message",
            "text": str(args.get("text") or ""),
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "ts": ts,
            "bot_profile": self._bot_profile(),
        }
        for name in ("blocks", "attachments"):
            if args.get(name) is not None:
                message[name] = copy.deepcopy(args[name])
        if thread_ts:
            message["thread_ts"] = str(thread_ts)
        if metadata is not None:
            message["metadata"] = metadata
        self._messages.setdefault(channel, []).append(message)
        return {"channel": channel, "ts": ts, "message": copy.deepcopy(message)}

    def _chat_update(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._existing_channel(str(args["channel"]))
        message = self._find_message(channel, str(args["ts"]))
        if message.get("bot_id") != self.bot_id:
            raise SlackError("cant_update_message")
        self._check_message_content(args, require_content=True)
        metadata = self._metadata(args)
        if args.get("text") is not None:
            message["text"] = str(args["text"])
        for name in ("blocks", "attachments"):
            if args.get(name) is not None:
                message[name] = copy.deepcopy(args[name])
        if metadata is not None:
            message["metadata"] = metadata
        message["edited"] = {"user": self.bot_user_id, "ts": self._next_ts()}
        return {
            "channel": channel,
            "ts": message["ts"],
            "text": message["text"],
            "message": copy.deepcopy(message),
        }

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check_message_content(args, require_content=True)
        user_id = str(args["user"])
        user = self._known_user(user_id)
        if user is None:
            raise SlackError("user_not_found")
        channel = self._resolve_post_channel(str(args["channel"]))
        message_ts = self._next_ts()
        ephemeral: dict[str, Any] = {
            "channel": channel,
            "user": user_id,
            "text": str(args.get("text") or ""),
            "message_ts": message_ts,
        }
        if args.get("blocks") is not None:
            ephemeral["blocks"] = copy.deepcopy(args["blocks"])
        self._ephemerals.append(ephemeral)
        return {"message_ts": message_ts}

    def _chat_getPermalink(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._existing_channel(str(args["channel"]))
        ts = str(args["message_ts"])
        self._find_message(channel, ts)
        return {
            "channel": channel,
            "permalink": (
                f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
            ),
        }

    def _conversations_history(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._existing_channel(str(args["channel"]))
        with_metadata = _truthy(args.get("include_all_metadata", False))
        inclusive = _truthy(args.get("inclusive", False))
        try:
            limit = int(args.get("limit") or 100)
        except ValueError as exc:
            raise SlackError("invalid_limit") from exc
        limit = max(1, min(limit, 999))
        oldest = _ts_key(args["oldest"], "oldest") if args.get("oldest") else None
        latest = _ts_key(args["latest"], "latest") if args.get("latest") else None
        cursor = _decode_cursor(str(args["cursor"])) if args.get("cursor") else None

        def wanted(key: Decimal) -> bool:
            if oldest is not None and (key < oldest or (key == oldest and not inclusive)):
                return False
            if latest is not None and (key > latest or (key == latest and not inclusive)):
                return False
            return cursor is None or key <= cursor

        newest_first = sorted(
            self._messages.get(channel, []), key=lambda m: Decimal(m["ts"]), reverse=True
        )
        matching = [m for m in newest_first if wanted(Decimal(m["ts"]))]
        page, rest = matching[:limit], matching[limit:]
        return {
            "messages": [self._public_message(m, with_metadata=with_metadata) for m in page],
            "has_more": bool(rest),
            "pin_count": 0,
            "channel_actions_ts": None,
            "channel_actions_count": 0,
            "response_metadata": {"next_cursor": _encode_cursor(rest[0]["ts"]) if rest else ""},
        }

    def _conversations_open(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("channel"):
            channel_id = self._existing_channel(str(args["channel"]))
            already_open = True
        else:
            raw_users = args["users"]
            users = raw_users if isinstance(raw_users, list) else str(raw_users).split(",")
            users = [str(u).strip() for u in users if str(u).strip()]
            if len(users) != 1:
                raise SlackError(
                    "not_implemented_in_standin",
                    ["[ERROR] only one-to-one DMs are simulated, not group DMs"],
                )
            user = self._known_user(users[0])
            if user is None:
                raise SlackError("user_not_found")
            if user.deleted:
                raise SlackError("user_disabled")
            channel_id, already_open = self._open_dm(user.id)
        channel = self._channels[channel_id]
        if _truthy(args.get("return_im", False)):
            rendered: dict[str, Any] = {
                "id": channel_id,
                "created": channel.get("created", 0),
                "is_im": channel["is_im"],
                "is_org_shared": False,
                "user": channel.get("user"),
                "is_open": True,
                "last_read": "0000000000.000000",
                "latest": None,
                "unread_count": 0,
                "unread_count_display": 0,
                "priority": 0,
            }
        else:
            rendered = {"id": channel_id}
        return {"no_op": already_open, "already_open": already_open, "channel": rendered}

    def _users_info(self, args: dict[str, Any]) -> dict[str, Any]:
        user = self._users.get(str(args["user"]))
        if user is None:
            raise SlackError("user_not_found")
        rendered = user.to_slack(self.team_id)
        if _truthy(args.get("include_locale", False)):
            rendered["locale"] = "en-GB"
        return {"user": rendered}

    def _users_lookupByEmail(self, args: dict[str, Any]) -> dict[str, Any]:
        wanted = str(args["email"]).strip().lower()
        for user in self._users.values():
            if user.email and user.email.lower() == wanted:
                return {"user": user.to_slack(self.team_id)}
        raise SlackError("users_not_found")

    def _new_view(self, view: dict[str, Any], *, root_view_id: str | None = None) -> dict[str, Any]:
        self._view_counter += 1
        view_id = f"V{self._view_counter:010d}"
        stored = self._render_view(view_id, view, root_view_id=root_view_id or view_id)
        external_id = stored["external_id"]
        if external_id:
            if external_id in self._view_by_external_id:
                raise SlackError("duplicate_external_id")
            self._view_by_external_id[external_id] = view_id
        self._views[view_id] = stored
        return stored

    def _render_view(
        self, view_id: str, view: dict[str, Any], *, root_view_id: str, previous: str | None = None
    ) -> dict[str, Any]:
        rendered = {
            "id": view_id,
            "team_id": self.team_id,
            "type": view["type"],
            "blocks": copy.deepcopy(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(self._clock())}.{self._view_counter:08d}{len(self._calls):06d}",
            "clear_on_close": bool(view.get("clear_on_close", False)),
            "notify_on_close": bool(view.get("notify_on_close", False)),
            "root_view_id": root_view_id,
            "previous_view_id": previous,
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        for key in ("title", "submit", "close"):
            if key in view:
                rendered[key] = copy.deepcopy(view[key])
        return rendered

    def _checked_view(self, args: dict[str, Any], allowed_types: tuple[str, ...]) -> dict[str, Any]:
        view = args["view"]
        if isinstance(view, str):
            raise SlackError("invalid_arguments", ["[ERROR] view must be a JSON object"])
        problems = check_view(view, allowed_types=allowed_types)
        if problems:
            raise SlackError("invalid_blocks", problems)
        return view

    def _views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(args, ("modal",))
        return {"view": copy.deepcopy(self._new_view(view))}

    def _views_push(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(args, ("modal",))
        return {"view": copy.deepcopy(self._new_view(view))}

    def _views_update(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(args, ("modal", "home"))
        view_id = args.get("view_id") or self._view_by_external_id.get(
            str(args.get("external_id") or "")
        )
        current = self._views.get(str(view_id)) if view_id else None
        if current is None:
            raise SlackError("not_found")
        if args.get("hash") and args["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        self._view_counter += 1
        updated = self._render_view(
            current["id"],
            view,
            root_view_id=current["root_view_id"],
            previous=current["previous_view_id"],
        )
        if not updated["external_id"]:
            updated["external_id"] = current["external_id"]
        self._views[current["id"]] = updated
        return {"view": copy.deepcopy(updated)}

    def _views_publish(self, args: dict[str, Any]) -> dict[str, Any]:
        view = self._checked_view(args, ("home",))
        user_id = str(args["user_id"])
        user = self._known_user(user_id)
        if user is None:
            raise SlackError("user_not_found")
        current_id = self._home_by_user.get(user_id)
        if current_id is None:
            published = self._new_view(view)
            self._home_by_user[user_id] = published["id"]
            return {"view": copy.deepcopy(published)}
        current = self._views[current_id]
        if args.get("hash") and args["hash"] != current["hash"]:
            raise SlackError("hash_conflict")
        self._view_counter += 1
        published = self._render_view(current_id, view, root_view_id=current_id)
        self._views[current_id] = published
        return {"view": copy.deepcopy(published)}


class _RateLimited(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


def _error_reply(error: SlackError) -> Reply:
    return Reply(status=200, body=error.body())


def _ratelimited_reply(retry_after: int) -> Reply:
    return Reply(
        status=429,
        body={"ok": False, "error": "ratelimited"},
        headers={"Retry-After": str(retry_after)},
    )


def _status_reply(status: int) -> Reply:
    error = _STATUS_ERRORS.get(status, f"http_{status}")
    return Reply(status=status, body={"ok": False, "error": error})


def _normalise_json_arguments(args: dict[str, Any]) -> None:
    # slack_sdk sends these as JSON text in form bodies and as objects in JSON bodies: keep one.
    for name in JSON_ARGUMENTS:
        value = args.get(name)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            # Text that is not JSON stays as it is; the method then reports it as malformed.
            with contextlib.suppress(json.JSONDecodeError):
                args[name] = json.loads(value)

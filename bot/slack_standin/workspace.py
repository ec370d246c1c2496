"""One simulated Slack workspace: its bot user, people, channels, messages and views.

``Workspace.call`` runs one Web API method against the workspace's state; authentication,
faults, tier limits and recording happen in ``bot.slack_standin.api`` before it is reached.
The stand-in holds one lock around every call, shared by all its workspaces.
"""

from __future__ import annotations

import base64
import binascii
import copy
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from bot.slack_standin.blockkit import MAX_MESSAGE_TEXT, check_message_blocks, check_view
from bot.slack_standin.model import DEFAULT_RATE_LIMIT, IdSource, RateLimit, StandInUser
from bot.slack_standin.ratelimits import Bucket


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


def truthy(value: Any) -> bool:
    """Whether a Web API flag argument (``true``, ``1``, True) is set."""
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
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        clock: Callable[[], float] = time.time,
        ids: IdSource | None = None,
        lock: threading.RLock | None = None,
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
        self._rate_limit = rate_limit
        self._clock = clock
        self._ids = ids or IdSource(clock)
        self._lock = lock or threading.RLock()
        self._users: dict[str, StandInUser] = {}
        self._configured_channels = set(channels)
        self.add_users(users)
        self.reset()

    # ----- configuration -------------------------------------------------------------------

    def reset(self) -> None:
        """Forget messages, DMs and views; keep users and configured channels."""
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
            self._buckets: dict[str, Bucket] = {}

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

    def post_as_user(self, channel: str, user_id: str, text: str) -> str:
        """Store a message a person wrote in ``channel`` (a channel or user ID); return its ts."""
        with self._lock:
            channel_id = self._resolve_post_channel(channel)
            ts = self._ids.ts()
            message = {"type": "message", "text": text, "user": user_id, "team": self.team_id}
            self._messages.setdefault(channel_id, []).append({**message, "ts": ts})
            return ts

    # ----- inspection ----------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """The workspace as JSON for the control API."""
        with self._lock:
            return {
                "team_id": self.team_id,
                "name": self.team_name,
                "domain": self.team_domain,
                "bot_user_id": self.bot_user_id,
                "bot_id": self.bot_id,
                "users": sorted(self._users),
            }

    def user(self, user_id: str) -> StandInUser | None:
        """A person of this workspace's directory."""
        with self._lock:
            return self._users.get(user_id)

    def has_channel(self, channel_id: str) -> bool:
        """Whether the channel (or DM) exists in this workspace."""
        with self._lock:
            return channel_id in self._channels

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """A copy of the stored message at ``ts`` in ``channel`` (raises SlackError)."""
        with self._lock:
            return copy.deepcopy(self._find_message(channel, ts))

    def view(self, view_id: str) -> dict[str, Any] | None:
        """A copy of a stored modal or Home view."""
        with self._lock:
            view = self._views.get(view_id)
            return copy.deepcopy(view) if view is not None else None

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

    # ----- calls ---------------------------------------------------------------------------

    def call(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run ``method``; raise SlackError or RateLimited as Slack would answer them."""
        implementation = getattr(self, "_" + method.replace(".", "_"), None)
        if implementation is None:
            raise SlackError("not_implemented_in_standin")
        with self._lock:
            return implementation(args)

    # ----- helpers ---------------------------------------------------------------------------

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
        channel_id = self._ids.dm_id()
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
        bucket = self._buckets.get(channel)
        now = time.monotonic()
        if bucket is None:
            bucket = self._buckets[channel] = Bucket(float(limit.burst), limit.per_second, now)
        bucket.take(now)

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

    def _chat_postMessage(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check_message_content(args, require_content=True)
        metadata = self._metadata(args)
        channel = self._resolve_post_channel(str(args["channel"]))
        thread_ts = args.get("thread_ts")
        if thread_ts:
            self._find_message(channel, str(thread_ts))
        self._take_rate_token(channel)
        ts = self._ids.ts()
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
        message["edited"] = {"user": self.bot_user_id, "ts": self._ids.ts()}
        return {
            "channel": channel,
            "ts": message["ts"],
            "text": message["text"],
            "message": copy.deepcopy(message),
        }

    def _chat_delete(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = self._existing_channel(str(args["channel"]))
        message = self._find_message(channel, str(args["ts"]))
        if message.get("bot_id") != self.bot_id:
            raise SlackError("cant_delete_message")
        self._messages[channel].remove(message)
        return {"channel": channel, "ts": message["ts"]}

    def _chat_postEphemeral(self, args: dict[str, Any]) -> dict[str, Any]:
        self._check_message_content(args, require_content=True)
        user_id = str(args["user"])
        user = self._known_user(user_id)
        if user is None:
            raise SlackError("user_not_found")
        channel = self._resolve_post_channel(str(args["channel"]))
        message_ts = self._ids.ts()
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
        with_metadata = truthy(args.get("include_all_metadata", False))
        inclusive = truthy(args.get("inclusive", False))
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
        if truthy(args.get("return_im", False)):
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
        if truthy(args.get("include_locale", False)):
            rendered["locale"] = "en-GB"
        return {"user": rendered}

    def _users_lookupByEmail(self, args: dict[str, Any]) -> dict[str, Any]:
        wanted = str(args["email"]).strip().lower()
        for user in self._users.values():
            if user.email and user.email.lower() == wanted:
                return {"user": user.to_slack(self.team_id)}
        raise SlackError("users_not_found")

    def _new_view(self, view: dict[str, Any], *, root_view_id: str | None = None) -> dict[str, Any]:
        view_id = self._ids.view_id()
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
            "hash": self._ids.view_hash(),
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
        published = self._render_view(current_id, view, root_view_id=current_id)
        self._views[current_id] = published
        return {"view": copy.deepcopy(published)}

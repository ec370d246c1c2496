"""The Web API front door: which workspace a call is for, and everything before and after it.

``WebAPI.dispatch`` takes one parsed call and returns the HTTP reply: it checks the method
against Slack's spec table, authenticates the token (a bot token acts for one workspace, an
app-level token for the app), delivers queued faults, applies tier limits, runs the method and
records the call. It never sleeps or does I/O, so the HTTP layer can hold no locks while it
waits out an injected hang.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from decimal import Decimal
from typing import Any

from bot.slack_standin.installs import Installations
from bot.slack_standin.model import ControlError, Fault, IdSource, RecordedCall, Reply
from bot.slack_standin.payloads import event_callback
from bot.slack_standin.ratelimits import RateLimited, RateLimiter, RateLimits
from bot.slack_standin.specs import SpecTable, load_spec_table
from bot.slack_standin.workspace import SlackError, Workspace, truthy

# Arguments that slack_sdk sends as JSON text inside form bodies and as objects inside JSON bodies.
JSON_ARGUMENTS = ("blocks", "attachments", "view", "metadata")

# Arguments never kept in the record of a call: they are secrets.
SECRET_ARGUMENTS = ("token", "client_secret")

# Methods of the app and its installs; every other simulated method runs in a workspace.
APP_METHODS = frozenset(
    {"apps.connections.open", "apps.uninstall", "auth.revoke", "oauth.v2.access"}
)

_STATUS_ERRORS = {
    500: "fatal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


class WebAPI:
    """The workspaces of one app, its tokens, and the calls made to them."""

    def __init__(
        self,
        home: Workspace,
        *,
        installations: Installations,
        rate_limits: RateLimits | None = None,
        clock: Callable[[], float] = time.time,
        rate_clock: Callable[[], float] = time.monotonic,
        ids: IdSource,
        lock: threading.RLock,
        spec_table: SpecTable | None = None,
    ) -> None:
        self.home = home
        self.installations = installations
        self.limiter = RateLimiter(rate_limits, monotonic=rate_clock)
        self._clock = clock
        self._ids = ids
        self._lock = lock
        self._spec = spec_table or load_spec_table()
        self._workspaces: dict[str, Workspace] = {home.team_id: home}
        self._event_ids = itertools.count(1)
        # Set by the stand-in: a new Socket Mode URL (None while Socket Mode is off), and where
        # events for the app go.
        self.open_socket_url: Callable[[], str | None] | None = None
        self.on_event: Callable[[dict[str, Any]], None] | None = None
        self._outgoing: list[dict[str, Any]] = []
        self._calls: list[RecordedCall] = []
        self._responses: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        # Calls held back by a `hold` fault: (method, channel, released)
        self._held: list[tuple[str, str | None, threading.Event]] = []

    # ----- workspaces ----------------------------------------------------------------------

    def add_workspace(self, workspace: Workspace, *, token: str | None = None) -> None:
        """Add a workspace; with ``token`` the app is installed there with that bot token."""
        with self._lock:
            if workspace.team_id in self._workspaces:
                raise ControlError(f"workspace {workspace.team_id} exists already")
            self._workspaces[workspace.team_id] = workspace
            if token is not None:
                self.installations.bind(token, workspace.team_id)

    def workspace(self, team_id: str | None = None) -> Workspace:
        """The workspace ``team_id`` (the home workspace when None)."""
        with self._lock:
            if team_id is None:
                return self.home
            try:
                return self._workspaces[team_id]
            except KeyError:
                raise ControlError(f"no workspace {team_id}") from None

    def workspaces(self) -> list[Workspace]:
        """Every workspace, the home one first."""
        with self._lock:
            return list(self._workspaces.values())

    def workspace_of_user(self, user_id: str, team_id: str | None = None) -> Workspace:
        """The workspace ``user_id`` belongs to (the first that knows them, home first)."""
        if team_id is not None:
            return self.workspace(team_id)
        for workspace in self.workspaces():
            if workspace.user(user_id) is not None:
                return workspace
        return self.home

    def workspace_of_channel(self, channel_id: str) -> Workspace:
        """The workspace a channel or DM exists in (home when none has it)."""
        for workspace in self.workspaces():
            if workspace.has_channel(channel_id):
                return workspace
        return self.home

    def uninstall(self, team_id: str) -> list[str]:
        """An admin removes the app from ``team_id``: tokens revoked, the app told."""
        with self._lock:
            workspace = self.workspace(team_id)
            tokens = self.installations.uninstall(team_id)
            self._queue_uninstall_events(workspace)
            outgoing, self._outgoing = self._outgoing, []
        self._send_events(outgoing)
        return tokens

    # ----- faults, limits, responses ----------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        """Queue a fault; the first queued fault matching a call is delivered."""
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        with self._lock:
            self._faults.clear()

    @contextlib.contextmanager
    def holding_back(self, method: str, args: Mapping[str, Any]) -> Iterator[None]:
        """Around one call's handling: while a `hold` fault says so, the call waits before it
        takes effect, until `release_holds` (also when the stand-in stops) or the fault's
        `seconds`; it is listed by `held` until its answer is written (no lock is held)."""
        channel = args.get("channel")
        with self._lock:
            fault = next(
                (f for f in self._faults if f.kind == "hold" and f.matches(method, channel)), None
            )
            if fault is not None:
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                held = (method, channel if isinstance(channel, str) else None, threading.Event())
                self._held.append(held)
        if fault is None:
            yield
            return
        try:
            held[2].wait(fault.seconds)
            yield
        finally:
            with self._lock:
                self._held.remove(held)

    def held(self) -> list[dict[str, Any]]:
        """The calls a `hold` fault holds back, or released and not yet answered."""
        with self._lock:
            return [
                {"method": m, "channel": c, "released": released.is_set()}
                for m, c, released in self._held
            ]

    def release_holds(self) -> int:
        """Let every held call go on (to take effect and be answered); how many there were."""
        with self._lock:
            for _, _, released in self._held:
                released.set()
            return len(self._held)

    def faults(self) -> list[dict[str, Any]]:
        """The faults still queued."""
        with self._lock:
            return [fault.to_dict() for fault in self._faults if fault.remaining > 0]

    def set_rate_limits(self, limits: RateLimits | None) -> None:
        """Replace the tier and workspace limits (``None`` turns them off)."""
        with self._lock:
            self.limiter.configure(limits)

    def rate_limits(self) -> dict[str, Any]:
        """The limits in force and the 429s answered per method."""
        with self._lock:
            return {**self.limiter.limits.to_dict(), "ratelimited": self.limiter.counts()}

    def record_response(self, name: str, body: Any) -> None:
        """Keep a message the app sent to a ``response_url`` (slash commands, interactions)."""
        with self._lock:
            self._responses.append(
                {"name": name, "body": copy.deepcopy(body), "timestamp": self._clock()}
            )

    def reset(self) -> None:
        """Forget calls, responses, faults, revocations, counts and every workspace's state."""
        with self._lock:
            self._calls.clear()
            self._responses.clear()
            self._faults.clear()
            self.installations.reset()
            self.limiter.reset()
            self._ids.reset()
            for workspace in self._workspaces.values():
                workspace.reset()

    # ----- inspection ----------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        """Every recorded call, oldest first, optionally only of one method."""
        with self._lock:
            return [copy.deepcopy(c) for c in self._calls if method in (None, c.method)]

    def call_count(self) -> int:
        """How many calls were recorded (cheaper than ``len(calls())``)."""
        with self._lock:
            return len(self._calls)

    def responses(self, name: str | None = None) -> list[dict[str, Any]]:
        """Messages sent to response URLs, oldest first, optionally only to ``name``."""
        with self._lock:
            return [copy.deepcopy(r) for r in self._responses if name in (None, r["name"])]

    def all_text(self) -> str:
        """Every string in every recorded call's arguments and response-URL message, one a line."""
        with self._lock:
            sent = [call.args for call in self._calls] + [r["body"] for r in self._responses]
            return "\n".join(text for item in sent for text in strings_in(item))

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Stored messages of every workspace (or of ``channel``), oldest first."""
        if channel is not None:
            return self.workspace_of_channel(channel).messages(channel)
        found = [m for ws in self.workspaces() for m in ws.messages()]
        return sorted(found, key=lambda message: Decimal(message["ts"]))

    def dm_channel_for(self, user_id: str, team_id: str | None = None) -> str | None:
        """The DM channel between the app and ``user_id``, once one exists."""
        return self.workspace_of_user(user_id, team_id).dm_channel_for(user_id)

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages of every workspace, oldest first."""
        found = [e for ws in self.workspaces() for e in ws.ephemerals(user)]
        return sorted(found, key=lambda e: Decimal(e["message_ts"]))

    def home_view(self, user_id: str, team_id: str | None = None) -> dict[str, Any] | None:
        """The Home tab last published for ``user_id``."""
        return self.workspace_of_user(user_id, team_id).home_view(user_id)

    def views(self) -> list[dict[str, Any]]:
        """Every modal and Home view of every workspace, in the order they were created."""
        found = [v for ws in self.workspaces() for v in ws.views()]
        return sorted(found, key=lambda view: view["id"])

    # ----- dispatch ------------------------------------------------------------------------

    def dispatch(
        self,
        method: str,
        args: dict[str, Any],
        bearer: str | None,
        client: tuple[str, str] | None = None,
    ) -> Reply:
        """Answer one Web API call and record it (``client``: Basic-auth client ID, secret)."""
        args = dict(args)
        token = bearer or (args.get("token") if isinstance(args.get("token"), str) else None)
        if client is None and isinstance(args.get("client_id"), str):
            client = (str(args["client_id"]), str(args.get("client_secret") or ""))
        for name in SECRET_ARGUMENTS:
            args.pop(name, None)
        _normalise_json_arguments(args)
        with self._lock:
            team_id, reply = self._answer(method, args, token, client)
            if reply.status == 429:
                self.limiter.count(method)
            self._calls.append(
                RecordedCall(
                    method=method,
                    args=copy.deepcopy(args),
                    timestamp=self._clock(),
                    status=reply.status,
                    response=copy.deepcopy(reply.body),
                    team_id=team_id,
                )
            )
            outgoing, self._outgoing = self._outgoing, []
        self._send_events(outgoing)
        return reply

    def _answer(
        self,
        method: str,
        args: dict[str, Any],
        token: str | None,
        client: tuple[str, str] | None,
    ) -> tuple[str | None, Reply]:
        if not self._spec.is_known(method):
            return None, _error_reply(SlackError("unknown_method", req_method=method))
        try:
            team_id = self._authenticate(method, token, client)
        except SlackError as exc:
            return None, _error_reply(exc)
        spec = self._spec.methods.get(method)
        if spec is None:
            return team_id, _error_reply(
                SlackError(
                    "not_implemented_in_standin",
                    [f"[ERROR] {method} is a Slack method the stand-in does not simulate"],
                )
            )
        problems = spec.problems(args)
        if problems:
            return team_id, _error_reply(SlackError("invalid_arguments", problems))
        fault = self._take_fault(method, args.get("channel"))
        if fault is not None and not fault.after_apply:
            return team_id, _deliver_before(fault)
        try:
            self.limiter.check(team_id or "", method)
        except RateLimited as exc:
            return team_id, _ratelimited_reply(exc.retry_after)
        reply = self._apply(method, args, team_id, token, client)
        if fault is not None:
            # The call took effect; only its answer is lost or replaced.
            return team_id, _deliver_after(fault, reply)
        return team_id, reply

    def _authenticate(
        self, method: str, token: str | None, client: tuple[str, str] | None
    ) -> str | None:
        if method == "oauth.v2.access":
            self.installations.check_client(*(client or (None, None)))
            return None
        if method == "apps.connections.open":
            # Socket Mode needs an app-level token; bot tokens are refused as on Slack.
            self.installations.check_app_token(token)
            return None
        team_id = self.installations.team_for_bot_token(token)
        if method == "apps.uninstall":
            self.installations.check_client(*(client or (None, None)))
        return team_id

    def _apply(
        self,
        method: str,
        args: dict[str, Any],
        team_id: str | None,
        token: str | None,
        client: tuple[str, str] | None,
    ) -> Reply:
        try:
            if method in APP_METHODS:
                body = self._app_method(method, args, team_id, token)
            else:
                body = self.workspace(team_id).call(method, args)
        except SlackError as exc:
            return _error_reply(exc)
        except RateLimited as exc:
            return _ratelimited_reply(exc.retry_after)
        return Reply(status=200, body={"ok": True, **body})

    def _take_fault(self, method: str, channel: object = None) -> Fault | None:
        for fault in self._faults:
            if fault.kind != "hold" and fault.matches(method, channel):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ----- the app's own methods -------------------------------------------------------------

    def _app_method(
        self, method: str, args: dict[str, Any], team_id: str | None, token: str | None
    ) -> dict[str, Any]:
        if method == "apps.connections.open":
            url = self.open_socket_url() if self.open_socket_url is not None else None
            if url is None:
                raise SlackError(
                    "access_denied", ["[ERROR] Socket Mode is off in the app settings"]
                )
            return {"url": url}
        if method == "oauth.v2.access":
            return self._oauth_v2_access(args)
        assert team_id is not None and token is not None
        workspace = self.workspace(team_id)
        if method == "auth.revoke":
            if truthy(args.get("test", False)):
                return {"revoked": False}
            if self.installations.revoke(token) is not None:
                self._queue_revoked_event(workspace)
            return {"revoked": True}
        if method == "apps.uninstall":
            self.installations.uninstall(team_id)
            self._queue_uninstall_events(workspace)
            return {}
        raise SlackError("not_implemented_in_standin")

    def _oauth_v2_access(self, args: dict[str, Any]) -> dict[str, Any]:
        if args.get("grant_type") or args.get("refresh_token"):
            raise SlackError(
                "not_implemented_in_standin",
                ["[ERROR] token rotation is not simulated: bot tokens do not expire"],
            )
        if not args.get("code"):
            raise SlackError("invalid_code")
        grant, token = self.installations.redeem(
            str(args["code"]), args.get("redirect_uri") or None
        )
        workspace = self.workspace(grant.team_id)
        authed_user: dict[str, Any] = {"id": grant.user_id}
        if grant.user_scope:
            authed_user.update(
                scope=grant.user_scope,
                access_token=f"xoxp-{grant.team_id}-{grant.user_id}",
                token_type="user",
            )
        # The shape of Slack's answer (api.slack.com/methods/oauth.v2.access) for a workspace
        # install without token rotation or incoming webhooks.
        return {
            "app_id": workspace.app_id,
            "authed_user": authed_user,
            "scope": grant.scope,
            "token_type": "bot",
            "access_token": token,
            "bot_user_id": workspace.bot_user_id,
            "team": {"id": workspace.team_id, "name": workspace.team_name},
            "enterprise": None,
            "is_enterprise_install": False,
        }

    # ----- events to the app -------------------------------------------------------------

    def _queue_revoked_event(self, workspace: Workspace) -> None:
        self._outgoing.append(
            self._event(
                workspace, {"type": "tokens_revoked", "tokens": {"bot": [workspace.bot_user_id]}}
            )
        )

    def _queue_uninstall_events(self, workspace: Workspace) -> None:
        self._queue_revoked_event(workspace)
        self._outgoing.append(self._event(workspace, {"type": "app_uninstalled"}))

    def _event(self, workspace: Workspace, event: dict[str, Any]) -> dict[str, Any]:
        now = self._clock()
        return event_callback(
            workspace,
            {**event, "event_ts": f"{now:.6f}"},
            event_id=f"Ev0STANDIN{next(self._event_ids):06d}",
            event_time=int(now),
        )

    def _send_events(self, events: Iterable[dict[str, Any]]) -> None:
        for event in events:
            if self.on_event is not None:
                self.on_event(event)


def strings_in(value: Any) -> Iterable[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from strings_in(item)


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


def _deliver_before(fault: Fault) -> Reply:
    if fault.kind == "status":
        return _status_reply(fault.status)
    if fault.kind == "ratelimit":
        return _ratelimited_reply(fault.retry_after)
    if fault.kind == "error":
        return _error_reply(SlackError(fault.error))
    # A hang that is not applied ends as a gateway failure, should the client still wait.
    return Reply(status=503, body=_status_reply(503).body, delay=fault.seconds)


def _deliver_after(fault: Fault, applied: Reply) -> Reply:
    if fault.kind == "hang":
        return Reply(applied.status, applied.body, applied.headers, delay=fault.seconds)
    return _deliver_before(fault)


def _normalise_json_arguments(args: dict[str, Any]) -> None:
    # slack_sdk sends these as JSON text in form bodies and as objects in JSON bodies: keep one.
    for name in JSON_ARGUMENTS:
        value = args.get(name)
        if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
            # Text that is not JSON stays as it is; the method then reports it as malformed.
            with contextlib.suppress(json.JSONDecodeError):
                args[name] = json.loads(value)

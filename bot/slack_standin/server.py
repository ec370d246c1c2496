"""``SlackStandIn``: the stand-in as one object — its workspaces, its servers and its controls."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from http.server import ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from bot.slack_standin import control
from bot.slack_standin.api import WebAPI
from bot.slack_standin.delivery import Deliveries
from bot.slack_standin.installs import AppCredentials, Grant, Installations
from bot.slack_standin.model import (
    DEFAULT_RATE_LIMIT,
    ControlError,
    Fault,
    IdSource,
    RateLimit,
    RecordedCall,
    StandInUser,
)
from bot.slack_standin.people import People
from bot.slack_standin.ratelimits import RateLimits
from bot.slack_standin.socket_mode import SocketModeServer
from bot.slack_standin.web import API_PREFIX, CONTROL_PREFIX, handler_for
from bot.slack_standin.workspace import Workspace


class SlackStandIn:
    """A local Slack for tests and the demo; point ``WebClient(base_url=)`` at ``url``."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        team_id: str = "T0STANDIN",
        bot_user_id: str = "U0HANDOVER",
        bot_id: str = "B0HANDOVER",
        app_id: str = "A0HANDOVER",
        users: Iterable[StandInUser | dict[str, Any]] = (),
        channels: Iterable[str] = (),
        auto_create_channels: bool = False,
        allow_unknown_users: bool = False,
        tokens: Iterable[str] | None = None,
        app_tokens: Iterable[str] | None = None,
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        rate_limits: RateLimits | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
        request_url: str | None = None,
        signing_secret: str | None = None,
        socket_mode: bool = False,
        ack_timeout: float = 3.0,
        socket_port: int = 0,
        clock: Callable[[], float] | None = None,
        rate_clock: Callable[[], float] | None = None,
    ) -> None:
        self._clock = clock or time.time
        self._lock = threading.RLock()
        self._ids = IdSource(self._clock)
        self._app_id = app_id
        self._auto_create_channels = auto_create_channels
        self._allow_unknown_users = allow_unknown_users
        self._rate_limit = rate_limit
        home = self._new_workspace(
            team_id,
            name="Handover Stand-in",
            domain="handover-standin",
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            users=users,
            channels=channels,
        )
        self.workspace = home  # the home workspace, as before several existed
        defaults = AppCredentials()
        credentials = AppCredentials(
            app_id=app_id,
            client_id=client_id or defaults.client_id,
            client_secret=client_secret or defaults.client_secret,
        )
        self.api = WebAPI(
            home,
            installations=Installations(
                team_id, home_tokens=tokens, app_tokens=app_tokens, credentials=credentials
            ),
            rate_limits=rate_limits,
            clock=self._clock,
            rate_clock=rate_clock or time.monotonic,
            ids=self._ids,
            lock=self._lock,
        )
        self._address = (host, port)
        self.socket = SocketModeServer(
            host,
            socket_port,
            app_id=app_id,
            on_ack=lambda envelope_id, payload, link: self.deliveries.acked(
                envelope_id, payload, link
            ),
            on_connect=lambda: self.deliveries.flush(),
        )
        self.deliveries = Deliveries(self.socket, ack_timeout=ack_timeout)
        if request_url or signing_secret:
            self.deliveries.set_request_url(request_url, signing_secret)
        self.socket.enabled = socket_mode
        self.api.open_socket_url = lambda: self.socket.new_url() if self.socket.enabled else None
        self.api.on_event = lambda payload: self.deliveries.deliver("events_api", payload)
        self.people = People(self.api, self.response_url, self._clock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        """Bind the port and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer(self._address, handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="slack-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the ports; requests still hanging are cut short."""
        server, self._server = self._server, None
        self.deliveries.stop()
        self.socket.stop()
        if server is None:
            return
        self._stopping.set()
        self.api.release_holds()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Serve in the calling thread until ``stop`` is called from another (used by the CLI)."""
        self.start()
        thread = self._thread
        # Join in slices so the main thread can still run signal handlers.
        while thread is not None and thread.is_alive():
            thread.join(timeout=0.2)

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port (known once started)."""
        if self._server is None:
            raise RuntimeError("the stand-in is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The Web API base URL, e.g. ``http://127.0.0.1:8099/api/`` (``SLACK_API_URL``)."""
        return f"http://{self._address[0]}:{self.port}{API_PREFIX}"

    @property
    def control_url(self) -> str:
        """The base URL of the JSON control API."""
        return f"http://{self._address[0]}:{self.port}{CONTROL_PREFIX}"

    @property
    def authorize_url(self) -> str:
        """Slack's install page, simulated (the app's OAuth ``authorization_url``)."""
        return f"http://{self._address[0]}:{self.port}/oauth/v2/authorize"

    # ----- workspaces and installs ---------------------------------------------------------

    def _new_workspace(self, team_id: str, **details: Any) -> Workspace:
        """A workspace sharing the stand-in's lock, IDs and settings."""
        if not team_id.startswith("T") or not team_id.isalnum():
            raise ControlError(f"team ID {team_id!r} must be T followed by letters and digits")
        return Workspace(
            team_id=team_id,
            team_name=details.get("name") or f"Workspace {team_id}",
            team_domain=details.get("domain") or team_id[1:].lower().lstrip("0"),
            bot_user_id=details.get("bot_user_id") or f"U{team_id[1:]}BOT",
            bot_id=details.get("bot_id") or f"B{team_id[1:]}BOT",
            app_id=self._app_id,
            users=[_as_user(u) for u in details.get("users") or ()],
            channels=details.get("channels") or (),
            auto_create_channels=self._auto_create_channels,
            allow_unknown_users=self._allow_unknown_users,
            rate_limit=self._rate_limit,
            clock=self._clock,
            ids=self._ids,
            lock=self._lock,
        )

    def add_workspace(
        self,
        team_id: str,
        *,
        name: str | None = None,
        domain: str | None = None,
        bot_user_id: str | None = None,
        bot_id: str | None = None,
        users: Iterable[StandInUser | dict[str, Any]] = (),
        channels: Iterable[str] = (),
        token: str | None = None,
    ) -> dict[str, Any]:
        """Add a workspace; the app is installed there only with ``token`` or an OAuth install."""
        workspace = self._new_workspace(
            team_id,
            name=name,
            domain=domain,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            users=users,
            channels=channels,
        )
        self.api.add_workspace(workspace, token=token)
        return self._describe(workspace)

    def workspaces(self) -> list[dict[str, Any]]:
        """Every workspace, home first, with whether the app is installed there."""
        return [self._describe(ws) for ws in self.api.workspaces()]

    def _describe(self, workspace: Workspace) -> dict[str, Any]:
        with self._lock:
            installed = self.api.installations.is_installed(workspace.team_id)
        return {**workspace.describe(), "installed": installed}

    def authorize(
        self,
        team_id: str,
        *,
        user_id: str | None = None,
        scope: str | None = None,
        user_scope: str = "",
        redirect_uri: str | None = None,
        client_id: str | None = None,
    ) -> Grant:
        """An admin of ``team_id`` approves installing the app: a code for oauth.v2.access."""
        workspace = self.api.workspace(team_id)
        with self._lock:
            people = workspace.describe()["users"]
            installer = user_id or (people[0] if people else "U0ADMIN")
            return self.api.installations.authorize(
                team_id,
                installer,
                client_id=client_id,
                scope=scope,
                user_scope=user_scope,
                redirect_uri=redirect_uri,
            )

    def authorize_redirect(self, query: Mapping[str, str]) -> str:
        """Where the install page sends the browser back: ``redirect_uri?code=…&state=…``."""
        redirect_uri = query.get("redirect_uri")
        if not redirect_uri:
            raise ValueError("redirect_uri is required: the stand-in keeps no app settings")
        back: dict[str, str] = {}
        if query.get("deny") in ("1", "true"):
            back["error"] = "access_denied"
        else:
            try:
                grant = self.authorize(
                    query.get("team") or self.workspace.team_id,
                    user_id=query.get("user") or None,
                    scope=query.get("scope") or None,
                    user_scope=query.get("user_scope") or "",
                    redirect_uri=redirect_uri,
                    client_id=query.get("client_id") or None,
                )
            except ControlError as exc:
                raise ValueError(str(exc)) from exc
            back["code"] = grant.code
        if query.get("state"):
            back["state"] = query["state"]
        parts = urlsplit(redirect_uri)
        joined = "&".join(q for q in (parts.query, urlencode(back)) if q)
        return urlunsplit((parts.scheme, parts.netloc, parts.path, joined, ""))

    def uninstall(self, team_id: str) -> list[str]:
        """An admin removes the app: tokens revoked, ``tokens_revoked``/``app_uninstalled`` sent."""
        return self.api.uninstall(team_id)

    def app_info(self) -> dict[str, Any]:
        """The app's settings as the control API shows them (never the secrets)."""
        credentials = self.api.installations.credentials
        request_url = self.deliveries.request_url
        return {
            "app_id": credentials.app_id,
            "client_id": credentials.client_id,
            "request_url": request_url.url if request_url else None,
            "socket_mode": self.socket.enabled,
            "authorize_url": self.authorize_url,
        }

    def set_request_url(self, url: str | None, signing_secret: str | None) -> None:
        """Deliver to the app over HTTP at ``url``, signed with ``signing_secret``."""
        self.deliveries.set_request_url(url, signing_secret)

    def set_socket_mode(self, enabled: bool) -> None:
        """Turn the app's Socket Mode setting on or off (off: apps.connections.open refuses)."""
        self.socket.enabled = enabled
        if enabled:
            self.deliveries.flush()

    # ----- configuration and faults --------------------------------------------------------

    def add_users(
        self, users: Iterable[StandInUser | dict[str, Any]], *, team: str | None = None
    ) -> None:
        """Add people to a workspace's directory (users.info and users.lookupByEmail)."""
        self.api.workspace(team).add_users(_as_user(u) for u in users)

    def add_channels(self, channel_ids: Iterable[str], *, team: str | None = None) -> None:
        """Create channels that messages may be posted to."""
        self.api.workspace(team).add_channels(channel_ids)

    def set_rate_limit(self, rate_limit: RateLimit | None) -> None:
        """Change chat.postMessage's per-channel limit in every workspace; ``None`` turns it off."""
        self._rate_limit = rate_limit
        for workspace in self.api.workspaces():
            workspace.set_rate_limit(rate_limit)

    def set_rate_limits(self, rate_limits: RateLimits | None) -> None:
        """Apply Slack's tiers and a workspace-wide message limit (``None`` turns them off)."""
        self.api.set_rate_limits(rate_limits)

    def rate_limits(self) -> dict[str, Any]:
        """The limits in force and how many 429s each method was answered."""
        return self.api.rate_limits()

    def inject(self, fault: Fault) -> Fault:
        """Queue any fault and return it."""
        self.api.inject(fault)
        return fault

    def fail_with_status(
        self, method: str = "*", status: int = 500, *, count: int = 1, after_apply: bool = False
    ) -> Fault:
        """Answer the next ``count`` calls of ``method`` with HTTP ``status``."""
        return self.inject(
            Fault("status", method=method, count=count, status=status, after_apply=after_apply)
        )

    def fail_with_error(
        self, method: str, error: str, *, count: int = 1, after_apply: bool = False
    ) -> Fault:
        """Answer the next ``count`` calls of ``method`` with the Slack ``error``."""
        return self.inject(
            Fault("error", method=method, count=count, error=error, after_apply=after_apply)
        )

    def hang(
        self, method: str, seconds: float, *, count: int = 1, after_apply: bool = False
    ) -> Fault:
        """Hold the next ``count`` calls of ``method`` for ``seconds`` (a client timeout)."""
        return self.inject(
            Fault("hang", method=method, count=count, seconds=seconds, after_apply=after_apply)
        )

    def hold(self, method: str, seconds: float, *, channel: str | None = None) -> Fault:
        """Hold the next call of ``method`` (to ``channel``) before it takes effect, until
        ``release_holds`` or ``seconds``; then it is applied and answered as usual."""
        return self.inject(Fault("hold", method=method, seconds=seconds, channel=channel))

    def held(self) -> list[dict[str, Any]]:
        """The calls held back (``method``, ``channel``, ``released``) until answered."""
        return self.api.held()

    def release_holds(self) -> int:
        """Let the held calls take effect and be answered; how many there were."""
        return self.api.release_holds()

    def rate_limit_storm(self, method: str = "*", *, count: int = 1, retry_after: int = 1) -> Fault:
        """Answer the next ``count`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        return self.inject(Fault("ratelimit", method=method, count=count, retry_after=retry_after))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self.api.clear_faults()

    def revoke_token(self, token: str) -> None:
        """Make later calls with ``token`` answer ``token_revoked``."""
        with self._lock:
            self.api.installations.revoke(token)

    def reset(self) -> None:
        """Forget messages, calls, faults, revocations, deliveries; keep people and workspaces."""
        self.api.reset()
        self.deliveries.reset()

    def post_as_user(self, channel: str, user_id: str, text: str) -> str:
        """Store a message written by a person (not the bot); return its ts."""
        return self.api.workspace_of_user(user_id).post_as_user(channel, user_id, text)

    # ----- inspection ----------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        """Every recorded call, oldest first, optionally only of ``method``."""
        return self.api.calls(method)

    def call_count(self) -> int:
        """How many calls were recorded (cheaper than ``len(calls())``)."""
        return self.api.call_count()

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Stored messages, oldest first, each with its ``channel`` and ``metadata``."""
        return self.api.messages(channel)

    def dm_channel_for(self, user_id: str, team: str | None = None) -> str | None:
        """The DM channel between the app and ``user_id``, once one exists."""
        return self.api.dm_channel_for(user_id, team)

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages, optionally only those shown to ``user``."""
        return self.api.ephemerals(user)

    def home_view(self, user_id: str, team: str | None = None) -> dict[str, Any] | None:
        """The Home tab last published for ``user_id``."""
        return self.api.home_view(user_id, team)

    def views(self) -> list[dict[str, Any]]:
        """Every modal and Home view the app opened or published."""
        return self.api.views()

    def response_url(self, name: str = "default") -> str:
        """A ``response_url`` to put in simulated slash-command and interaction payloads."""
        return f"{self.control_url}response/{name}"

    def responses(self, name: str | None = None) -> list[dict[str, Any]]:
        """What the app posted to response URLs (``respond()``), each as name, body, timestamp."""
        return self.api.responses(name)

    def all_text(self) -> str:
        """Every string the app sent, in calls and to response URLs (to prove what never left)."""
        return self.api.all_text()

    # ----- delivering to the app -------------------------------------------------------------

    def deliver(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        via: str | None = None,
        wait: bool = True,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Send the app an envelope; with ``wait``, return it once acked (or given up)."""
        envelope_id = self.deliveries.deliver(kind, payload, via=via)
        if not wait:
            return self.deliveries.envelope(envelope_id)
        return self.deliveries.wait(envelope_id, timeout)

    def deliver_event(
        self,
        event: dict[str, Any],
        *,
        user_id: str | None = None,
        team: str | None = None,
        via: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """Send an Events API event from ``user_id``'s workspace (or ``team``)."""
        payload = self.people.event(event, user_id=user_id, team=team)
        return self.deliver("events_api", payload, via=via, wait=wait)

    def deliver_command(
        self,
        user_id: str,
        text: str = "",
        *,
        channel: str | None = None,
        command: str = "/handover",
        via: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """``/handover TEXT`` typed by ``user_id`` (by default in their DM with the app)."""
        payload = self.people.command(user_id, text, channel=channel, command=command)
        return self.deliver("slash_commands", payload, via=via, wait=wait)

    def click(
        self,
        user_id: str,
        action_id: str,
        *,
        channel: str | None = None,
        ts: str | None = None,
        via: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """``user_id`` clicks ``action_id`` on a stored message (default: latest in their DM)."""
        payload = self.people.click(user_id, action_id, channel=channel, ts=ts)
        return self.deliver("interactive", payload, via=via, wait=wait)

    def submit_view(
        self,
        user_id: str,
        view_id: str,
        values: dict[str, Any],
        *,
        via: str | None = None,
        wait: bool = True,
    ) -> dict[str, Any]:
        """``user_id`` submits the modal ``view_id`` with ``values`` as its state."""
        payload = self.people.submission(user_id, view_id, values)
        return self.deliver("interactive", payload, via=via, wait=wait)

    def envelopes(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every envelope delivered to the app, with its attempts and ack."""
        return self.deliveries.envelopes(state)

    def envelope(self, envelope_id: str) -> dict[str, Any]:
        """One envelope, with its attempts and ack."""
        return self.deliveries.envelope(envelope_id)

    def socket_info(self) -> dict[str, Any]:
        """Whether Socket Mode is on, and the open connections."""
        return {"enabled": self.socket.enabled, "connections": self.socket.connections()}

    def socket_disconnect(
        self, reason: str = "refresh_requested", *, close_after: float | None = 10.0
    ) -> int:
        """Send every connection a ``disconnect`` message; return how many were told."""
        try:
            return self.socket.disconnect(reason, close_after=close_after)
        except ValueError as exc:
            raise ControlError(str(exc)) from exc

    def socket_drop(self) -> int:
        """Cut every Socket Mode connection without a word."""
        return self.socket.drop()

    # ----- control API -------------------------------------------------------------------------

    def handle_control(
        self, verb: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        """Answer one ``/_standin/...`` request with an HTTP status and a JSON body."""
        try:
            answer = control.route(
                self, verb, path.removeprefix(CONTROL_PREFIX).strip("/"), query, body
            )
        except (ControlError, TypeError, ValueError) as exc:
            return 400, {"ok": False, "error": str(exc)}
        if answer is None:
            return 404, {"ok": False, "error": f"no control endpoint {verb} {path}"}
        return 200, answer

    def wait_interrupted(self, seconds: float) -> None:
        """Sleep ``seconds`` unless the stand-in is stopping (used for injected hangs)."""
        self._stopping.wait(seconds)


def _as_user(user: StandInUser | dict[str, Any]) -> StandInUser:
    return user if isinstance(user, StandInUser) else StandInUser.from_dict(user)

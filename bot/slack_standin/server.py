"""The stand-in's HTTP server: the Web API under ``/api/`` and a JSON control API under
``/_standin/``."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from bot.slack_standin.model import (
    DEFAULT_RATE_LIMIT,
    ControlError,
    Fault,
    RateLimit,
    RecordedCall,
    StandInUser,
)
from bot.slack_standin.workspace import Workspace

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
CONTROL_PREFIX = "/_standin/"


class SlackStandIn:
    """A local Slack Web API for tests and the demo; point ``WebClient(base_url=)`` at ``url``."""

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
        rate_limit: RateLimit | None = DEFAULT_RATE_LIMIT,
        clock: Callable[[], float] | None = None,
    ) -> None:
        extra: dict[str, Any] = {"clock": clock} if clock is not None else {}
        self.workspace = Workspace(
            team_id=team_id,
            bot_user_id=bot_user_id,
            bot_id=bot_id,
            app_id=app_id,
            users=[_as_user(u) for u in users],
            channels=channels,
            auto_create_channels=auto_create_channels,
            allow_unknown_users=allow_unknown_users,
            tokens=tokens,
            rate_limit=rate_limit,
            **extra,
        )
        self._address = (host, port)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # ----- lifecycle ---------------------------------------------------------------------------

    def start(self) -> SlackStandIn:
        """Bind the port and serve in a background thread."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer(self._address, _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name="slack-standin", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; requests still hanging are cut short."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
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

    # ----- configuration and faults --------------------------------------------------------

    def add_users(self, users: Iterable[StandInUser | dict[str, Any]]) -> None:
        """Add people to the directory used by users.info and users.lookupByEmail."""
        self.workspace.add_users(_as_user(u) for u in users)

    def add_channels(self, channel_ids: Iterable[str]) -> None:
        """Create channels that messages may be posted to."""
        self.workspace.add_channels(channel_ids)

    def set_rate_limit(self, rate_limit: RateLimit | None) -> None:
        """Change chat.postMessage's per-channel limit; ``None`` turns it off."""
        self.workspace.set_rate_limit(rate_limit)

    def inject(self, fault: Fault) -> Fault:
        """Queue any fault and return it."""
        self.workspace.inject(fault)
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

    def rate_limit_storm(self, method: str = "*", *, count: int = 1, retry_after: int = 1) -> Fault:
        """Answer the next ``count`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        return self.inject(Fault("ratelimit", method=method, count=count, retry_after=retry_after))

    def clear_faults(self) -> None:
        """Drop every queued fault."""
        self.workspace.clear_faults()

    def revoke_token(self, token: str) -> None:
        """Make later calls with ``token`` answer ``token_revoked``."""
        self.workspace.revoke_token(token)

    def reset(self) -> None:
        """Forget messages, views, calls, faults and revocations; keep users and channels."""
        self.workspace.reset()

    def post_as_user(self, channel: str, user_id: str, text: str) -> str:
        """Store a message written by a person (not the bot); return its ts."""
        return self.workspace.post_as_user(channel, user_id, text)

    # ----- inspection ----------------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[RecordedCall]:
        """Every recorded call, oldest first, optionally only of ``method``."""
        return self.workspace.calls(method)

    def messages(self, channel: str | None = None) -> list[dict[str, Any]]:
        """Stored messages, oldest first, each with its ``channel`` and ``metadata``."""
        return self.workspace.messages(channel)

    def dm_channel_for(self, user_id: str) -> str | None:
        """The DM channel between the app and ``user_id``, once one exists."""
        return self.workspace.dm_channel_for(user_id)

    def ephemerals(self, user: str | None = None) -> list[dict[str, Any]]:
        """Ephemeral messages, optionally only those shown to ``user``."""
        return self.workspace.ephemerals(user)

    def home_view(self, user_id: str) -> dict[str, Any] | None:
        """The Home tab last published for ``user_id``."""
        return self.workspace.home_view(user_id)

    def views(self) -> list[dict[str, Any]]:
        """Every modal and Home view the app opened or published."""
        return self.workspace.views()

    def response_url(self, name: str = "default") -> str:
        """A ``response_url`` to put in simulated slash-command and interaction payloads."""
        return f"{self.control_url}response/{name}"

    def responses(self, name: str | None = None) -> list[dict[str, Any]]:
        """What the app posted to response URLs (``respond()``), each as name, body, timestamp."""
        return self.workspace.responses(name)

    def all_text(self) -> str:
        """Every string the app sent, in calls and to response URLs (to prove what never left)."""
        return self.workspace.all_text()

    # ----- control API -------------------------------------------------------------------------

    def handle_control(
        self, verb: str, path: str, query: dict[str, str], body: Any
    ) -> tuple[int, dict[str, Any]]:
        """Answer one ``/_standin/...`` request with an HTTP status and a JSON body."""
        route = (verb, path.removeprefix(CONTROL_PREFIX).strip("/"))
        try:
            answer = self._control(route, query, body)
        except (ControlError, TypeError, ValueError) as exc:
            return 400, {"ok": False, "error": str(exc)}
        if answer is None:
            return 404, {"ok": False, "error": f"no control endpoint {verb} {path}"}
        return 200, answer

    def _control(
        self, route: tuple[str, str], query: dict[str, str], body: Any
    ) -> dict[str, Any] | None:
        ws = self.workspace
        match route:
            case ("GET", "calls"):
                return {"ok": True, "calls": [c.to_dict() for c in ws.calls(query.get("method"))]}
            case ("GET", "messages"):
                channel = query.get("channel")
                if not channel and query.get("user"):
                    # A person's DM with the app, without knowing its channel ID.
                    channel = ws.dm_channel_for(query["user"])
                    if channel is None:
                        return {"ok": True, "messages": []}
                return {"ok": True, "messages": ws.messages(channel or None)}
            case ("GET", "ephemerals"):
                return {"ok": True, "ephemerals": ws.ephemerals(query.get("user"))}
            case ("GET", "views"):
                return {"ok": True, "views": ws.views()}
            case ("GET", "home"):
                return {"ok": True, "view": ws.home_view(_required(query, "user"))}
            case ("GET", "dm"):
                return {"ok": True, "channel": ws.dm_channel_for(_required(query, "user"))}
            case ("GET", "text"):
                return {"ok": True, "text": ws.all_text()}
            case ("GET", "faults"):
                return {"ok": True, "faults": ws.faults()}
            case ("POST", "faults"):
                items = body.get("faults", [body]) if isinstance(body, dict) else body
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    raise ControlError("send a fault object, a list of them or {'faults': [...]}")
                faults = [Fault.from_dict(item) for item in items]
                for fault in faults:
                    ws.inject(fault)
                return {"ok": True, "faults": ws.faults()}
            case ("DELETE", "faults"):
                ws.clear_faults()
                return {"ok": True}
            case ("POST", "users"):
                items = body.get("users", [body]) if isinstance(body, dict) else body
                if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                    raise ControlError("send a user object, a list of them or {'users': [...]}")
                ws.add_users(StandInUser.from_dict(item) for item in items)
                return {"ok": True}
            case ("POST", "channels"):
                channels = body.get("channels") if isinstance(body, dict) else body
                if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                    raise ControlError("send {'channels': ['C…', …]}")
                ws.add_channels(channels)
                return {"ok": True}
            case ("POST", "rate_limit"):
                if not isinstance(body, dict):
                    raise ControlError("send {'enabled': false} or {'burst': 5, 'per_second': 1}")
                if body.get("enabled", True) is False:
                    ws.set_rate_limit(None)
                else:
                    ws.set_rate_limit(
                        RateLimit(
                            burst=int(body.get("burst", 5)),
                            per_second=float(body.get("per_second", 1.0)),
                        )
                    )
                return {"ok": True}
            case ("POST", "tokens"):
                if not isinstance(body, dict) or not isinstance(body.get("revoke"), str):
                    raise ControlError("send {'revoke': 'xoxb-…'}")
                ws.revoke_token(body["revoke"])
                return {"ok": True}
            case ("POST", path) if path.startswith("response/") and path != "response/":
                ws.record_response(path.removeprefix("response/"), body)
                return {"ok": True}
            case ("GET", "responses"):
                return {"ok": True, "responses": ws.responses(query.get("name"))}
            case ("POST", "reset"):
                ws.reset()
                return {"ok": True}
        return None

    def wait_interrupted(self, seconds: float) -> None:
        """Sleep ``seconds`` unless the stand-in is stopping (used for injected hangs)."""
        self._stopping.wait(seconds)


def _required(query: dict[str, str], name: str) -> str:
    value = query.get(name)
    if not value:
        raise ControlError(f"the query parameter '{name}' is required")
    return value


def _as_user(user: StandInUser | dict[str, Any]) -> StandInUser:
    return user if isinstance(user, StandInUser) else StandInUser.from_dict(user)


def _parse_multipart(content_type: str, raw: bytes) -> dict[str, Any]:
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + raw)
    args: dict[str, Any] = {}
    for part in message.iter_parts() if isinstance(message, Message) else []:
        name = part.get_param("name", header="content-disposition")
        if name:
            payload = part.get_payload(decode=True) or b""
            args[str(name)] = payload.decode("utf-8", errors="replace")
    return args


class _BadRequest(Exception):
    pass


def _parse_body(content_type: str, raw: bytes) -> dict[str, Any]:
    kind = content_type.split(";")[0].strip().lower()
    if not raw:
        return {}
    if kind == "application/json":
        try:
            parsed = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _BadRequest("invalid_json") from exc
        if not isinstance(parsed, dict):
            raise _BadRequest("json_not_object")
        return parsed
    if kind == "multipart/form-data":
        return _parse_multipart(content_type, raw)
    # Slack treats any other body as form data, as slack_sdk's legacy clients send it.
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError as exc:
        raise _BadRequest("invalid_charset") from exc


def _handler_for(standin: SlackStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "SlackStandIn/1.0"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            logger.debug("%s " + format, self.address_string(), *args)

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def _route(self, verb: str) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            content_type = self.headers.get("Content-Type", "")
            try:
                body = _parse_body(content_type, raw)
            except _BadRequest as exc:
                self._send(200, {"ok": False, "error": str(exc)})
                return
            if parts.path.startswith(API_PREFIX):
                method = parts.path[len(API_PREFIX) :].strip("/")
                self._api(method, {**query, **body})
            elif parts.path.startswith(CONTROL_PREFIX):
                status, answer = standin.handle_control(verb, parts.path, query, body)
                self._send(status, answer)
            else:
                self._send(404, {"ok": False, "error": "not_found"})

        def _api(self, method: str, args: dict[str, Any]) -> None:
            authorization = self.headers.get("Authorization", "")
            bearer = authorization[7:].strip() if authorization.startswith("Bearer ") else None
            reply = standin.workspace.dispatch(method, args, bearer)
            if reply.delay:
                standin.wait_interrupted(reply.delay)
            self._send(reply.status, reply.body, reply.headers)

        def _send(
            self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(body).encode("utf-8")
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                # The client gave up (an injected hang outlasted its timeout); nothing to answer.
                logger.debug("client went away before the answer to %s", self.path)

    return Handler

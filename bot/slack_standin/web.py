"""The stand-in's HTTP front: the Web API, the control API and the OAuth install page.

``/api/METHOD`` is the Web API, ``/_standin/…`` the control API, ``/oauth/v2/authorize`` the
page where an admin approves an install.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

if TYPE_CHECKING:
    from bot.slack_standin.server import SlackStandIn

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"
CONTROL_PREFIX = "/_standin/"
AUTHORIZE_PATH = "/oauth/v2/authorize"


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


def _client_credentials(authorization: str) -> tuple[str, str] | None:
    # oauth.v2.access: slack_sdk sends the client ID and secret as HTTP Basic auth.
    if not authorization.startswith("Basic "):
        return None
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


def handler_for(standin: SlackStandIn) -> type[BaseHTTPRequestHandler]:
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
            try:
                self._answer(verb)
            except Exception as exc:
                # A defect of the stand-in itself: answer 500 rather than close the connection
                # without a word, so the test that met it reads what went wrong.
                logger.exception("the stand-in failed on %s %s", verb, self.path)
                self._send(500, {"ok": False, "error": f"standin_failed: {type(exc).__name__}"})

        def _answer(self, verb: str) -> None:
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
            if parts.path == AUTHORIZE_PATH and verb == "GET":
                self._authorize(query)
            elif parts.path.startswith(API_PREFIX):
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
            client = _client_credentials(authorization)
            with standin.api.holding_back(method, args):  # a `hold`: the call arrives late
                reply = standin.api.dispatch(method, args, bearer, client)
                if reply.delay:
                    standin.wait_interrupted(reply.delay)
                self._send(reply.status, reply.body, reply.headers)

        def _authorize(self, query: dict[str, str]) -> None:
            # An admin's answer to Slack's install page, without the page: approve (or, with
            # deny=1, refuse) the install into workspace ``team`` and go back to the app.
            try:
                location = standin.authorize_redirect(query)
            except ValueError as exc:
                self._send(400, {"ok": False, "error": str(exc)})
                return
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

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

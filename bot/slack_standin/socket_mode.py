"""Socket Mode's WebSocket end, as Slack runs it (api.slack.com/apis/socket-mode).

``apps.connections.open`` hands the app a one-time URL (``ws://HOST:PORT/link/?ticket=…``); the
app connects, gets a ``hello``, then receives envelopes and answers each with an ack
``{"envelope_id", "payload"?}``. Slack asks the app to reconnect with a ``disconnect`` message
(``warning``, ``refresh_requested``, ``link_disabled``) and closes the old connection later.
Served by the ``websockets`` library's threaded server; what to deliver and when to retry is
``bot.slack_standin.delivery``'s business.
"""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

logger = logging.getLogger(__name__)

DISCONNECT_REASONS = ("warning", "refresh_requested", "link_disabled")
# Slack names its WebSocket hosts in debug_info; the stand-in names itself.
DEBUG_HOST = "applink-standin"

AckListener = Callable[[str, Any, str], None]


@dataclass
class Link:
    """One open Socket Mode connection."""

    link_id: str
    connection: ServerConnection
    connected_at: float
    received: int = 0
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message (raises ConnectionClosed)."""
        with self.send_lock:
            self.connection.send(json.dumps(message))

    def to_dict(self) -> dict[str, Any]:
        """The connection as JSON for the control API."""
        return {
            "id": self.link_id,
            "connected_at": self.connected_at,
            "acks_received": self.received,
        }


class SocketModeServer:
    """WebSocket URLs for ``apps.connections.open``, and the connections made to them."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        app_id: str,
        on_ack: AckListener,
        on_connect: Callable[[], None],
    ) -> None:
        self._host = host
        self._port = port
        self._app_id = app_id
        self._on_ack = on_ack
        self._on_connect = on_connect
        self._lock = threading.Lock()
        self._tickets: set[str] = set()
        self._links: dict[str, Link] = {}
        self._link_ids = itertools.count(1)
        self._turn = itertools.count()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._closers: list[threading.Timer] = []
        # The app's "Socket Mode" setting: when on, deliveries go through the WebSocket.
        self.enabled = False

    # ----- lifecycle -------------------------------------------------------------------------

    def new_url(self) -> str:
        """A one-time WebSocket URL (starting the server on first use)."""
        with self._lock:
            if self._server is None:
                self._start()
            ticket = secrets.token_hex(16)
            self._tickets.add(ticket)
            return f"ws://{self._host}:{self.port}/link/?ticket={ticket}&app_id={self._app_id}"

    @property
    def port(self) -> int:
        """The WebSocket port (known once the first URL was issued)."""
        if self._server is None:
            raise RuntimeError("the Socket Mode server is not running")
        return int(self._server.socket.getsockname()[1])

    def _start(self) -> None:
        server = serve(
            self._handle,
            self._host,
            self._port,
            compression=None,
            process_request=self._check_ticket,
            logger=logger,
        )
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="slack-standin-socket", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Close every connection and stop listening."""
        with self._lock:
            server, self._server = self._server, None
            links = list(self._links.values())
            closers, self._closers = self._closers, []
        for timer in closers:
            timer.cancel()
        for link in links:
            link.connection.close_socket()
        if server is not None:
            server.shutdown()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    # ----- connections -----------------------------------------------------------------------

    def _check_ticket(self, connection: ServerConnection, request: Request) -> Response | None:
        query = parse_qs(urlsplit(request.path).query)
        ticket = (query.get("ticket") or [""])[0]
        with self._lock:
            if urlsplit(request.path).path.rstrip("/") == "/link" and ticket in self._tickets:
                # A URL works once, as Slack's do.
                self._tickets.discard(ticket)
                return None
        logger.info("refused a Socket Mode connection with an unknown or used ticket")
        return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid_ticket\n")

    def _handle(self, connection: ServerConnection) -> None:
        link = Link(f"link-{next(self._link_ids)}", connection, time.time())
        with self._lock:
            self._links[link.link_id] = link
            count = len(self._links)
        try:
            link.send(
                {
                    "type": "hello",
                    "num_connections": count,
                    "debug_info": {
                        "host": DEBUG_HOST,
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self._app_id},
                }
            )
            self._on_connect()
            for raw in connection:
                self._receive(link, raw)
        except ConnectionClosed:
            pass
        finally:
            with self._lock:
                self._links.pop(link.link_id, None)
            logger.info("Socket Mode connection %s closed", link.link_id)

    def _receive(self, link: Link, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            logger.warning("ignored a Socket Mode message that is not JSON")
            return
        if not isinstance(message, dict) or not isinstance(message.get("envelope_id"), str):
            logger.warning("ignored a Socket Mode message without an envelope_id")
            return
        link.received += 1
        self._on_ack(message["envelope_id"], message.get("payload"), link.link_id)

    # ----- sending ---------------------------------------------------------------------------

    def connections(self) -> list[dict[str, Any]]:
        """The open connections, oldest first."""
        with self._lock:
            return [link.to_dict() for link in self._links.values()]

    def send(self, message: dict[str, Any]) -> str | None:
        """Send to one open connection, taking turns; return its ID, or None with none open."""
        with self._lock:
            links = list(self._links.values())
        if not links:
            return None
        start = next(self._turn)
        for offset in range(len(links)):
            link = links[(start + offset) % len(links)]
            try:
                link.send(message)
            except ConnectionClosed:
                continue
            return link.link_id
        return None

    def disconnect(self, reason: str, *, close_after: float | None = 10.0) -> int:
        """Ask every connection to reconnect; close each ``close_after`` seconds later."""
        if reason not in DISCONNECT_REASONS:
            raise ValueError(f"reason must be one of {', '.join(DISCONNECT_REASONS)}")
        with self._lock:
            links = list(self._links.values())
        for link in links:
            try:
                link.send(
                    {"type": "disconnect", "reason": reason, "debug_info": {"host": DEBUG_HOST}}
                )
            except ConnectionClosed:
                continue
            if close_after is not None:
                timer = threading.Timer(close_after, link.connection.close)
                timer.daemon = True
                with self._lock:
                    self._closers.append(timer)
                timer.start()
        return len(links)

    def drop(self) -> int:
        """Cut every connection without a word, as a network failure does."""
        with self._lock:
            links = list(self._links.values())
        for link in links:
            link.connection.close_socket()
        return len(links)

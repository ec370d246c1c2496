"""Delivering events, slash commands and interactions to the app, and waiting for its acks.

Each delivery is an envelope (``envelope_id``, ``type`` = ``events_api`` | ``slash_commands``
| ``interactive``, ``payload``). With Socket Mode on it goes through the WebSocket; otherwise
it is signed and POSTed to the app's Request URL, as Slack does in HTTP mode. The app must ack
within ``ack_timeout`` (Slack's 3 seconds): an event not acked is sent again with
``retry_attempt`` 1, 2, 3 and a ``retry_reason`` (over HTTP: ``X-Slack-Retry-Num`` and
``X-Slack-Retry-Reason``); a slash command or interaction not acked expires, as Slack then
shows the person an error instead of retrying. An envelope with nowhere to go waits: events
until the app connects, interactions until they expire.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from bot.slack_standin.model import ControlError
from bot.slack_standin.socket_mode import SocketModeServer

logger = logging.getLogger(__name__)

ENVELOPE_TYPES = ("events_api", "slash_commands", "interactive")
TRANSPORTS = ("socket", "http")
# Interactions whose ack may carry a response (response_action, options).
RESPONSE_PAYLOAD_INTERACTIONS = ("view_submission", "block_suggestion")
QUEUED, SENT, ACKED, EXPIRED, FAILED = "queued", "sent", "acked", "expired", "failed"


@dataclass
class Envelope:
    """One delivery to the app and what became of it."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    created: float
    via: str | None = None
    retry_attempt: int = 0
    retry_reason: str = ""
    state: str = QUEUED
    attempts: list[dict[str, Any]] = field(default_factory=list)
    ack: dict[str, Any] | None = None
    due: float = 0.0  # monotonic time by which the current attempt must be acked

    def message(self) -> dict[str, Any]:
        """The envelope as Socket Mode sends it."""
        return {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": self.retry_attempt,
            "retry_reason": self.retry_reason,
        }

    def to_dict(self) -> dict[str, Any]:
        """The envelope, its attempts and its ack as JSON for the control API."""
        return copy.deepcopy(
            {
                **self.message(),
                "via": self.via,
                "state": self.state,
                "attempts": self.attempts,
                "ack": self.ack,
            }
        )

    @property
    def open(self) -> bool:
        """Whether the app may still ack it."""
        return self.state in (QUEUED, SENT)


class RequestUrl:
    """The app's Request URL and signing secret: HTTP delivery signed as Slack signs it."""

    def __init__(self, url: str, signing_secret: str) -> None:
        self.url = url
        self.signing_secret = signing_secret

    def post(self, envelope: Envelope, timeout: float) -> tuple[int, Any]:
        """POST the envelope's payload; return the HTTP status and the parsed body."""
        if envelope.type == "events_api":
            body = json.dumps(envelope.payload).encode()
            content_type = "application/json"
        elif envelope.type == "slash_commands":
            body = urllib.parse.urlencode(envelope.payload).encode()
            content_type = "application/x-www-form-urlencoded"
        else:
            body = urllib.parse.urlencode({"payload": json.dumps(envelope.payload)}).encode()
            content_type = "application/x-www-form-urlencoded"
        stamp = str(int(time.time()))
        digest = hmac.new(
            self.signing_secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": f"v0={digest}",
        }
        if envelope.retry_attempt:
            headers["X-Slack-Retry-Num"] = str(envelope.retry_attempt)
            headers["X-Slack-Retry-Reason"] = envelope.retry_reason
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, _parse(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _parse(error.read())


def _parse(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


class Deliveries:
    """Envelopes on their way to the app, through Socket Mode or the Request URL."""

    def __init__(
        self, socket: SocketModeServer, *, ack_timeout: float = 3.0, max_retries: int = 3
    ) -> None:
        self.socket = socket
        self.ack_timeout = ack_timeout
        self.max_retries = max_retries
        self.request_url: RequestUrl | None = None
        self._changed = threading.Condition()
        self._envelopes: dict[str, Envelope] = {}
        self._stopping = False
        self._worker: threading.Thread | None = None

    # ----- configuration ---------------------------------------------------------------------

    def set_request_url(self, url: str | None, signing_secret: str | None) -> None:
        """Where HTTP deliveries go (``None`` removes it); both or neither are needed."""
        if (url is None) != (signing_secret is None):
            raise ControlError("a Request URL needs the app's signing secret, and the other way")
        with self._changed:
            self.request_url = RequestUrl(url, signing_secret) if url and signing_secret else None
        self.flush()

    def stop(self) -> None:
        """Stop retrying; envelopes stay as they are."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None

    def reset(self) -> None:
        """Forget every envelope."""
        with self._changed:
            self._envelopes.clear()
            self._changed.notify_all()

    # ----- delivering ------------------------------------------------------------------------

    def deliver(self, kind: str, payload: dict[str, Any], *, via: str | None = None) -> str:
        """Send ``payload`` to the app as an envelope of ``kind``; return its envelope_id."""
        if kind not in ENVELOPE_TYPES:
            raise ControlError(f"type must be one of {', '.join(ENVELOPE_TYPES)}")
        if via is not None and via not in TRANSPORTS:
            raise ControlError(f"via must be one of {', '.join(TRANSPORTS)}")
        if not isinstance(payload, dict):
            raise ControlError("payload must be a JSON object")
        envelope = Envelope(
            envelope_id=str(uuid.uuid4()),
            type=kind,
            payload=copy.deepcopy(payload),
            accepts_response_payload=kind == "slash_commands"
            or (kind == "interactive" and payload.get("type") in RESPONSE_PAYLOAD_INTERACTIONS),
            created=time.monotonic(),
            via=via,
        )
        envelope.due = envelope.created + self.ack_timeout
        with self._changed:
            self._ensure_worker()
            self._envelopes[envelope.envelope_id] = envelope
            self._changed.notify_all()
        self._send(envelope)
        return envelope.envelope_id

    def flush(self) -> None:
        """Send the envelopes that were waiting for a way to the app (a new connection)."""
        with self._changed:
            waiting = [e for e in self._envelopes.values() if e.state == QUEUED]
        for envelope in waiting:
            self._send(envelope)

    def acked(self, envelope_id: str, payload: Any, connection: str) -> None:
        """An ack came over the WebSocket."""
        with self._changed:
            envelope = self._envelopes.get(envelope_id)
            if envelope is None:
                logger.warning("an ack for an unknown envelope %s", envelope_id)
                return
            self._record_ack(envelope, payload, connection=connection)

    def _record_ack(self, envelope: Envelope, payload: Any, **detail: Any) -> None:
        if envelope.ack is None:
            envelope.ack = {
                "payload": copy.deepcopy(payload),
                "at": time.time(),
                "retry_attempt": envelope.retry_attempt,
                # After the envelope expired, or while its retry waits for a connection.
                "late": envelope.state != SENT,
                **detail,
            }
        if envelope.open:
            envelope.state = ACKED
        self._changed.notify_all()

    def _transport(self, envelope: Envelope) -> str | None:
        if envelope.via is not None:
            return envelope.via
        if self.socket.enabled:
            return "socket"
        return "http" if self.request_url is not None else None

    def _send(self, envelope: Envelope) -> None:
        with self._changed:
            if envelope.state != QUEUED:
                return  # settled, or already on its way
            transport = self._transport(envelope)
            request_url = self.request_url
            if transport is None or (transport == "http" and request_url is None):
                return  # nowhere to go yet
            # Marked as sent before it leaves: the ack may come back before send() returns.
            attempt = {
                "at": time.time(),
                "retry_attempt": envelope.retry_attempt,
                "retry_reason": envelope.retry_reason,
                "via": transport,
            }
            envelope.attempts.append(attempt)
            envelope.via = transport
            envelope.state = SENT
            # Counted from after the attempt's timestamp: a retry is never seen early.
            envelope.due = time.monotonic() + self.ack_timeout
            message = envelope.message()
        if transport == "http":
            assert request_url is not None
            threading.Thread(
                target=self._post, args=(envelope, request_url), daemon=True, name="standin-post"
            ).start()
            return
        link = self.socket.send(message)
        with self._changed:
            if link is not None:
                attempt["connection"] = link
            elif envelope.state == SENT:
                # No connection after all: it waits for the next one.
                envelope.attempts.remove(attempt)
                envelope.state = QUEUED
            self._changed.notify_all()

    def _post(self, envelope: Envelope, request_url: RequestUrl) -> None:
        attempt = envelope.retry_attempt
        try:
            status, body = request_url.post(envelope, self.ack_timeout)
        except TimeoutError:
            status, body, failure = None, None, "http_timeout"
        except OSError as exc:
            logger.info("delivery to the Request URL failed: %s", exc)
            status, body, failure = None, None, "http_error"
        else:
            failure = "http_error"
        with self._changed:
            if envelope.retry_attempt != attempt or not envelope.open:
                return  # a later attempt is under way, or the envelope is settled
            if status is not None and 200 <= status < 300:
                self._record_ack(envelope, body, status=status)
                return
            envelope.attempts[-1].update(status=status, body=copy.deepcopy(body), failure=failure)
            envelope.due = time.monotonic()  # do not wait out the 3 s: it has failed
            self._changed.notify_all()

    # ----- waiting and retrying ----------------------------------------------------------

    def _ensure_worker(self) -> None:
        if self._worker is None:
            self._stopping = False
            self._worker = threading.Thread(
                target=self._retry_loop, daemon=True, name="standin-deliveries"
            )
            self._worker.start()

    def _retry_loop(self) -> None:
        while True:
            with self._changed:
                if self._stopping:
                    return
                now = time.monotonic()
                overdue = [e for e in self._envelopes.values() if e.open and e.due <= now]
                resend = [e for e in overdue if self._expire_or_retry(e)]
                pending = [e.due for e in self._envelopes.values() if e.open and e.due > now]
                wait = min(pending, default=now + 1.0) - now
                if not resend:
                    self._changed.wait(timeout=max(0.01, min(wait, 1.0)))
            for envelope in resend:
                self._send(envelope)

    def _expire_or_retry(self, envelope: Envelope) -> bool:
        """Settle an envelope whose attempt ran out; True when it should be sent again."""
        if envelope.type != "events_api":
            envelope.state = EXPIRED
            self._changed.notify_all()
            return False
        if envelope.state == QUEUED:
            envelope.due = time.monotonic() + self.ack_timeout
            return False  # nowhere to send it yet: it waits for the app to connect
        if envelope.retry_attempt >= self.max_retries:
            envelope.state = FAILED
            self._changed.notify_all()
            return False
        last = envelope.attempts[-1] if envelope.attempts else {}
        envelope.retry_attempt += 1
        envelope.retry_reason = last.get("failure") or (
            "timeout" if envelope.via == "socket" else "http_timeout"
        )
        envelope.state = QUEUED
        return True

    # ----- inspection ----------------------------------------------------------------------

    def envelope(self, envelope_id: str) -> dict[str, Any]:
        """One envelope as JSON (ControlError when unknown)."""
        with self._changed:
            envelope = self._envelopes.get(envelope_id)
            if envelope is None:
                raise ControlError(f"no envelope {envelope_id}")
            return envelope.to_dict()

    def envelopes(self, state: str | None = None) -> list[dict[str, Any]]:
        """Every envelope, oldest first, optionally only in ``state``."""
        with self._changed:
            return [e.to_dict() for e in self._envelopes.values() if state in (None, e.state)]

    def wait(self, envelope_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Wait until the envelope is acked, expired or failed (or ``timeout``); return it."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.ack_timeout + 1)
        with self._changed:
            envelope = self._envelopes.get(envelope_id)
            if envelope is None:
                raise ControlError(f"no envelope {envelope_id}")
            while envelope.ack is None and envelope.open:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(timeout=remaining)
            return envelope.to_dict()

"""`POST /api/referrals` and `GET /api/referrals/<id>` for case-management systems.

The endpoints are docs/reference/http.md's.

The handlers authenticate, parse and render; the rules live in `bot.services.intake`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, request
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock
from bot.errors import ServiceUnavailable
from bot.services.intake import (
    SOURCE_API,
    InvalidReferral,
    receive_referral,
    referral_detail,
    validate_referral,
)
from bot.settings import Settings

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_CLOCK_SKEW_SECONDS = 300
TIMESTAMP_HEADER = "X-Handover-Timestamp"
SIGNATURE_HEADER = "X-Handover-Signature"
SIGNATURE_VERSION = "v1"
NOT_UNICODE = "the body is not valid Unicode: a string holds a lone UTF-16 surrogate"

_STATUS_CODES = {"created": 201, "duplicate": 200, "conflict": 409}


class _Refused(Exception):
    """A request answered with an error status before it reaches the service."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def sign_request(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Handover-Signature` value of `body` sent at `timestamp` (unix seconds)."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:".encode() + body
    digest = hmac.new(secret.encode("utf-8"), base, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def _json(body: dict[str, Any], status: int) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False), status=status, mimetype="application/json"
    )


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


def _read_body() -> bytes:
    """The raw body, refusing more than MAX_BODY_BYTES without reading further."""
    length = request.content_length
    if length is not None and length > MAX_BODY_BYTES:
        raise _Refused(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    body = request.stream.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise _Refused(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    return body


def _check_timestamp(now_seconds: float) -> str:
    timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        raise _Refused(401, f"missing or malformed {TIMESTAMP_HEADER}")
    if abs(now_seconds - int(timestamp)) > MAX_CLOCK_SKEW_SECONDS:
        raise _Refused(401, f"{TIMESTAMP_HEADER} is more than 300 seconds from now")
    return timestamp


def _check_signature(secret: str, timestamp: str, body: bytes) -> None:
    given = request.headers.get(SIGNATURE_HEADER, "").strip()
    if not given.startswith(f"{SIGNATURE_VERSION}="):
        raise _Refused(401, f"missing or malformed {SIGNATURE_HEADER}")
    expected = sign_request(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"), given.lower().encode("utf-8")):
        raise _Refused(401, "signature does not match")


def _is_unicode(text: str) -> bool:
    """Whether `text` encodes as UTF-8: a lone surrogate (from `"\\ud800"`) does not."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's members; a repeated key is refused rather than silently overwritten."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if not _is_unicode(key):
            raise _Refused(400, NOT_UNICODE)
        if key in found:
            raise _Refused(400, f"the body repeats the key {json.dumps(key[:64])}")
        found[key] = value
    return found


def _check_unicode(value: Any) -> None:
    """Refuse a body with a string that is not valid Unicode (iteratively: it may be deep)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not _is_unicode(item):
                raise _Refused(400, NOT_UNICODE)
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _parse_json(body: bytes) -> Any:
    def refuse_constant(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    try:
        data = json.loads(
            body, parse_constant=refuse_constant, object_pairs_hook=_object_without_repeats
        )
    except (ValueError, RecursionError) as exc:
        raise _Refused(400, "the body is not valid JSON") from exc
    _check_unicode(data)
    return data


def create_api_blueprint(
    settings: Settings,
    session_factory: sessionmaker[Session],
    clock: Clock,
    *,
    wake_dispatcher: Callable[[], None] = lambda: None,
) -> Blueprint:
    """The blueprint of the referral API; every endpoint answers 404 while no secret is set.

    A new referral wakes this process's dispatcher at once (`wake_dispatcher`); a dispatcher in
    another process is woken by the outbox rows themselves (bot/delivery/wakeups.py).
    """
    blueprint = Blueprint("handover_api", __name__)
    tz = settings.timezone

    def guarded(handler: Callable[[bytes], Response]) -> Response:
        secret = settings.api_secret
        if not secret:
            return _error(404, "not found")
        try:
            timestamp = _check_timestamp(clock.now().timestamp())
            body = _read_body()
            _check_signature(secret, timestamp, body)
            return handler(body)
        except _Refused as refused:
            logger.info(
                "api %s %s refused %d: %s",
                request.method,
                request.path,
                refused.status,
                refused.message,
            )
            return _error(refused.status, refused.message)
        except (DBAPIError, PoolTimeout, ServiceUnavailable) as exc:
            # The transaction has rolled back. The traceback goes to the log, but not the
            # statement's parameters: they may hold the summary.
            if isinstance(exc, DBAPIError):
                exc.hide_parameters = True
            logger.exception("api %s %s: database unavailable", request.method, request.path)
            return _error(503, "database unavailable")
        except Exception as exc:
            # A fault of ours, not of the input: the caller still gets JSON, the log the traceback
            # (without statement parameters, which may hold the summary).
            if isinstance(exc, StatementError):
                exc.hide_parameters = True
            logger.exception("api %s %s: internal error", request.method, request.path)
            return _error(500, "internal error")

    @blueprint.post("/api/referrals")
    def post_referral() -> Response:
        return guarded(_create_referral)

    def _create_referral(body: bytes) -> Response:
        data = _parse_json(body)
        if not isinstance(data, dict):
            raise _Refused(400, "the body must be a JSON object")
        now = clock.now()
        try:
            with session_factory.begin() as session:
                referral_request = validate_referral(session, data, tz=tz, now=now)
                result = receive_referral(
                    session, referral_request, now=now, settings=settings, source=SOURCE_API
                )
        except InvalidReferral as invalid:
            logger.info("api referral refused: %d field errors", len(invalid.errors))
            return _json({"errors": [error.to_json() for error in invalid.errors]}, 422)
        if result.status == "created":
            wake_dispatcher()  # committed: its on-call alerts, prompts due now and card go now
        logger.info(
            "api referral %s (external_ref %s): %s",
            result.body.get("referral_id"),
            referral_request.external_ref,
            result.status,
        )
        return _json(result.body, _STATUS_CODES[result.status])

    @blueprint.get("/api/referrals/<referral_id>")
    def get_referral(referral_id: str) -> Response:
        return guarded(lambda _body: _show_referral(referral_id))

    def _show_referral(referral_id: str) -> Response:
        with session_factory.begin() as session:
            detail = referral_detail(session, referral_id, tz)
        if detail is None:
            return _error(404, f"no referral {referral_id}")
        return _json(detail, 200)

    return blueprint

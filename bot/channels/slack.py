"""The Slack Web API client and the edge where its failures become a few typed exceptions.

`chat.postMessage` is not idempotent: a 5xx or a dropped connection may come after Slack stored
the message. So the HTTP layer retries it only when the request certainly had no effect (429,
connection refused); other failures surface as an *ambiguous* `SlackTransientError`, and the
dispatcher looks in the channel's history for the message before it ever posts again.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any
from urllib.error import URLError

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    HttpRequest,
    HttpResponse,
    RateLimitErrorRetryHandler,
    RetryHandler,
    RetryState,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from bot.settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10  # seconds per HTTP request
RATE_LIMIT_RETRIES = 4
SERVER_ERROR_RETRIES = 2
CONNECTION_RETRIES = 2

# Methods whose repetition could duplicate what the user sees.
NON_IDEMPOTENT_METHODS = frozenset(
    {"chat.postMessage", "chat.postEphemeral", "chat.scheduleMessage"}
)

RECIPIENT_ERRORS = frozenset(
    {
        "user_not_found",
        "users_not_found",
        "account_inactive",
        "channel_not_found",
        "is_archived",
        "not_in_channel",
        "user_disabled",
        "cannot_dm_bot",
        "messages_tab_disabled",
    }
)
AUTH_ERRORS = frozenset(
    {
        "token_revoked",
        "token_expired",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "no_permission",
        "missing_scope",
        "not_allowed_token_type",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)
TRANSIENT_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"}
)
# Slack-side failures that may come after the message was stored.
AMBIGUOUS_ERRORS = frozenset({"internal_error", "fatal_error", "request_timeout"})


class SlackError(Exception):
    """A Slack call failed; `error` is Slack's error code (or a short description)."""

    def __init__(self, message: str, *, method: str, error: str) -> None:
        super().__init__(message)
        self.method = method
        self.error = error


class SlackTransientError(SlackError):
    """Slack could not be reached or was overloaded: try again later.

    `ambiguous` is True when the request may have taken effect anyway (timeout, 5xx after
    sending); `retry_after` is Slack's Retry-After in seconds when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str,
        error: str,
        ambiguous: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, method=method, error=error)
        self.ambiguous = ambiguous
        self.retry_after = retry_after


class SlackRecipientError(SlackError):
    """This recipient (user or channel) cannot be reached: retrying will not help."""


class SlackAuthError(SlackError):
    """The bot's token is refused (revoked, invalid, missing scope): nothing can be sent."""


class SlackRequestError(SlackError):
    """Slack refused the request itself (e.g. invalid_blocks): a bug, not worth retrying."""


def _method_of(request: HttpRequest) -> str:
    return request.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]


class IdempotentServerErrorRetryHandler(ServerErrorRetryHandler):
    """Retries 500/503 except for methods that might have been applied (chat.postMessage)."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method_of(request) in NON_IDEMPOTENT_METHODS:
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


class SafeConnectionErrorRetryHandler(ConnectionErrorRetryHandler):
    """Retries connection errors; for chat.postMessage only those before anything was sent."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if _method_of(request) in NON_IDEMPOTENT_METHODS and not _nothing_was_sent(error):
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


def _nothing_was_sent(error: BaseException | None) -> bool:
    """Whether the error happened before the request reached the server (connect phase)."""
    if isinstance(error, URLError):
        reason = error.reason
        return isinstance(reason, ConnectionRefusedError | socket.gaierror)
    return isinstance(error, ConnectionRefusedError)


def make_retry_handlers() -> list[RetryHandler]:
    """slack_sdk's retry handlers: 429 (honouring Retry-After), connection errors, 5xx."""
    return [
        RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
        SafeConnectionErrorRetryHandler(max_retry_count=CONNECTION_RETRIES),
        IdempotentServerErrorRetryHandler(max_retry_count=SERVER_ERROR_RETRIES),
    ]


def make_web_client(settings: Settings, *, timeout: int = DEFAULT_TIMEOUT) -> WebClient:
    """A WebClient for settings.slack_api_url with the bot token and the retry handlers."""
    return WebClient(
        base_url=settings.slack_api_url,
        token=settings.slack_bot_token,
        timeout=timeout,
        retry_handlers=make_retry_handlers(),
    )


def _retry_after(headers: Mapping[str, Any] | None) -> float | None:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None
    return None


def translate_api_error(exc: SlackApiError, method: str) -> SlackError:
    """The typed exception for a SlackApiError raised by `method`."""
    response = exc.response
    status = getattr(response, "status_code", 200) or 200
    data = getattr(response, "data", None)
    error = data.get("error", "") if isinstance(data, dict) else ""
    error = str(error)[:100] or f"http_{status}"
    message = f"{method} failed: {error}"
    if status == 429 or error == "ratelimited":
        retry_after = _retry_after(getattr(response, "headers", None))
        return SlackTransientError(
            message, method=method, error="ratelimited", ambiguous=False, retry_after=retry_after
        )
    if status >= 500:
        ambiguous = method in NON_IDEMPOTENT_METHODS
        return SlackTransientError(
            message, method=method, error=f"http_{status}", ambiguous=ambiguous
        )
    if error in AUTH_ERRORS and error != "account_inactive":
        return SlackAuthError(message, method=method, error=error)
    if error in RECIPIENT_ERRORS:
        # account_inactive is ambiguous (the user's or the bot's account); the dispatcher
        # tells them apart with auth.test.
        return SlackRecipientError(message, method=method, error=error)
    if error in TRANSIENT_ERRORS:
        ambiguous = method in NON_IDEMPOTENT_METHODS and error in AMBIGUOUS_ERRORS
        return SlackTransientError(message, method=method, error=error, ambiguous=ambiguous)
    if status >= 400:
        return SlackTransientError(message, method=method, error=error, ambiguous=False)
    return SlackRequestError(message, method=method, error=error)


def translate_connection_error(exc: BaseException, method: str) -> SlackTransientError:
    """A SlackTransientError for a network failure; ambiguous unless nothing was sent."""
    kind = type(exc).__name__
    ambiguous = method in NON_IDEMPOTENT_METHODS and not _nothing_was_sent(exc)
    return SlackTransientError(
        f"{method} failed: {kind}", method=method, error=f"connection:{kind}", ambiguous=ambiguous
    )


@contextmanager
def slack_edge(method: str) -> Iterator[None]:
    """Translate whatever a Slack call raises into SlackError subclasses (logged here)."""
    try:
        yield
    except SlackApiError as exc:
        translated = translate_api_error(exc, method)
        logger.exception("Slack %s failed: %s", method, translated.error)
        raise translated from exc
    except (HTTPException, OSError) as exc:  # URLError, timeouts and resets are OSErrors
        translated = translate_connection_error(exc, method)
        logger.exception("Slack %s unreachable: %s", method, translated.error)
        raise translated from exc
    except SlackClientError as exc:
        logger.exception("Slack client error on %s", method)
        raise SlackRequestError(
            f"{method} failed: {type(exc).__name__}", method=method, error="client_error"
        ) from exc


@dataclass(frozen=True)
class PostedMessage:
    """Where a message lives in Slack."""

    channel: str
    ts: str


class SlackMessenger:
    """The few Web API calls the dispatcher makes, each translated at the edge."""

    def __init__(self, client: WebClient) -> None:
        self.client = client

    def post_message(
        self, channel: str, *, text: str, blocks: list[dict[str, Any]], metadata: dict[str, Any]
    ) -> PostedMessage:
        """chat.postMessage; `channel` may be a user ID (the bot's DM with them)."""
        with slack_edge("chat.postMessage"):
            response = self.client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, metadata=metadata, unfurl_links=False
            )
        return PostedMessage(channel=str(response["channel"]), ts=str(response["ts"]))

    def update_message(
        self,
        channel: str,
        ts: str,
        *,
        text: str,
        blocks: list[dict[str, Any]],
        metadata: dict[str, Any] | None = None,
    ) -> PostedMessage:
        """chat.update of a message the bot posted (idempotent, so retried freely)."""
        with slack_edge("chat.update"):
            response = self.client.chat_update(
                channel=channel, ts=ts, text=text, blocks=blocks, metadata=metadata
            )
        return PostedMessage(channel=str(response["channel"]), ts=str(response["ts"]))

    def open_dm(self, user_id: str) -> str:
        """The ID of the bot's DM channel with a user (conversations.open)."""
        with slack_edge("conversations.open"):
            response = self.client.conversations_open(users=user_id)
        return str(response["channel"]["id"])

    def lookup_user_by_email(self, email: str) -> str | None:
        """The Slack user ID for an email address, or None when Slack knows nobody by it."""
        try:
            with slack_edge("users.lookupByEmail"):
                response = self.client.users_lookupByEmail(email=email)
        except SlackRecipientError:
            return None
        return str(response["user"]["id"])

    def bot_token_works(self) -> bool:
        """Whether auth.test accepts the token (tells a dead bot from a dead recipient)."""
        try:
            with slack_edge("auth.test"):
                self.client.auth_test()
        except (SlackAuthError, SlackRecipientError):
            return False
        return True

    def find_message(
        self,
        channel: str,
        *,
        event_type: str,
        payload_match: Mapping[str, Any],
        oldest: float | None,
        page_size: int = 200,
    ) -> PostedMessage | None:
        """The bot's message in `channel` whose metadata matches, searching history from oldest."""
        cursor: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "channel": channel,
                "include_all_metadata": True,
                "limit": page_size,
            }
            if oldest is not None:
                kwargs["oldest"] = f"{oldest:.6f}"
            if cursor:
                kwargs["cursor"] = cursor
            with slack_edge("conversations.history"):
                response = self.client.conversations_history(**kwargs)
            for message in response.get("messages") or []:
                if _metadata_matches(message, event_type, payload_match):
                    return PostedMessage(channel=channel, ts=str(message["ts"]))
            cursor = (response.get("response_metadata") or {}).get("next_cursor") or None
            if not cursor or not response.get("has_more", True):
                return None


def _metadata_matches(
    message: Mapping[str, Any], event_type: str, payload_match: Mapping[str, Any]
) -> bool:
    metadata = message.get("metadata") or {}
    if metadata.get("event_type") != event_type:
        return False
    payload = metadata.get("event_payload") or {}
    # Compare as text: a JSON round trip may turn 7 into "7".
    return all(str(payload.get(k)) == str(v) for k, v in payload_match.items())

"""Slack as a channel: the Web API client, and the edge where its failures become typed errors.

`chat.postMessage` is not idempotent: a 5xx or a dropped connection may come after Slack stored
the message. So the HTTP layer retries it only when the request certainly had no effect (429,
connection refused); other failures surface as an *ambiguous* `SlackTransientError`, and
delivery looks in the conversation's history for the message before it ever posts again.
`SlackChannel` is the `bot.channels.base.Channel` the dispatcher delivers through;
`PartnerSlackChannel` is the same in a partner's own workspace, with its installed token
(docs/partner-workspaces.md).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
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

from bot.channels.base import (
    ChannelError,
    Contact,
    CredentialsRefused,
    Message,
    RecipientUnreachable,
    RequestRefused,
    Sent,
    TransientError,
    workspace_channel_name,
)
from bot.delivery.metadata import MessageTag
from bot.settings import Settings
from rota.models import Person

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10  # seconds per HTTP request
RATE_LIMIT_RETRIES = 4
SERVER_ERROR_RETRIES = 2
CONNECTION_RETRIES = 2

# Methods whose repetition could duplicate what the user sees.
NON_IDEMPOTENT_METHODS = frozenset(
    {"chat.postMessage", "chat.postEphemeral", "chat.scheduleMessage"}
)


class Verdict(StrEnum):
    """What a Slack error code means for the message (docs/reference/slack.md, "Failures")."""

    TRANSIENT = "transient"  # Slack is overloaded or busy: the same call later may succeed
    UNREACHABLE = "unreachable"  # this person or conversation cannot be reached: pass them over
    FATAL_CREDENTIALS = "fatal: credentials"  # the bot's token is refused: nothing can be sent
    FATAL_REQUEST = "fatal: request"  # the request itself is wrong (a bug): never worth retrying


# Every error code `chat.postMessage`, `conversations.open` and `users.lookupByEmail` can
# answer (in Slack's Web API spec), and the other codes Slack documents
# for reaching a person, classified once. Anything else is a fatal request error (logged), or
# transient when Slack answered 429 or 5xx. `account_inactive` names the recipient's account or
# the bot's own: `SlackChannel` asks auth.test which.
SLACK_ERRORS: dict[str, Verdict] = {
    # transient
    "ratelimited": Verdict.TRANSIENT,
    "rate_limited": Verdict.TRANSIENT,
    "internal_error": Verdict.TRANSIENT,
    "fatal_error": Verdict.TRANSIENT,  # Slack's own failure, not ours
    "service_unavailable": Verdict.TRANSIENT,
    "request_timeout": Verdict.TRANSIENT,
    "team_added_to_org": Verdict.TRANSIENT,  # the workspace is being migrated
    # unreachable: not found, deactivated, a DM refused, a conversation closed to the bot
    "user_not_found": Verdict.UNREACHABLE,
    "users_not_found": Verdict.UNREACHABLE,
    "user_not_visible": Verdict.UNREACHABLE,
    "user_disabled": Verdict.UNREACHABLE,
    "account_inactive": Verdict.UNREACHABLE,
    "enterprise_is_restricted": Verdict.UNREACHABLE,
    "cannot_dm_bot": Verdict.UNREACHABLE,
    "messages_tab_disabled": Verdict.UNREACHABLE,
    "channel_not_found": Verdict.UNREACHABLE,
    "not_in_channel": Verdict.UNREACHABLE,
    "is_archived": Verdict.UNREACHABLE,
    "restricted_action": Verdict.UNREACHABLE,
    "no_slack_user": Verdict.UNREACHABLE,  # ours: no Slack user and no email to look up
    # fatal: the bot's credentials
    "not_authed": Verdict.FATAL_CREDENTIALS,
    "invalid_auth": Verdict.FATAL_CREDENTIALS,
    "token_revoked": Verdict.FATAL_CREDENTIALS,
    "token_expired": Verdict.FATAL_CREDENTIALS,
    "no_permission": Verdict.FATAL_CREDENTIALS,
    "missing_scope": Verdict.FATAL_CREDENTIALS,
    "not_allowed_token_type": Verdict.FATAL_CREDENTIALS,
    "team_access_not_granted": Verdict.FATAL_CREDENTIALS,
    "ekm_access_denied": Verdict.FATAL_CREDENTIALS,
    # fatal: the request
    "msg_too_long": Verdict.FATAL_REQUEST,
    "no_text": Verdict.FATAL_REQUEST,
    "too_many_attachments": Verdict.FATAL_REQUEST,
    "invalid_blocks": Verdict.FATAL_REQUEST,
    "invalid_metadata_format": Verdict.FATAL_REQUEST,
    "invalid_arg_name": Verdict.FATAL_REQUEST,
    "invalid_array_arg": Verdict.FATAL_REQUEST,
    "invalid_charset": Verdict.FATAL_REQUEST,
    "invalid_form_data": Verdict.FATAL_REQUEST,
    "invalid_post_type": Verdict.FATAL_REQUEST,
    "missing_post_type": Verdict.FATAL_REQUEST,
    "invalid_json": Verdict.FATAL_REQUEST,
    "json_not_object": Verdict.FATAL_REQUEST,
    "upgrade_required": Verdict.FATAL_REQUEST,
    "method_not_supported_for_channel_type": Verdict.FATAL_REQUEST,
    "users_list_not_supplied": Verdict.FATAL_REQUEST,
    "not_enough_users": Verdict.FATAL_REQUEST,
    "too_many_users": Verdict.FATAL_REQUEST,
    "invalid_user_combination": Verdict.FATAL_REQUEST,
}


def classify(error: str, status: int = 200) -> Verdict:
    """The verdict on a Slack error code (and the HTTP status it came with)."""
    if status == 429 or status >= 500:
        return Verdict.TRANSIENT
    verdict = SLACK_ERRORS.get(error)
    if verdict is not None:
        return verdict
    return Verdict.TRANSIENT if status >= 400 else Verdict.FATAL_REQUEST


# Slack-side failures that may come after the message was stored.
AMBIGUOUS_ERRORS = frozenset({"internal_error", "fatal_error", "request_timeout"})


class SlackError(ChannelError):
    """A Slack call failed; `error` is Slack's error code (or a short description)."""


class SlackTransientError(SlackError, TransientError):
    """Slack could not be reached or was overloaded: try again later (see TransientError)."""


class SlackRecipientError(SlackError, RecipientUnreachable):
    """This recipient (user or channel) cannot be reached: retrying will not help."""


class SlackAuthError(SlackError, CredentialsRefused):
    """The bot's token is refused (revoked, invalid, missing scope): nothing can be sent."""


class SlackRequestError(SlackError, RequestRefused):
    """Slack refused the request itself (e.g. invalid_blocks): a bug, not worth retrying."""


def method_of(request: HttpRequest) -> str:
    """The Web API method a request (as a retry handler sees it) calls."""
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
        if method_of(request) in NON_IDEMPOTENT_METHODS:
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
        if method_of(request) in NON_IDEMPOTENT_METHODS and not _nothing_was_sent(error):
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
    if status == 429 or error in ("ratelimited", "rate_limited"):
        retry_after = _retry_after(getattr(response, "headers", None))
        return SlackTransientError(
            message, method=method, error="ratelimited", ambiguous=False, retry_after=retry_after
        )
    if status >= 500:
        ambiguous = method in NON_IDEMPOTENT_METHODS
        return SlackTransientError(
            message, method=method, error=f"http_{status}", ambiguous=ambiguous
        )
    verdict = classify(error, status)
    if verdict is Verdict.FATAL_CREDENTIALS:
        return SlackAuthError(message, method=method, error=error)
    if verdict is Verdict.UNREACHABLE:
        return SlackRecipientError(message, method=method, error=error)
    if verdict is Verdict.TRANSIENT:
        ambiguous = method in NON_IDEMPOTENT_METHODS and error in AMBIGUOUS_ERRORS
        return SlackTransientError(message, method=method, error=error, ambiguous=ambiguous)
    return SlackRequestError(message, method=method, error=error)


def translate_connection_error(exc: BaseException, method: str) -> SlackTransientError:
    """A SlackTransientError for a network failure; ambiguous unless nothing was sent."""
    kind = type(exc).__name__
    ambiguous = method in NON_IDEMPOTENT_METHODS and not _nothing_was_sent(exc)
    return SlackTransientError(
        f"{method} failed: {kind}",
        method=method,
        error=f"connection:{kind}",
        ambiguous=ambiguous,
        unreachable=True,
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


class SlackChannel:
    """The Web API calls delivery makes, each translated at the edge (a `Channel`)."""

    name = "slack"
    searchable = True  # a conversation's history
    workspace: str | None = None  # the home workspace's (a partner's: PartnerSlackChannel)

    def __init__(self, client: WebClient) -> None:
        self.client = client

    # ----- people ----------------------------------------------------------------------------

    def address_of(self, contact: Contact) -> str | None:
        """Their Slack user ID from the rota (given, or found by email earlier)."""
        return contact.slack_user

    def look_up(self, contact: Contact) -> str:
        """users.lookupByEmail; RecipientUnreachable when there is no email or no such user."""
        if not contact.email:
            raise SlackRecipientError(
                f"{contact.person_id} has no Slack user and no email",
                method="users.lookupByEmail",
                error="no_slack_user",
            )
        try:
            with slack_edge("users.lookupByEmail"):
                response = self.client.users_lookupByEmail(email=contact.email)
        except SlackRecipientError as exc:
            raise SlackRecipientError(
                f"no Slack user for {contact.person_id}",
                method="users.lookupByEmail",
                error=exc.error,
            ) from exc
        return str(response["user"]["id"])

    def remember(self, person: Person, address: str) -> None:
        """Store the user ID found by email beside the one people.csv may give later."""
        person.slack_user_found = address

    @staticmethod
    def is_user(address: str) -> bool:
        """Whether an address is a Slack user (the bot's DM with them), not a conversation."""
        return address[:1] in ("U", "W")

    # ----- messages --------------------------------------------------------------------------

    def send(self, address: str, message: Message) -> Sent:
        """chat.postMessage; `address` may be a user ID (the bot's DM with them)."""
        with self._telling_a_dead_bot_apart(), slack_edge("chat.postMessage"):
            response = self.client.chat_postMessage(
                channel=address,
                text=message.text,
                blocks=list(message.blocks),
                metadata=message.tag.metadata,
                unfurl_links=False,
            )
        return Sent(conversation=str(response["channel"]), ts=str(response["ts"]))

    def update(self, sent: Sent, message: Message) -> Sent:
        """chat.update of a message the bot posted (idempotent, so retried freely)."""
        with self._telling_a_dead_bot_apart(), slack_edge("chat.update"):
            response = self.client.chat_update(
                channel=sent.conversation,
                ts=sent.ts,
                text=message.text,
                blocks=list(message.blocks),
            )
        return Sent(conversation=str(response["channel"]), ts=str(response["ts"]))

    def describe(self, sent: Sent) -> dict[str, Any]:
        """The log's words for a sent Slack message: its conversation and ts."""
        return {"channel": sent.conversation, "ts": sent.ts}

    def find(
        self,
        address: str,
        tag: MessageTag,
        since: datetime | None,
        *,
        other_than: Sent | None = None,
    ) -> Sent | None:
        """The bot's message in the conversation of `address` whose metadata matches `tag`
        (other than the message `other_than`)."""
        with self._telling_a_dead_bot_apart():
            conversation = self._open_dm(address) if self.is_user(address) else address
            return self._find_in_history(
                conversation,
                event_type=tag.event_type,
                payload_match=tag.identity,
                oldest=since.timestamp() if since is not None else None,
                other_than=other_than.ts if other_than is not None else None,
            )

    def delete(self, sent: Sent) -> bool:
        """chat.delete of a message the bot posted (one already gone counts as deleted)."""
        try:
            with self._telling_a_dead_bot_apart(), slack_edge("chat.delete"):
                self.client.chat_delete(channel=sent.conversation, ts=sent.ts)
        except SlackRequestError as exc:
            if exc.error != "message_not_found":
                raise
        return True

    # ----- Slack's own ------------------------------------------------------------------------

    def _open_dm(self, user_id: str) -> str:
        """The ID of the bot's DM channel with a user (conversations.open)."""
        with slack_edge("conversations.open"):
            response = self.client.conversations_open(users=user_id)
        return str(response["channel"]["id"])

    @contextmanager
    def _telling_a_dead_bot_apart(self) -> Iterator[None]:
        """account_inactive names the recipient's account or the bot's own: auth.test tells."""
        try:
            yield
        except SlackRecipientError as exc:
            if exc.error == "account_inactive" and not self._bot_token_works():
                raise SlackAuthError(str(exc), method=exc.method, error=exc.error) from exc
            raise

    def _bot_token_works(self) -> bool:
        """Whether auth.test accepts the token; True when it cannot tell (no guess stops all)."""
        try:
            with slack_edge("auth.test"):
                self.client.auth_test()
        except (SlackAuthError, SlackRecipientError):
            return False
        except SlackError:
            return True
        return True

    def _find_in_history(
        self,
        channel: str,
        *,
        event_type: str,
        payload_match: Mapping[str, Any],
        oldest: float | None,
        other_than: str | None = None,
        page_size: int = 200,
    ) -> Sent | None:
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
                if message.get("ts") == other_than:
                    continue
                if _metadata_matches(message, event_type, payload_match):
                    return Sent(conversation=channel, ts=str(message["ts"]))
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


# ----- partner workspaces (docs/partner-workspaces.md) ------------------------------------------


class PartnerSlackChannel(SlackChannel):
    """Slack in a partner's workspace, through its installation's token.

    A workspace without an installation, or whose token Slack refuses (the app was removed),
    cannot reach its people: that is `RecipientUnreachable` (their email, else the unreachable
    path), never a hold on everything as a refused home token is.
    """

    def __init__(self, workspace: str, client_for: Callable[[str], WebClient | None]) -> None:
        self.workspace = workspace
        self.name = workspace_channel_name(workspace)
        self._client_for = client_for

    @property
    def client(self) -> WebClient:  # type: ignore[override]
        """The workspace's client; the person is unreachable when the app is not installed."""
        client = self._client_for(self.workspace)
        if client is None:
            raise SlackRecipientError(
                f"Handover is not installed in workspace {self.workspace}",
                method="installation",
                error="workspace_not_installed",
            )
        return client

    @contextmanager
    def _not_installed_when_refused(self) -> Iterator[None]:
        try:
            yield
        except SlackAuthError as exc:
            raise SlackRecipientError(
                f"workspace {self.workspace} refuses the app ({exc.error})",
                method=exc.method,
                error=f"workspace_{exc.error}",
            ) from exc

    def look_up(self, contact: Contact) -> str:
        """As at home, in the workspace; a refused token is `RecipientUnreachable`."""
        self.client  # noqa: B018  (not installed: said before asking Slack for anyone)
        with self._not_installed_when_refused():
            return super().look_up(contact)

    def send(self, address: str, message: Message) -> Sent:
        """As at home, in the workspace; a refused token is `RecipientUnreachable`."""
        with self._not_installed_when_refused():
            return super().send(address, message)

    def update(self, sent: Sent, message: Message) -> Sent:
        """As at home, in the workspace; a refused token is `RecipientUnreachable`."""
        with self._not_installed_when_refused():
            return super().update(sent, message)

    def find(
        self,
        address: str,
        tag: MessageTag,
        since: datetime | None,
        *,
        other_than: Sent | None = None,
    ) -> Sent | None:
        """As at home, in the workspace; a refused token is `RecipientUnreachable`."""
        with self._not_installed_when_refused():
            return super().find(address, tag, since, other_than=other_than)

    def delete(self, sent: Sent) -> bool:
        """As at home, in the workspace; a refused token is `RecipientUnreachable`."""
        with self._not_installed_when_refused():
            return super().delete(sent)

    def describe(self, sent: Sent) -> dict[str, Any]:
        """As at home, naming the workspace too."""
        return {**super().describe(sent), "workspace": self.workspace}

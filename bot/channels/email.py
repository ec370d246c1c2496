"""Email as a channel: SMTP through the council's or NHSmail's relay, and the edge where its
failures become typed errors.

One connection per message: STARTTLS on `smtp://` (refused when the relay does not offer it,
unless the relay is on this machine), TLS from the first byte on `smtps://`, the relay's
certificate verified, AUTH when the URL names a user. Each email has a Message-ID made from the
outbox row that sends it (`<outbox-{row}.{referral}@{host of HANDOVER_PUBLIC_URL}>`), a plain
text and an HTML part rendered from the Slack message's own blocks (`email_render`), a subject
naming only the referral ID, and a link per answer to the bot's response page.

**Exactly once, for email.** A relay cannot be asked what it already took. So `find` knows
nothing: an attempt that may have reached the relay (a connection dropped after the message
was handed over, before the relay said 250) is sent again, with the *same* Message-ID, so the
relay and the recipient's mail client can recognise the copy, and the log says so
(`sent_again` in the detail). A prompt is never lost for that doubt; at worst it arrives twice
under one Message-ID. Failures: 4xx and dropped connections are transient (retried through the
outbox), a refused recipient (5xx at RCPT) is unreachable, refused credentials or a relay
without TLS stop this channel until fixed (docs/email.md).
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, parseaddr
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from bot.channels.base import (
    ChannelError,
    Contact,
    CredentialsRefused,
    Message,
    RecipientUnreachable,
    RequestRefused,
    Sent,
    TransientError,
)
from bot.channels.email_render import render_email
from bot.clock import Clock
from bot.delivery.actions import CONTACT_MADE, CONTACT_MISSED, RESPONSE_KIND_BY_ACTION
from bot.delivery.kinds import ResponseKind
from bot.delivery.metadata import MessageTag
from bot.response_links import Answer, ContactAnswer, LinkClaim, ResponseLinks, link_expiry
from bot.settings import SmtpRelay
from handlers.blocks.prompt import format_local
from rota.models import Person

logger = logging.getLogger(__name__)

CHANNEL = "email"
DEFAULT_TIMEOUT = 30.0  # seconds per SMTP command


class EmailError(ChannelError):
    """An SMTP exchange failed; `error` is `smtp:<code>` or a short description."""


class EmailTransientError(EmailError, TransientError):
    """The relay could not be reached, dropped the connection or answered 4xx: try again."""


class EmailRecipientError(EmailError, RecipientUnreachable):
    """The relay refused this recipient (5xx), or the person has no email address."""


class EmailRequestError(EmailError, RequestRefused):
    """The relay refused this message itself (5xx after DATA)."""


class EmailCredentialsError(EmailError, CredentialsRefused):
    """The relay refused our credentials or sender, or offers no TLS: nothing can be sent."""


def _code_error(code: int, what: str, phase: str) -> EmailError:
    """The typed error for an SMTP reply `code` at `phase` (envelope, recipient, data)."""
    message = f"{phase}: the relay answered {code} {what}".strip()
    error = f"smtp:{code}"
    if 400 <= code < 500:
        return EmailTransientError(message, method=phase, error=error, ambiguous=False)
    if phase == "recipient":
        return EmailRecipientError(message, method=phase, error=error)
    if phase in ("connect", "hello", "login", "sender"):
        # The relay refuses us, not this message: no email can go until it is fixed.
        return EmailCredentialsError(message, method=phase, error=error)
    return EmailRequestError(message, method=phase, error=error)


def _reply_text(reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return " ".join(text.split())[:200]


class EmailChannel:
    """Sends messages by email through one SMTP relay (a `Channel`)."""

    name = CHANNEL
    searchable = False  # a relay cannot be asked what it took

    def __init__(
        self,
        relay: SmtpRelay,
        *,
        mail_from: str,
        links: ResponseLinks,
        clock: Clock,
        tz: ZoneInfo,
        name_of: Callable[[str], str | None] = lambda _slack_user: None,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.relay = relay
        self.mail_from = mail_from
        self.envelope_from = parseaddr(mail_from)[1]
        self.links = links
        self.clock = clock
        self.tz = tz
        self.name_of = name_of
        self.timeout = timeout
        self.ssl_context = ssl_context or ssl.create_default_context()
        self.host = urlsplit(links.public_url).hostname or "handover.invalid"

    # ----- people ----------------------------------------------------------------------------

    def address_of(self, contact: Contact) -> str | None:
        """Their email address from the rota."""
        return contact.email

    def look_up(self, contact: Contact) -> str:
        """Nobody else knows an address the rota does not give."""
        raise EmailRecipientError(
            f"{contact.person_id} has no email address", method="look_up", error="no_email"
        )

    def remember(self, person: Person, address: str) -> None:
        """Nothing to store: the address is the rota's own."""

    # ----- messages --------------------------------------------------------------------------

    def find(
        self,
        address: str,
        tag: MessageTag,
        since: datetime | None,
        *,
        other_than: Sent | None = None,
    ) -> Sent | None:
        """A relay cannot be asked what it took (`searchable` is False): an email in doubt is
        sent again, with its Message-ID unchanged (see the module's docstring)."""
        return None

    def delete(self, sent: Sent) -> bool:
        """An email cannot be taken back: the claim checked just before sending is its guard
        against a second copy (docs/email.md)."""
        return False

    def send(self, address: str, message: Message) -> Sent:
        """Send one email to `address`, its Message-ID made from the message's outbox row."""
        email = self.compose(address, message)
        self._deliver(address, email)
        return Sent(conversation=address, ts=str(email["Message-ID"]))

    def update(self, sent: Sent, message: Message) -> Sent:
        """An email cannot be changed: the new version is sent as a reply to the first."""
        email = self.compose(sent.conversation, message, replacing=sent.ts)
        self._deliver(sent.conversation, email)
        return Sent(conversation=sent.conversation, ts=str(email["Message-ID"]))

    def describe(self, sent: Sent) -> dict[str, Any]:
        """The log's words for a sent email: the channel, the address and the Message-ID."""
        return {"channel": CHANNEL, "to": sent.conversation, "message_id": sent.ts}

    # ----- the email ---------------------------------------------------------------------------

    def message_id(self, tag: MessageTag, suffix: str = "") -> str:
        """`<outbox-{row}.{referral}@{host}>`: the same for every attempt at the same row."""
        row = ".".join(str(value) for value in tag.identity.values()) or "message"
        referral = str(tag.payload.get("referral_id") or "handover")
        return f"<outbox-{row}{suffix}.{referral}@{self.host}>"

    def compose(
        self, address: str, message: Message, *, replacing: str | None = None
    ) -> EmailMessage:
        """The email of `message` for `address` (links bound to the message's recipient)."""
        now = self.clock.now()
        expires = link_expiry(message.respond_by, now)

        def link_for(action_id: str, value: str) -> str | None:
            answer = link_answer(action_id)
            if answer is None or not value.isdigit() or message.recipient is None:
                return None
            claim = LinkClaim(int(value), message.recipient, answer, expires)
            return self.links.url(claim)

        rendered = render_email(
            message.text,
            message.blocks,
            link_for=link_for,
            name_of=self.name_of,
            links_expire=format_local(expires, self.tz),
        )
        email = EmailMessage(policy=SMTP_POLICY)
        email["From"] = self.mail_from
        email["To"] = address
        email["Subject"] = rendered.subject
        email["Date"] = format_datetime(now)
        email["Message-ID"] = (
            self.message_id(message.tag) if replacing is None else self._update_id(message, now)
        )
        thread = replacing or self._thread_of(message.tag)
        if thread:
            email["In-Reply-To"] = thread
            email["References"] = thread
        # Machine-sent: no out-of-office replies (RFC 3834; Exchange, which NHSmail runs).
        email["Auto-Submitted"] = "auto-generated"
        email["X-Auto-Response-Suppress"] = "All"
        email["Content-Language"] = "en-GB"
        email.set_content(rendered.text)
        email.add_alternative(rendered.html, subtype="html")
        return email

    def _update_id(self, message: Message, now: datetime) -> str:
        return self.message_id(message.tag, f".{int(now.timestamp())}")

    def _thread_of(self, tag: MessageTag) -> str | None:
        """A reminder or an escalation is filed under the prompt's email."""
        prompt_id = tag.payload.get("prompt_id")
        if prompt_id is None or "prompt_id" in tag.key:
            return None
        prompt_tag = MessageTag(tag.event_type, tag.payload, key=("prompt_id",))
        return self.message_id(prompt_tag)

    # ----- SMTP ------------------------------------------------------------------------------

    def _deliver(self, address: str, email: EmailMessage) -> None:
        """One SMTP exchange; its failures as the channel's typed errors."""
        with _smtp_edge() as phase, self._connect() as smtp:
            phase.now = "hello"
            self._secure(smtp)
            if self.relay.username:
                phase.now = "login"
                smtp.login(self.relay.username, self.relay.password or "")
            phase.now = "sender"
            code, reply = smtp.mail(self.envelope_from)
            if code != 250:
                raise _code_error(code, _reply_text(reply), "sender")
            phase.now = "recipient"
            code, reply = smtp.rcpt(address)
            if code not in (250, 251):
                raise _code_error(code, _reply_text(reply), "recipient")
            # From here on the relay may have the message, whatever happens next.
            phase.now = "data"
            code, reply = smtp.data(email.as_bytes())
            if code != 250:
                raise _code_error(code, _reply_text(reply), "data")
            phase.now = "accepted"
            logger.info("email %s accepted by the relay for %s", email["Message-ID"], address)

    def _connect(self) -> smtplib.SMTP:
        relay = self.relay
        if relay.implicit_tls:
            return smtplib.SMTP_SSL(
                relay.host, relay.port, timeout=self.timeout, context=self.ssl_context
            )
        return smtplib.SMTP(relay.host, relay.port, timeout=self.timeout)

    def _secure(self, smtp: smtplib.SMTP) -> None:
        """STARTTLS on smtp:// (already TLS on smtps://); plain text only to a local relay."""
        smtp.ehlo()
        if self.relay.implicit_tls:
            return
        if smtp.has_extn("starttls"):
            smtp.starttls(context=self.ssl_context)
            smtp.ehlo()
        elif not self.relay.loopback:
            raise EmailCredentialsError(
                "the relay does not offer STARTTLS: no email is sent in plain text",
                method="starttls",
                error="no_starttls",
            )


class _Phase:
    """How far an SMTP exchange got (a failure after `data` began is ambiguous)."""

    def __init__(self) -> None:
        self.now = "connect"


@contextmanager
def _smtp_edge() -> Iterator[_Phase]:
    """Translate whatever an SMTP exchange raises into EmailError subclasses (logged here)."""
    phase = _Phase()
    try:
        yield phase
    except EmailError as exc:
        logger.error("email %s failed: %s", exc.method, exc.error)
        raise
    except smtplib.SMTPAuthenticationError as exc:
        logger.error("the mail relay refused Handover's credentials (%s)", exc.smtp_code)
        raise EmailCredentialsError(
            "the relay refused the user and password", method="login", error=f"smtp:{exc.smtp_code}"
        ) from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise EmailCredentialsError(
            "the relay does not offer AUTH", method=phase.now, error="no_auth"
        ) from exc
    except smtplib.SMTPResponseException as exc:
        code = exc.smtp_code
        if phase.now == "accepted":
            return  # a failure while saying goodbye: the message was accepted
        translated = _code_error(code, _reply_text(exc.smtp_error), phase.now)
        if isinstance(translated, EmailTransientError) and phase.now == "data":
            translated.ambiguous = True
        logger.error("email %s failed: %s", phase.now, translated.error)
        raise translated from exc
    except ssl.SSLError as exc:
        logger.exception("TLS with the mail relay failed")
        raise EmailCredentialsError(
            f"TLS with the relay failed ({type(exc).__name__})", method="tls", error="tls"
        ) from exc
    except (smtplib.SMTPException, OSError) as exc:
        if phase.now == "accepted":
            return  # the connection dropped after the relay said 250: it has the message
        kind = "timeout" if isinstance(exc, socket.timeout | TimeoutError) else type(exc).__name__
        ambiguous = phase.now == "data"
        logger.error(
            "email %s failed: %s%s",
            phase.now,
            kind,
            " (the relay may have the message: it will be sent again, same Message-ID)"
            if ambiguous
            else "",
        )
        raise EmailTransientError(
            f"{phase.now}: {kind}",
            method=phase.now,
            error=f"smtp:{kind}" if phase.now != "connect" else f"connection:{kind}",
            ambiguous=ambiguous,
            unreachable=phase.now == "connect",
        ) from exc


# The contact check's buttons (docs/closing-the-loop.md), answered by the same links.
CONTACT_ANSWER_BY_ACTION = {CONTACT_MADE: ContactAnswer.MADE, CONTACT_MISSED: ContactAnswer.MISSED}


def link_answer(action_id: str) -> Answer | None:
    """The answer a button's link records, or None for a button that works only in Slack."""
    answer = RESPONSE_KIND_BY_ACTION.get(action_id)
    if answer is not None:
        return ResponseKind(answer)
    return CONTACT_ANSWER_BY_ACTION.get(action_id)

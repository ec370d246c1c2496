"""A local mail relay for the tests and the demo: a real SMTP server (aiosmtpd) in a thread.

It speaks SMTP on 127.0.0.1, optionally with STARTTLS or implicit TLS and AUTH, keeps every
message it accepts, and can be told to misbehave as relays do: refuse a recipient (550), defer
one (451), or drop the connection after taking a message's data and before answering, so the
sender cannot know whether it was taken.

    with MailStandIn() as relay:
        settings = Settings(..., smtp_url=relay.url)
        relay.drop_after_data()          # the next message is taken, then the line goes dead
        relay.messages()                 # what arrived, oldest first
"""

from __future__ import annotations

import email
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as DEFAULT_POLICY
from typing import Any
from urllib.parse import quote

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


@dataclass(frozen=True)
class ReceivedMail:
    """One message the relay took: its envelope and the parsed email."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    dropped: bool  # the connection was dropped before the sender heard it was taken

    @property
    def email(self) -> EmailMessage:
        """The parsed message."""
        parsed = email.message_from_bytes(self.raw, policy=DEFAULT_POLICY)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def message_id(self) -> str:
        return str(self.email["Message-ID"])

    def body(self, subtype: str = "plain") -> str:
        """The text (`plain`) or `html` part."""
        part = self.email.get_body(preferencelist=(subtype,))
        assert part is not None, f"no text/{subtype} part"
        return str(part.get_content())


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Handler:
    """aiosmtpd's hooks: the faults, then keep the message."""

    def __init__(self, relay: MailStandIn) -> None:
        self.relay = relay

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:
        refusal = self.relay._refusal_for(address)
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:
        drop = self.relay._take_drop()
        self.relay._keep(
            ReceivedMail(
                mail_from=str(envelope.mail_from),
                rcpt_tos=tuple(envelope.rcpt_tos),
                raw=bytes(envelope.original_content or envelope.content),
                dropped=drop,
            )
        )
        if drop:
            # The message is taken; the sender never hears so.
            server.transport.abort()
            return "250 OK (never heard)"
        return "250 OK: queued"


class MailStandIn:
    """An SMTP relay on 127.0.0.1 that keeps what it is sent (see the module's docstring)."""

    def __init__(
        self,
        *,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        login: tuple[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.implicit_tls = implicit_tls is not None
        self.login = login
        self._lock = threading.Lock()
        self._received: list[ReceivedMail] = []
        self._refused: dict[str, str] = {}
        self._deferrals = 0
        self._drops = 0
        kwargs: dict[str, Any] = {}
        if starttls is not None:
            kwargs.update(tls_context=starttls, require_starttls=True)
        if implicit_tls is not None:
            kwargs["ssl_context"] = implicit_tls
        if login is not None:
            kwargs.update(
                authenticator=self._authenticate,
                auth_required=True,
                auth_require_tls=starttls is not None or implicit_tls is not None,
            )
        self._controller = Controller(
            _Handler(self), hostname="127.0.0.1", port=self.port, **kwargs
        )

    # ----- lifecycle -------------------------------------------------------------------------

    def start(self) -> MailStandIn:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> MailStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """HANDOVER_SMTP_URL for this relay."""
        scheme = "smtps" if self.implicit_tls else "smtp"
        credentials = ""
        if self.login is not None:
            user, password = self.login
            credentials = f"{quote(user, safe='')}:{quote(password, safe='')}@"
        return f"{scheme}://{credentials}127.0.0.1:{self.port}"

    # ----- what arrived ----------------------------------------------------------------------

    def messages(self, to: str | None = None) -> list[ReceivedMail]:
        """The messages taken (to one address), oldest first, dropped ones included."""
        with self._lock:
            return [m for m in self._received if to is None or to in m.rcpt_tos]

    def __iter__(self) -> Iterator[ReceivedMail]:
        return iter(self.messages())

    # ----- faults ----------------------------------------------------------------------------

    def refuse(self, address: str, reply: str = "550 5.1.1 Mailbox unavailable") -> None:
        """Refuse this recipient at RCPT from now on."""
        with self._lock:
            self._refused[address.lower()] = reply

    def defer(self, times: int = 1) -> None:
        """Answer the next `times` recipients with 451 (try again later)."""
        with self._lock:
            self._deferrals += times

    def drop_after_data(self, times: int = 1) -> None:
        """Take the next `times` messages, then drop the connection without answering."""
        with self._lock:
            self._drops += times

    # ----- for the handler -------------------------------------------------------------------

    def _refusal_for(self, address: str) -> str | None:
        with self._lock:
            if self._deferrals:
                self._deferrals -= 1
                return "451 4.3.0 Temporary failure, try again later"
            return self._refused.get(address.lower())

    def _take_drop(self) -> bool:
        with self._lock:
            if self._drops:
                self._drops -= 1
                return True
            return False

    def _keep(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._received.append(mail)

    def _authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        expected = self.login
        ok = (
            isinstance(auth_data, LoginPassword)
            and expected is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == expected
        )
        return AuthResult(success=ok, handled=False)

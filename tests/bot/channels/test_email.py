"""The email channel against a real SMTP server (the local mail relay): what an email says,
its Message-ID and links, TLS and AUTH, and how each relay failure is typed."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.channels.base import Message
from bot.channels.email import (
    EmailChannel,
    EmailCredentialsError,
    EmailRecipientError,
    EmailTransientError,
)
from bot.clock import FixedClock
from bot.delivery.kinds import ResponseKind
from bot.delivery.metadata import escalation_tag, prompt_tag
from bot.mail_standin import MailStandIn
from bot.response_links import LinkClaim, ResponseLinks
from bot.settings import SmtpRelay, parse_smtp_url
from handlers.blocks.escalation import build_escalation_message
from handlers.blocks.prompt import build_prompt_message
from tests.bot.channels.tls import Certificate, make_certificate

LONDON = ZoneInfo("Europe/London")
NOW = datetime(2026, 12, 29, 8, 0, tzinfo=UTC)
RESPOND_BY = datetime(2026, 12, 29, 18, 30, tzinfo=UTC)
PUBLIC_URL = "https://handover.wexcombe.example"
SECRET = "s" * 32
TO = "sam.bell@riverside.nhs.example"
SUMMARY = "SECRET-NARRATIVE baby at 12 Acacia Avenue"


@dataclasses.dataclass
class FakeReferral:
    referral_id: str = "HO-K7M3QX"
    external_ref: str = "WXC-2026-004187"
    category: str = "domestic_abuse"
    urgency: str = "urgent"
    referred_at: datetime = datetime(2026, 12, 26, 2, 10, tzinfo=UTC)
    received_at: datetime = datetime(2026, 12, 26, 2, 10, tzinfo=UTC)
    summary: str = SUMMARY


def prompt_message(prompt_id: int = 12, recipient: str | None = "gp-riv-pm-bell") -> Message:
    built = build_prompt_message(
        FakeReferral(),
        prompt_id,
        due_at=NOW,
        respond_by=RESPOND_BY,
        tz=LONDON,
        via="manager",
        target="team:gp-riverside",
    )
    return Message(
        built["text"],
        built["blocks"],
        prompt_tag("HO-K7M3QX", prompt_id),
        recipient=recipient,
        respond_by=RESPOND_BY,
    )


def channel_for(relay_url: str, **kwargs) -> EmailChannel:
    return EmailChannel(
        parse_smtp_url(relay_url),
        mail_from="Handover <handover@wexcombe.example>",
        links=ResponseLinks(SECRET, PUBLIC_URL),
        clock=FixedClock(NOW),
        tz=LONDON,
        name_of={"U0HVKPAT01": "Kiran Patel"}.get,
        timeout=5,
        **kwargs,
    )


@pytest.fixture
def relay() -> Iterator[MailStandIn]:
    with MailStandIn() as relay:
        yield relay


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    return make_certificate(tmp_path_factory.mktemp("tls"))


# ----- what an email says ------------------------------------------------------------------------


def test_a_prompt_email_says_what_the_slack_prompt_says_and_links_each_answer(
    relay: MailStandIn,
) -> None:
    sent = channel_for(relay.url).send(TO, prompt_message())
    assert sent.conversation == TO
    assert sent.ts == "<outbox-12.HO-K7M3QX@handover.wexcombe.example>"
    [mail] = relay.messages()
    assert mail.rcpt_tos == (TO,) and mail.mail_from == "handover@wexcombe.example"
    email = mail.email
    # The subject is the lock-screen text: the referral ID and nothing else about the case.
    assert email["Subject"] == "Handover referral HO-K7M3QX: please respond"
    assert email["Message-ID"] == sent.ts
    assert email["From"] == "Handover <handover@wexcombe.example>"
    assert email["Auto-Submitted"] == "auto-generated"
    assert email["Date"] == "Tue, 29 Dec 2026 08:00:00 +0000"
    text = mail.body("plain")
    for line in (
        "Do you hold information about this child or family?",
        "Please respond by Tue 29 Dec 2026 18:30 GMT.",
        "Case reference: WXC-2026-004187",
        "Category: Domestic abuse",
        "Urgency: URGENT",
        "You receive this as team manager for team:gp-riverside.",
        "These links are for you alone and work until Tue 5 Jan 2027 18:30 GMT.",
    ):
        assert line in text
    html = mail.body("html")
    assert '<html lang="en-GB">' in html
    assert '<th scope="row"' in html and "WXC-2026-004187" in html
    links = ResponseLinks(SECRET, PUBLIC_URL)
    urls = [line for line in text.splitlines() if line.startswith(f"{PUBLIC_URL}/respond/")]
    claims = [links.read(url.rsplit("/", 1)[1], NOW) for url in urls]
    assert claims == [
        LinkClaim(12, "gp-riv-pm-bell", answer, RESPOND_BY + timedelta(days=7))
        for answer in ResponseKind
    ]
    for url in urls:
        assert f'href="{url}"' in html
    assert SUMMARY not in email.as_string()


def test_a_reminder_is_filed_under_its_prompt_and_names_colleagues_not_slack_ids(
    relay: MailStandIn,
) -> None:
    built = build_escalation_message(
        FakeReferral(),
        12,
        target="person:hv-jsmith",
        asked="<@U0HVKPAT01>",
        sent_at=NOW,
        respond_by=RESPOND_BY,
        via="manager",
        tz=LONDON,
    )
    message = Message(
        built["text"],
        built["blocks"],
        escalation_tag("HO-K7M3QX", 12, 40, "escalate"),
        recipient="hv-mgr-lee",
        respond_by=RESPOND_BY,
    )
    sent = channel_for(relay.url).send(TO, message)
    email = relay.messages()[0].email
    assert sent.ts == "<outbox-40.HO-K7M3QX@handover.wexcombe.example>"
    assert (
        email["In-Reply-To"]
        == email["References"]
        == ("<outbox-12.HO-K7M3QX@handover.wexcombe.example>")
    )
    text = relay.messages()[0].body()
    assert "Kiran Patel was asked for person:hv-jsmith" in text
    assert "U0HVKPAT01" not in email.as_string()


def test_without_a_recipient_no_link_is_made_and_the_buttons_are_named_as_slack_only(
    relay: MailStandIn,
) -> None:
    channel_for(relay.url).send(TO, prompt_message(recipient=None))
    text = relay.messages()[0].body()
    assert "/respond/" not in text
    assert (
        "In Slack you can also: Acknowledge, I hold information, Not known to us, "
        "Someone else holds it." in text
    )


# ----- TLS and AUTH ------------------------------------------------------------------------------


def test_starttls_with_login(certificate: Certificate) -> None:
    with MailStandIn(starttls=certificate.server_context(), login=("handover", "p@ss/w")) as relay:
        assert relay.url.startswith("smtp://handover:p%40ss%2Fw@127.0.0.1:")
        channel_for(relay.url, ssl_context=certificate.client_context()).send(TO, prompt_message())
        assert len(relay.messages()) == 1


def test_implicit_tls(certificate: Certificate) -> None:
    with MailStandIn(implicit_tls=certificate.server_context()) as relay:
        assert relay.url.startswith("smtps://")
        channel_for(relay.url, ssl_context=certificate.client_context()).send(TO, prompt_message())
        assert len(relay.messages()) == 1


def test_a_certificate_not_trusted_is_refused(certificate: Certificate) -> None:
    with MailStandIn(starttls=certificate.server_context()) as relay:
        with pytest.raises(EmailCredentialsError) as refused:
            channel_for(relay.url).send(TO, prompt_message())  # default trust store
        assert refused.value.error == "tls"
        assert relay.messages() == []


def test_wrong_credentials_are_refused(certificate: Certificate) -> None:
    with MailStandIn(starttls=certificate.server_context(), login=("handover", "right")) as relay:
        url = relay.url.replace(":right@", ":wrong@")
        with pytest.raises(EmailCredentialsError) as refused:
            channel_for(url, ssl_context=certificate.client_context()).send(TO, prompt_message())
        assert refused.value.error == "smtp:535"


@dataclasses.dataclass(frozen=True)
class RemoteRelay(SmtpRelay):
    """A relay treated as on another machine (the test's is on 127.0.0.1)."""

    @property
    def loopback(self) -> bool:
        return False


def test_a_remote_relay_without_starttls_gets_no_email(relay: MailStandIn) -> None:
    remote = RemoteRelay("127.0.0.1", relay.port, implicit_tls=False)
    channel = channel_for(relay.url)
    channel.relay = remote
    with pytest.raises(EmailCredentialsError) as refused:
        channel.send(TO, prompt_message())
    assert refused.value.error == "no_starttls"
    assert relay.messages() == []


# ----- failures ----------------------------------------------------------------------------------


def test_a_refused_recipient_is_unreachable(relay: MailStandIn) -> None:
    relay.refuse(TO)
    with pytest.raises(EmailRecipientError) as refused:
        channel_for(relay.url).send(TO, prompt_message())
    assert refused.value.error == "smtp:550"
    assert relay.messages() == []


def test_a_deferral_is_transient_and_certainly_not_sent(relay: MailStandIn) -> None:
    relay.defer()
    with pytest.raises(EmailTransientError) as deferred:
        channel_for(relay.url).send(TO, prompt_message())
    assert (deferred.value.error, deferred.value.ambiguous) == ("smtp:451", False)
    assert relay.messages() == []


def test_a_connection_dropped_after_the_data_is_ambiguous(relay: MailStandIn) -> None:
    relay.drop_after_data()
    with pytest.raises(EmailTransientError) as dropped:
        channel_for(relay.url).send(TO, prompt_message())
    assert dropped.value.ambiguous is True
    # The relay has it; the sender could not know.
    [mail] = relay.messages()
    assert mail.dropped and mail.message_id == "<outbox-12.HO-K7M3QX@handover.wexcombe.example>"


def test_no_relay_listening_is_transient_and_unreachable(tmp_path: Path) -> None:
    with MailStandIn() as relay:
        url = relay.url
    with pytest.raises(EmailTransientError) as down:
        channel_for(url).send(TO, prompt_message())
    assert (down.value.ambiguous, down.value.unreachable) == (False, True)
    assert down.value.error.startswith("connection:")

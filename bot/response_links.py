"""Signed response links: the token of `{HANDOVER_PUBLIC_URL}/respond/{token}` and of its forms.

A link token binds one answer to one prompt for one person: the prompt's outbox row id, the
person's rota id, the answer the link is for, and the instant it expires (7 days after the
prompt's breach). itsdangerous signs it (HMAC-SHA256 over compact JSON); the key is derived from
SLACK_SIGNING_SECRET with a purpose of its own (itsdangerous's salt), so the link key is never
the key Slack signs with, and rotating the secret invalidates every link still out. Expiry is
checked against the service's clock (time is an argument), not against itsdangerous's own
timestamps. A signature that does not verify is *altered* when the payload is one of ours with a
changed field, and *forged* otherwise; both are refused the same way (docs/email.md).

A form token (CSRF) is signed with another purpose, names the link it was served for and when,
and is accepted for FORM_MAX_AGE.

A contact check (docs/closing-the-loop.md) is answered by the same links: the answer is then
`contact_made` or `contact_missed` and the id is the contact follow-up's, not an outbox row's.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from itsdangerous import BadData, BadSignature, URLSafeSerializer

from bot.delivery.kinds import ResponseKind

LINK_PURPOSE = "handover.respond.link"
FORM_PURPOSE = "handover.respond.form"
LINK_LIFETIME = timedelta(days=7)  # after the prompt's breach
FORM_MAX_AGE = timedelta(hours=12)  # a form left open overnight is served afresh
RESPOND_PATH = "/respond/"

Refusal = Literal["forged", "altered", "expired"]


class ContactAnswer(StrEnum):
    """The two answers of a contact check, as its Slack buttons record them."""

    MADE = "contact_made"
    MISSED = "contact_missed"


Answer = ResponseKind | ContactAnswer


@dataclass(frozen=True)
class LinkClaim:
    """What a link stands for: one answer to one prompt by one person, until it expires.

    For a contact check's answer (a ContactAnswer), `prompt_id` is the follow-up's id."""

    prompt_id: int
    person_id: str
    answer: Answer
    expires_at: datetime

    @property
    def is_contact(self) -> bool:
        """Whether the link answers a contact check rather than a prompt."""
        return isinstance(self.answer, ContactAnswer)


class LinkRefused(Exception):
    """A link that is not ours (forged), was changed (altered) or is out of date (expired)."""

    def __init__(self, reason: Refusal, claim: LinkClaim | None = None) -> None:
        super().__init__(reason)
        self.reason: Refusal = reason
        self.claim = claim  # known only for an expired link (its signature verified)


def link_expiry(respond_by: datetime | None, now: datetime) -> datetime:
    """When a link expires: 7 days after the breach it asks an answer by (or after now)."""
    return (respond_by or now) + LINK_LIFETIME


class ResponseLinks:
    """Makes and reads link and form tokens with keys derived from one secret."""

    def __init__(self, secret: str, public_url: str) -> None:
        if not secret:
            raise ValueError("response links need a secret (SLACK_SIGNING_SECRET)")
        kwargs: dict[str, Any] = {
            "signer_kwargs": {"key_derivation": "hmac", "digest_method": hashlib.sha256}
        }
        self._links = URLSafeSerializer(secret, salt=LINK_PURPOSE, **kwargs)
        self._forms = URLSafeSerializer(secret, salt=FORM_PURPOSE, **kwargs)
        self.public_url = public_url.rstrip("/")

    # ----- links ---------------------------------------------------------------------------

    def token(self, claim: LinkClaim) -> str:
        """The link token of a claim."""
        payload = {
            "p": claim.prompt_id,
            "u": claim.person_id,
            "a": str(claim.answer),
            "x": int(claim.expires_at.timestamp()),
        }
        return str(self._links.dumps(payload))

    def url(self, claim: LinkClaim) -> str:
        """The page of a claim: {HANDOVER_PUBLIC_URL}/respond/{token}."""
        return f"{self.public_url}{RESPOND_PATH}{self.token(claim)}"

    def read(self, token: str, now: datetime) -> LinkClaim:
        """The claim of a token; LinkRefused when it is forged, altered or expired."""
        try:
            payload = self._links.loads(token)
        except BadSignature as exc:
            raise LinkRefused("altered" if self._ours(exc.payload) else "forged") from None
        except BadData:
            raise LinkRefused("forged") from None
        claim = _claim(payload)
        if claim is None:
            # Signed by us yet not a claim: only a bug could make one; never honour it.
            raise LinkRefused("forged")
        if now >= claim.expires_at:
            raise LinkRefused("expired", claim)
        return claim

    def _ours(self, payload: bytes | None) -> bool:
        """Whether an unverified payload decodes to the shape of our claims (a changed link)."""
        if payload is None:
            return False
        try:
            return _claim(self._links.load_payload(payload)) is not None
        except BadData:
            return False

    # ----- forms -----------------------------------------------------------------------------

    def form_token(self, link_token: str, now: datetime) -> str:
        """The CSRF token of a form served for `link_token` at `now`."""
        return str(self._forms.dumps({"l": _digest(link_token), "i": int(now.timestamp())}))

    def form_token_ok(self, form_token: object, link_token: str, now: datetime) -> bool:
        """Whether a posted form token was served by us, for this link, within FORM_MAX_AGE."""
        if not isinstance(form_token, str) or not form_token:
            return False
        try:
            payload = self._forms.loads(form_token)
        except BadData:
            return False
        if not isinstance(payload, dict) or payload.get("l") != _digest(link_token):
            return False
        issued = payload.get("i")
        served = _instant(issued) if isinstance(issued, int) else None
        if served is None:
            return False
        return served - timedelta(minutes=5) <= now <= served + FORM_MAX_AGE


def _digest(link_token: str) -> str:
    return hashlib.sha256(link_token.encode()).hexdigest()[:32]


def _claim(payload: object) -> LinkClaim | None:
    if not isinstance(payload, dict) or set(payload) != {"p", "u", "a", "x"}:
        return None
    prompt_id, person_id, answer, expires = (payload[k] for k in ("p", "u", "a", "x"))
    if not isinstance(prompt_id, int) or isinstance(prompt_id, bool):
        return None
    if not isinstance(person_id, str) or not isinstance(expires, int):
        return None
    if not isinstance(answer, str):
        return None
    kind = _answer(answer)
    expires_at = _instant(expires)
    if kind is None or expires_at is None:
        return None
    return LinkClaim(prompt_id, person_id, kind, expires_at)


def _answer(value: str) -> Answer | None:
    if value in set(ResponseKind):
        return ResponseKind(value)
    if value in set(ContactAnswer):
        return ContactAnswer(value)
    return None


def _instant(seconds: int) -> datetime | None:
    """Unix seconds as an aware instant; None when out of range (a changed link may say so)."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None

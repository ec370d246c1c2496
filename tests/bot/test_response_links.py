"""Signed response links and form tokens: pure functions of a secret and an instant."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from itsdangerous import URLSafeSerializer

from bot.delivery.kinds import ResponseKind
from bot.response_links import LinkClaim, LinkRefused, ResponseLinks, link_expiry

NOW = datetime(2026, 12, 29, 8, 0, tzinfo=UTC)
CLAIM = LinkClaim(12, "gp-riv-pm-bell", ResponseKind.HAS_INFORMATION, NOW + timedelta(days=7))
LINKS = ResponseLinks("signing-secret-of-the-app", "https://handover.example.gov.uk/")


def reason(token: str, now: datetime = NOW) -> str:
    with pytest.raises(LinkRefused) as refused:
        LINKS.read(token, now)
    return refused.value.reason


def test_a_link_reads_back_as_its_claim_until_it_expires() -> None:
    token = LINKS.token(CLAIM)
    assert LINKS.url(CLAIM) == f"https://handover.example.gov.uk/respond/{token}"
    assert LINKS.read(token, NOW) == CLAIM
    assert LINKS.read(token, CLAIM.expires_at - timedelta(seconds=1)) == CLAIM
    with pytest.raises(LinkRefused) as expired:
        LINKS.read(token, CLAIM.expires_at)
    assert (expired.value.reason, expired.value.claim) == ("expired", CLAIM)


def test_links_expire_seven_days_after_the_breach() -> None:
    breach = datetime(2026, 12, 29, 18, 30, tzinfo=UTC)
    assert link_expiry(breach, NOW) == datetime(2027, 1, 5, 18, 30, tzinfo=UTC)
    assert link_expiry(None, NOW) == NOW + timedelta(days=7)


def test_forged_and_altered_links_are_told_apart_and_both_refused() -> None:
    token = LINKS.token(CLAIM)
    body, signature = token.split(".")
    serializer = URLSafeSerializer("any key")
    payload = serializer.load_payload(body.encode())
    for field, value in (
        ("p", 13),
        ("u", "gp-drshah"),
        ("a", "acknowledged"),
        ("x", int((NOW + timedelta(days=30)).timestamp())),
    ):
        changed = serializer.dump_payload({**payload, field: value}).decode()
        assert reason(f"{changed}.{signature}") == "altered"
    other_key = ResponseLinks("another-secret", "https://handover.example.gov.uk")
    assert reason(other_key.token(CLAIM)) == "altered"  # ours in shape, not signed by us
    for forged in ("", "abc", "a.b", token + "x", "eyJ4Ijox.nope", token.replace(".", "")):
        assert reason(forged) in ("forged", "altered")
    assert reason("not-a-token") == "forged"
    # Signed with our key but not a claim: never honoured.
    raw = URLSafeSerializer(
        "signing-secret-of-the-app",
        salt="handover.respond.link",
        signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256},
    ).dumps({"p": "12"})
    assert reason(str(raw)) == "forged"


def test_the_link_key_is_not_the_form_key() -> None:
    form = LINKS.form_token(LINKS.token(CLAIM), NOW)
    assert reason(form) in ("forged", "altered")


def test_a_form_token_belongs_to_its_link_and_lasts_twelve_hours() -> None:
    token = LINKS.token(CLAIM)
    form = LINKS.form_token(token, NOW)
    assert LINKS.form_token_ok(form, token, NOW)
    assert LINKS.form_token_ok(form, token, NOW + timedelta(hours=12))
    assert not LINKS.form_token_ok(form, token, NOW + timedelta(hours=12, seconds=1))
    assert not LINKS.form_token_ok(
        form, LINKS.token(CLAIM.__class__(13, *list(vars(CLAIM).values())[1:])), NOW
    )
    for bad in (None, "", "x", 7, LINKS.token(CLAIM)):
        assert not LINKS.form_token_ok(bad, token, NOW)

"""Helpers that build the bot's rows directly, not yet added: a referral and its targets (as
tests/rota/factories.py does the rota's rows)."""

from __future__ import annotations

from datetime import datetime

from bot.models import Referral, ReferralStatus, Target


def new_referral(referral_id: str, received_at: datetime, **fields: object) -> Referral:
    """An open referral by edt-amy through the API, referred when it was received, planned on
    rota version 1; `fields` set any other column (its summary is "never sent" unless given)."""
    defaults: dict[str, object] = {
        "external_ref": f"LCS-{referral_id[3:]}",
        "category": "domestic_abuse",
        "urgency": "standard",
        "referred_at": received_at,
        "referrer_id": "edt-amy",
        "summary": "never sent",
        "source": "api",
        "request_hash": "0" * 64,
        "rota_version": 1,
        "plan_json": "{}",
        "status": ReferralStatus.OPEN,
    }
    return Referral(referral_id=referral_id, received_at=received_at, **{**defaults, **fields})


def new_target(
    referral_id: str, spec: str, recipient: str, due_at: datetime | None, **fields: object
) -> Target:
    """A held target, first in its referral, planned for `recipient` itself (`self`); `fields`
    set any other column."""
    defaults: dict[str, object] = {"position": 0, "planned_via": "self", "state": "held"}
    return Target(
        referral_id=referral_id,
        spec=spec,
        planned_recipient=recipient,
        due_at=due_at,
        **{**defaults, **fields},
    )

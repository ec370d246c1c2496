"""The single writer of the append-only audit log (docs/reference/audit-events.md)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from bot.models import AUDIT_EVENTS, AuditEvent


def record(
    session: Session,
    event: str,
    *,
    at: datetime,
    referral_id: str | None = None,
    actor: str | None = None,
    recipient: str | None = None,
    target: str | None = None,
    detail: dict[str, Any] | str | None = None,
    rota_version: int | None = None,
) -> AuditEvent:
    """Append one event to the audit log in `session`'s transaction and return it."""
    if event not in AUDIT_EVENTS:
        raise ValueError(f"unknown audit event {event!r}")
    if at.tzinfo is None:
        raise ValueError("audit events need an aware time")
    if isinstance(detail, dict):
        detail = json.dumps(detail, ensure_ascii=False)
    row = AuditEvent(
        at=at,
        referral_id=referral_id,
        event=event,
        actor=actor,
        recipient=recipient,
        target=target,
        detail=detail,
        rota_version=rota_version,
    )
    session.add(row)
    return row

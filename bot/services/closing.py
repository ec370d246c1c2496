"""Closing a referral (`/handover close`): the referral is closed once, and what it still owes
is cancelled — its unsent messages, and the targets still waiting to be asked or to answer.

Functions here take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, TargetState
from bot.models import OutboxMessage, Referral, ReferralStatus, Target
from bot.services import audit
from bot.services.directory import person_for_slack_user
from bot.services.visibility import scope_of
from bot.settings import Settings
from rota.models import Person
from rota.store import RotaStore

# Target states a close cancels (the target was still waiting to be asked or to answer).
WAITING_STATES = (TargetState.HELD, TargetState.PROMPTED, TargetState.ESCALATED, TargetState.FAILED)

MAX_CLOSE_REASON = 500
CLOSE_PERMISSIONS = ("referrer", "manager", "oversight")

CloseStatus = Literal[
    "closed", "usage", "forbidden", "missing_reason", "not_found", "already_closed"
]


@dataclass(frozen=True)
class CloseOutcome:
    """What `/handover close` came to."""

    status: CloseStatus
    referral_id: str | None = None
    closed_by: str | None = None
    closed_at: datetime | None = None
    reason: str = ""
    cancelled_rows: int = 0
    cancelled_prompts: int = 0
    cancelled_targets: int = 0


def may_close(session: Session, person: Person, referral: Referral) -> bool:
    """Its referrer, a manager of a team it concerns, or oversight (need to know)."""
    if person.person_id == referral.referrer_id or person.has_permission("oversight"):
        return True
    if not person.has_permission("manager"):
        return False
    return scope_of(session, person).allows(session, referral.referral_id)


def _cancelled_prompt_detail(row: OutboxMessage) -> dict[str, Any]:
    """A prompt cancelled by a close; one a dispatcher held in its batch is marked `in_batch`
    (it is not sent, unless its send had already begun: docs/timing.md, "Cancelled in a batch")."""
    detail: dict[str, Any] = {"prompt_id": row.id, "reason": "referral closed"}
    if outbox.dispatch_state(row).get("cancelled_while_claimed"):
        detail["in_batch"] = True
    return detail


def close_referral(
    session: Session,
    referral_id: str | None,
    slack_user_id: str,
    reason: str,
    *,
    now: datetime,
    settings: Settings,
    workspace: str | None = None,
) -> CloseOutcome:
    """Close an open referral and cancel what it still owes (referrers and managers only)."""
    if not referral_id:
        return CloseOutcome("usage")
    referral_id = referral_id.strip().upper()
    person = person_for_slack_user(session, slack_user_id, workspace)
    if person is None or not any(person.has_permission(p) for p in CLOSE_PERMISSIONS):
        return CloseOutcome("forbidden", referral_id)
    reason = " ".join(reason.split())
    if not reason:
        return CloseOutcome("missing_reason", referral_id)
    if len(reason) > MAX_CLOSE_REASON:
        reason = reason[:MAX_CLOSE_REASON]
    referral = session.get(Referral, referral_id)
    if referral is None:
        return CloseOutcome("not_found", referral_id)
    if not may_close(session, person, referral):
        return CloseOutcome("forbidden", referral_id)
    closed = session.execute(
        update(Referral)
        .where(Referral.referral_id == referral_id, Referral.status == ReferralStatus.OPEN)
        .values(
            status=ReferralStatus.CLOSED,
            closed_at=now,
            closed_by=person.person_id,
            close_reason=reason,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if closed != 1:
        return CloseOutcome("already_closed", referral_id)
    session.refresh(referral)
    version = RotaStore(session).current_rota_version()

    pending = outbox.cancel_owed_by(session, referral_id)
    targets = {
        t.id: t for t in session.scalars(select(Target).where(Target.referral_id == referral_id))
    }
    cancelled_prompts = 0
    for row in pending:
        if row.kind != OutboxKind.PROMPT:
            continue
        cancelled_prompts += 1
        target = targets.get(row.target_id) if row.target_id is not None else None
        audit.record(
            session,
            "prompt_cancelled",
            at=now,
            referral_id=referral_id,
            actor=person.person_id,
            recipient=row.recipient_id or (target.planned_recipient if target else None),
            target=target.spec if target else None,
            detail=_cancelled_prompt_detail(row),
            rota_version=version,
        )
    cancelled_targets = session.execute(
        update(Target)
        .where(Target.referral_id == referral_id, Target.state.in_(WAITING_STATES))
        .values(state=TargetState.CANCELLED)
        .execution_options(synchronize_session=False)
    ).rowcount
    audit.record(
        session,
        "referral_closed",
        at=now,
        referral_id=referral_id,
        actor=person.person_id,
        # The reason is free text a person typed: it is kept with the referral (and erased by
        # retention), never in the log, whose rows can never be erased (docs/security.md).
        detail={
            "cancelled_outbox_rows": len(pending),
            "cancelled_prompts": cancelled_prompts,
        },
        rota_version=version,
    )
    outbox.enqueue_card_refresh(session, referral_id, now)
    session.flush()
    return CloseOutcome(
        "closed",
        referral_id,
        closed_by=person.person_id,
        closed_at=now,
        reason=reason,
        cancelled_rows=len(pending),
        cancelled_prompts=cancelled_prompts,
        cancelled_targets=cancelled_targets,
    )

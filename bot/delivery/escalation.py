"""Escalation steps on the outbox: scheduling them, whom they reach, and what the log says.

A sent prompt nobody answers is chased in its recipient's working time (docs/timing.md): a
reminder, an escalation to the rest of the chain and the team manager, a post in the
escalation channel, and a breach. Each step is an outbox row of kind `escalation`, due at its
own instant, so claiming and restart safety apply to it as to any row; `rota.escalation.decide`
says which step falls when. When a step row falls due, `compose.escalation` turns it into one
`step_message` row per message, each delivered like any other row (its own claim, its own
history check); this module writes the step's audit events as those messages settle, so the log
reads as it always has: one `reminder_sent`, one `escalated` per person with whether it reached
them, one `escalated_channel`, and one `breach` naming everyone it notified.

Functions here take a session and never commit.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.delivery import outbox
from bot.delivery.kinds import (
    ACTOR,
    ANSWERED_TARGET_STATES,
    UNANSWERED_TARGET_STATES,
    OutboxKind,
    RowState,
    TargetState,
)
from bot.delivery.reads import store_of, target_of
from bot.models import OutboxMessage, Referral, ReferralStatus, Target
from bot.services import audit
from bot.settings import Settings
from handlers.blocks.escalation import recipient_label
from rota.escalation import (
    BREACH,
    ESCALATE,
    ESCALATE_CHANNEL,
    REMIND,
    EscalationState,
    decide,
)
from rota.models import Team
from rota.plan import TargetError
from rota.planner import chain_for, is_at_work
from rota.store import RotaStore
from rota.worktime import working_time_for

logger = logging.getLogger(__name__)

STEP_EVENTS = {
    REMIND: "reminder_sent",
    ESCALATE: "escalated",
    ESCALATE_CHANNEL: "escalated_channel",
    BREACH: "breach",
}
NOT_SENT = {"delivered": False, "error": "no channel to post in"}
_SETTLED = (RowState.SENT, RowState.FAILED, RowState.CANCELLED)


# ----- a prompt's steps -------------------------------------------------------------------------


def _rows_naming(
    session: Session,
    kind: OutboxKind,
    target_id: int | None,
    key: str,
    row_id: int,
    *,
    fresh: bool = False,
) -> list[OutboxMessage]:
    """The target's rows of `kind` whose detail names `row_id` under `key`, oldest first
    (`fresh`: as committed now, not as this session last read them)."""
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == kind, OutboxMessage.target_id == target_id)
        .order_by(OutboxMessage.id)
        .execution_options(populate_existing=fresh)
    )
    return [r for r in rows if outbox.load_detail(r).get(key) == row_id]


def escalation_rows(session: Session, prompt: OutboxMessage) -> list[OutboxMessage]:
    """The escalation step rows of one sent prompt, oldest first."""
    return _rows_naming(session, OutboxKind.ESCALATION, prompt.target_id, "prompt_id", prompt.id)


def performed_steps(session: Session, prompt: OutboxMessage) -> set[str]:
    """The steps of a prompt already performed."""
    return {
        str(outbox.load_detail(r).get("step"))
        for r in escalation_rows(session, prompt)
        if r.state == RowState.SENT
    }


def escalation_state(
    prompt: OutboxMessage, target: Target, referral: Referral, done: frozenset[str]
) -> EscalationState:
    """What `rota.escalation.decide` needs to know of a sent prompt."""
    assert prompt.sent_at is not None
    return EscalationState(
        sent_at=prompt.sent_at,
        done=done,
        responded=target.state in ANSWERED_TARGET_STATES,
        referral_closed=referral.status == ReferralStatus.CLOSED,
        # Cancelled (or anything else no longer waiting for an answer): nothing more to chase.
        target_cancelled=(
            target.state not in UNANSWERED_TARGET_STATES
            and target.state not in ANSWERED_TARGET_STATES
        ),
    )


def schedule_next_step(
    session: Session,
    prompt: OutboxMessage,
    target: Target,
    referral: Referral,
    done: frozenset[str],
    *,
    now: datetime,
    settings: Settings,
    save: bool = True,
) -> OutboxMessage | None:
    """The row of the prompt's next step after `done`, at its own instant even when that is
    already past (catch-up: it is performed at once, marked late); None when nothing follows
    (`save=False`: not yet inserted, for `outbox.insert_rows`)."""
    store = store_of(session)
    working_time = working_time_for(store, prompt.recipient_id, target.spec, settings.timezone)
    state = escalation_state(prompt, target, referral, done)
    upcoming = decide(
        state, now=now, working_time=working_time, policy=settings.policy_for(referral.urgency)
    )
    if upcoming.action == "stop" or upcoming.step is None or upcoming.due_at is None:
        return None
    return outbox.enqueue_escalation_step(
        session, prompt, upcoming.step, upcoming.due_at, save=save
    )


def schedule_escalation(
    session: Session, prompt: OutboxMessage, *, now: datetime, settings: Settings
) -> OutboxMessage | None:
    """Insert the first escalation step of a prompt just confirmed sent (idempotent).

    Returns the step's row (an existing one when called again), or None when nothing is to be
    escalated (the target already answered, the referral is closed).
    """
    existing = _escalation_rows_of(session, [prompt])
    if prompt.id in existing:
        return existing[prompt.id]
    return _first_step(session, prompt, now=now, settings=settings, save=True)


def schedule_escalations(
    session: Session, prompts: Sequence[tuple[OutboxMessage, datetime]], *, settings: Settings
) -> None:
    """`schedule_escalation` of each (prompt, instant it was sent) of a batch: their existing
    steps read in one statement, the new step rows inserted in one."""
    existing = _escalation_rows_of(session, [prompt for prompt, _ in prompts])
    new = [
        step
        for prompt, now in prompts
        if prompt.id not in existing
        and (step := _first_step(session, prompt, now=now, settings=settings, save=False))
    ]
    outbox.insert_rows(session, new)


def _first_step(
    session: Session, prompt: OutboxMessage, *, now: datetime, settings: Settings, save: bool
) -> OutboxMessage | None:
    if prompt.kind != OutboxKind.PROMPT:
        raise ValueError(f"only prompts escalate, not {prompt.kind!r} rows")
    if prompt.state != RowState.SENT or prompt.target_id is None:
        raise ValueError("escalation is scheduled only for a sent prompt of a target")
    target = session.get(Target, prompt.target_id)
    referral = session.get(Referral, prompt.referral_id)
    assert target is not None and referral is not None
    if prompt.sent_at is None:
        prompt.sent_at = now
    return schedule_next_step(
        session, prompt, target, referral, frozenset(), now=now, settings=settings, save=save
    )


def _escalation_rows_of(
    session: Session, prompts: Sequence[OutboxMessage]
) -> dict[int, OutboxMessage]:
    """The first escalation step row of each of these prompts that has one, by prompt id."""
    target_ids = sorted({p.target_id for p in prompts if p.target_id is not None})
    if not target_ids:
        return {}
    wanted = {p.id for p in prompts}
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.kind == OutboxKind.ESCALATION, OutboxMessage.target_id.in_(target_ids))
        .order_by(OutboxMessage.id)
    )
    first: dict[int, OutboxMessage] = {}
    for row in rows:
        prompt_id = outbox.load_detail(row).get("prompt_id")
        if prompt_id in wanted:
            first.setdefault(prompt_id, row)
    return first


def mark_escalated(
    session: Session, target: Target, referral: Referral, *, now: datetime, settings: Settings
) -> None:
    """The +120 step was performed: a target still only prompted is now `escalated`, which the
    card and the App Home show. Compare-and-set, so a response recorded meanwhile stands."""
    changed = session.execute(
        update(Target)
        .where(Target.id == target.id, Target.state == TargetState.PROMPTED)
        .values(state=TargetState.ESCALATED)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.refresh(target)
    if changed:
        outbox.redraw_card(session, referral, now, edt_channel=settings.edt_channel)


# ----- whom a step reaches ----------------------------------------------------------------------


def target_team(store: RotaStore, target: Target, recipient_id: str | None) -> Team | None:
    """The team whose manager answers for the target (the recipient's, for a role target)."""
    kind, _, ref = target.spec.partition(":")
    if kind == "team":
        return store.team(ref)
    person_id = ref if kind == "person" else recipient_id
    person = store.person(person_id) if person_id else None
    return store.team(person.team_id) if person is not None else None


def active_manager(store: RotaStore, team: Team | None) -> str | None:
    """The team's manager, while still in the rota."""
    if team is None or not team.manager_id:
        return None
    manager = store.person(team.manager_id)
    return manager.person_id if manager is not None and manager.active else None


def escalation_people(
    store: RotaStore, prompt: OutboxMessage, target: Target, now: datetime, tz: ZoneInfo
) -> list[tuple[str, str]]:
    """(person_id, via) for everyone the escalate step reaches, never the recipient: the people
    after the recipient in the target's chain who are at work now, in chain order, then the
    recipient's team manager whether at work or not.

    When the recipient is no longer in the chain (the rota changed since the prompt), everyone
    in the chain at work now. A team channel is never escalated to: the channel step is
    HANDOVER_ESCALATION_CHANNEL's.
    """
    recipient = prompt.recipient_id
    try:
        links = chain_for(store, target.spec, now)
    except TargetError:
        # The target left the rota since it was prompted; its managers are still told.
        logger.warning("escalation: target %s is no longer in the rota", target.spec)
        links = []
    position = next((i for i, link in enumerate(links) if link.recipient == recipient), None)
    # Whoever was asked before the recipient was passed over (on leave, off work): not them.
    after = links if position is None else links[position + 1 :]
    people: list[tuple[str, str]] = []
    seen = {recipient}
    for link in after:
        if link.via == "channel" or link.recipient in seen:
            continue
        if not is_at_work(store, link.recipient, now, tz):
            continue
        seen.add(link.recipient)
        people.append((link.recipient, link.via))
    recipient_person = store.person(recipient) if recipient else None
    if recipient_person is not None:
        manager = active_manager(store, store.team(recipient_person.team_id))
    else:
        # A team channel was asked: its team's manager answers for it.
        manager = active_manager(store, target_team(store, target, None))
    if manager is not None and manager not in seen:
        people.append((manager, "manager"))
    return people


def escalation_channel(settings: Settings) -> str | None:
    """HANDOVER_ESCALATION_CHANNEL, else (logged) the EDT channel, else None."""
    if settings.escalation_channel:
        return settings.escalation_channel
    if settings.edt_channel:
        logger.warning("HANDOVER_ESCALATION_CHANNEL is not set; escalating to the EDT channel")
        return settings.edt_channel
    logger.error("neither HANDOVER_ESCALATION_CHANNEL nor HANDOVER_EDT_CHANNEL is set")
    return None


def person_label(store: RotaStore, person_id: str) -> str:
    """A person as a Slack mention when known, else their rota id. Someone of a partner's own
    workspace is named by rota id: a mention does not resolve across workspaces."""
    person = store.person(person_id)
    if person is None:
        return recipient_label(person_id)
    team = store.team(person.team_id)
    at_home = team is None or team.workspace is None
    return recipient_label(person_id, person.slack_user_id if at_home else None)


# ----- what the log says ------------------------------------------------------------------------


def _log(
    session: Session,
    event: str,
    *,
    now: datetime,
    row: OutboxMessage,
    target: Target | None,
    recipient: str | None,
    detail: Mapping[str, Any],
) -> None:
    audit.record(
        session,
        event,
        at=now,
        referral_id=row.referral_id,
        actor=ACTOR,
        recipient=recipient,
        target=target.spec if target is not None else None,
        detail=dict(detail),
        rota_version=store_of(session).current_rota_version(),
    )


def step_detail(step_info: Mapping[str, Any]) -> dict[str, Any]:
    """What every event of a step names: the step, its instant, lateness, prompt and row."""
    return {
        "step": step_info["step"],
        "due_at": step_info["due_at"],
        "late": step_info["late"],
        "prompt_id": step_info["prompt_id"],
        "row_id": step_info["step_row_id"],
    }


def record_step_without_messages(
    session: Session,
    step_row: OutboxMessage,
    target: Target,
    step_info: Mapping[str, Any],
    *,
    now: datetime,
) -> None:
    """A step with nobody and nowhere to send to is logged at once, saying so."""
    step = step_info["step"]
    detail = step_detail(step_info)
    recipient = None
    if step == ESCALATE:
        detail.update(delivered=False, error="nobody else in the chain")
    elif step == BREACH:
        detail.update(notified=None, **NOT_SENT)
    else:
        detail.update(NOT_SENT)
        recipient = step_row.recipient_id if step == REMIND else None
    _log(
        session,
        STEP_EVENTS[step],
        now=now,
        row=step_row,
        target=target,
        recipient=recipient,
        detail=detail,
    )


def record_step_message(
    session: Session,
    row: OutboxMessage,
    *,
    delivered: bool,
    error: str | None,
    now: datetime,
    where: Mapping[str, Any] | None = None,
) -> None:
    """Log a step's message that was delivered or given up on (`where`: how a channel other
    than Slack describes it, e.g. `{"channel": "email", ...}`).

    Each reminder, escalation DM and channel post is its own event. A breach is one event for
    its channel post and manager DM together, written when the last of them settles: the step
    row is locked first, so two dispatchers settling the two messages write it once.
    """
    info = outbox.load_detail(row)
    target = target_of(session, row)
    outcome: dict[str, Any] = {
        "recipient": row.recipient_id or row.address,
        "via": info.get("via"),
        "delivered": delivered,
        **(where or {}),
    }
    if error:
        outcome["error"] = error
    if info.get("step") != BREACH:
        recipient = outcome.pop("recipient")
        _log(
            session,
            STEP_EVENTS[info["step"]],
            now=now,
            row=row,
            target=target,
            recipient=recipient,
            detail={**step_detail(info), **outcome},
        )
        return
    outbox.update_detail(row, outcome=outcome)
    step_row = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.id == info["step_row_id"])
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    messages = step_messages(session, step_row)
    if any(m.state not in _SETTLED for m in messages) or outbox.dispatch_state(step_row).get(
        "logged"
    ):
        return
    # In the order each outcome is written (the row's detail keeps its keys sorted).
    notified = [_in_order(outbox.load_detail(m).get("outcome") or {}) for m in messages]
    channel = next((o["recipient"] for o in notified if o.get("via") == "channel"), None)
    _log(
        session,
        STEP_EVENTS[BREACH],
        now=now,
        row=row,
        target=target,
        recipient=channel,
        detail={**step_detail(info), "notified": notified},
    )
    outbox.note(step_row, logged=True)


def _in_order(outcome: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("recipient", "via", "delivered", "error")
    ordered = {key: outcome[key] for key in keys if key in outcome}
    return {**ordered, **{k: v for k, v in outcome.items() if k not in keys}}


def step_messages(session: Session, step_row: OutboxMessage) -> list[OutboxMessage]:
    """The message rows a performed step became, in the order they were made."""
    return _rows_naming(
        session,
        OutboxKind.STEP_MESSAGE,
        step_row.target_id,
        "step_row_id",
        step_row.id,
        fresh=True,
    )

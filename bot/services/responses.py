"""Responses to prompts: the services behind a prompt's buttons, its modals and its email links.

Functions here take a session and never commit; the caller owns the transaction. Each returns a
value describing what happened, which the handler renders with pure builders.

A response is recorded once per target: the Target row's state moves out of its open states with
a conditional UPDATE, so a double click or two people at once (on PostgreSQL as on SQLite) leave
exactly one Response row, and the late clicker is told who answered first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import partial
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.channels.base import workspace_of_channel
from bot.delivery import outbox
from bot.delivery.kinds import RESPONSE_KINDS, OutboxKind, ResponseKind, TargetState
from bot.models import OutboxMessage, Referral, ReferralStatus, Response, Target
from bot.services import audit, loop
from bot.services.directory import person_for_slack_user
from bot.services.intake import planned_target, queue_target_alerts, schedule_target
from bot.services.logbook import ReferralFacts
from bot.services.visibility import managed_teams
from bot.settings import Settings
from rota.calendar import is_working_day
from rota.models import Person, Team
from rota.plan import TargetError
from rota.planner import chain_for, parse_target, plan_referral
from rota.store import RotaStore

# Target states after a response (each response kind is also the target's state).
RESPONDED_STATES = frozenset(RESPONSE_KINDS)
# A target in one of these states takes no further response.
FINAL_STATES = RESPONDED_STATES | {TargetState.CANCELLED}
# An acknowledgement only says the prompt was seen: whoever acknowledged may still say what
# they hold or that the family is not known, which is what coverage counts (docs/coverage.md).
AFTER_ACK = frozenset({ResponseKind.HAS_INFORMATION, ResponseKind.NOT_KNOWN})


def final_states_for(kind: str) -> frozenset[str]:
    """The target states in which a response of `kind` is no longer taken."""
    if kind in AFTER_ACK:
        return FINAL_STATES - {TargetState.ACKNOWLEDGED}
    return FINAL_STATES


CONTACT_METHODS = ("phone", "case_system")
SLACK_CHANNEL = "slack"  # an outbox row's channel whose messages show a response

CONTACT_SLOT_STEP = timedelta(hours=1)
CONTACT_SLOT_MARGIN = timedelta(minutes=15)
CONTACT_DAY_END = time(17, 0)
NEXT_DAY_SLOTS = (time(10, 0), time(12, 0), time(14, 0), time(16, 0))
CONTACT_HORIZON = timedelta(days=15)
_WORKING_DAY_SEARCH = 14
_POSITION_ATTEMPTS = 10

ResponseStatus = Literal[
    "allowed", "recorded", "refused", "already", "closed", "not_found", "invalid"
]


@dataclass(frozen=True)
class EarlierResponse:
    """The response that got there first."""

    kind: str
    responder_id: str
    on_behalf_of: str | None
    at: datetime


@dataclass(frozen=True)
class ResponseOutcome:
    """What a click or a modal submission came to, and what Slack should now show."""

    status: ResponseStatus
    kind: str  # the response asked for (one of RESPONSE_KINDS); recorded when status says so
    slack_user_id: str
    at: datetime
    responder_id: str | None = None
    responder_slack_id: str | None = None
    recipient_id: str | None = None
    on_behalf_of: str | None = None
    target: str | None = None
    referral: ReferralFacts | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    earlier: EarlierResponse | None = None
    # The bot's messages about this target, as (channel, ts, workspace: None for the home one),
    # to show the response on.
    messages: tuple[tuple[str, str, str | None], ...] = ()
    card: tuple[str, str] | None = None
    contact_slots: tuple[datetime, ...] = ()
    redirected_to: str | None = None
    field_errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Context:
    prompt: OutboxMessage
    target: Target
    referral: Referral
    person: Person | None
    recipient_id: str | None


def check_response(
    session: Session,
    prompt_id: int | None,
    slack_user_id: str,
    kind: str,
    *,
    now: datetime,
    settings: Settings,
    person_id: str | None = None,
    workspace: str | None = None,
) -> ResponseOutcome:
    """Whether this Slack user (or, from an email link, this person) may respond to the prompt
    now (logs a refusal), before a form."""
    context, outcome = _load(
        session,
        prompt_id,
        slack_user_id,
        kind,
        now=now,
        settings=settings,
        person_id=person_id,
        workspace=workspace,
    )
    if outcome is not None:
        return outcome
    assert context is not None
    slots: tuple[datetime, ...] = ()
    if kind == ResponseKind.HAS_INFORMATION and context.person is not None:
        slots = tuple(contact_slots(session, context.person, now, settings.timezone))
    return _outcome(context, "allowed", kind, slack_user_id, now, contact_slots=slots)


def record_response(
    session: Session,
    prompt_id: int | None,
    slack_user_id: str,
    kind: str,
    *,
    now: datetime,
    settings: Settings,
    contact_by: str | None = None,
    method: str | None = None,
    colleague: str | None = None,
    person_id: str | None = None,
    workspace: str | None = None,
) -> ResponseOutcome:
    """Record one response (`kind`, one of RESPONSE_KINDS) to a prompt's target, once, by
    someone allowed to give it: the Slack user who clicked, or the person an email link was
    made for (`person_id`; docs/email.md)."""
    if kind not in RESPONSE_KINDS:
        raise ValueError(f"unknown response kind {kind!r}")
    context, outcome = _load(
        session,
        prompt_id,
        slack_user_id,
        kind,
        now=now,
        settings=settings,
        person_id=person_id,
        workspace=workspace,
    )
    if outcome is not None:
        return outcome
    assert context is not None and context.person is not None
    target, referral, person = context.target, context.referral, context.person
    store = RotaStore(session)

    detail: dict[str, Any] = {"prompt_id": context.prompt.id}
    errors: dict[str, str] = {}
    when: datetime | None = None
    if kind == ResponseKind.HAS_INFORMATION:
        when, error = _parse_contact_by(contact_by, now)
        if error:
            errors["contact_by"] = error
        if not isinstance(method, str) or method not in CONTACT_METHODS:
            errors["method"] = "Choose how you will contact the social worker."
        if when is not None:
            detail["contact_by"] = when.astimezone(settings.timezone).isoformat()
        detail["method"] = method
    elif kind == ResponseKind.REDIRECTED:
        error = _colleague_error(session, store, context, colleague)
        if error:
            errors["colleague"] = error
        detail["to"] = f"person:{colleague}"
    if errors:
        return _outcome(context, "invalid", kind, slack_user_id, now, field_errors=errors)

    # The compare-and-set that makes a response count once, whoever clicks and however often.
    claimed = session.execute(
        update(Target)
        .where(Target.id == target.id, Target.state.not_in(sorted(final_states_for(kind))))
        .values(state=kind)
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != 1:
        session.refresh(target)
        return _outcome(
            context,
            "already",
            kind,
            slack_user_id,
            now,
            earlier=_earlier_response(session, target.id),
        )
    session.refresh(target)

    on_behalf_of = (
        context.recipient_id
        if context.recipient_id and context.recipient_id != person.person_id
        else None
    )
    version = store.current_rota_version()
    redirected_to: str | None = None
    if kind == ResponseKind.REDIRECTED:
        assert colleague is not None
        new_target = _add_redirect_target(
            session, store, context, colleague, now=now, settings=settings, version=version
        )
        redirected_to = new_target.spec
        detail["target_id"] = new_target.id
    if on_behalf_of:
        detail["on_behalf_of"] = on_behalf_of
    response = Response(
        referral_id=referral.referral_id,
        target_id=target.id,
        prompt_id=context.prompt.id,
        kind=kind,
        responder_id=person.person_id,
        on_behalf_of=on_behalf_of,
        at=now,
        detail=json.dumps(detail, sort_keys=True),
    )
    session.add(response)
    if kind == ResponseKind.HAS_INFORMATION:
        session.flush()
        assert when is not None and isinstance(method, str)
        followup = loop.record_offer(
            session,
            referral=referral,
            target=target,
            response=response,
            contact_by=when,
            method=method,
            now=now,
            settings=settings,
        )
        detail["followup_id"] = followup.id
    audit.record(
        session,
        kind,
        at=now,
        referral_id=referral.referral_id,
        actor=person.person_id,
        recipient=context.recipient_id,
        target=target.spec,
        detail=detail,
        rota_version=version,
    )
    outbox.cancel_chasers(session, target.id)
    outbox.enqueue_card_refresh(session, referral.referral_id, now)
    session.flush()
    return _outcome(
        context,
        "recorded",
        kind,
        slack_user_id,
        now,
        detail=detail,
        on_behalf_of=on_behalf_of,
        messages=_messages_of(session, target.id),
        redirected_to=redirected_to,
    )


def contact_slots(session: Session, person: Person, now: datetime, tz: ZoneInfo) -> list[datetime]:
    """Times someone holding information may promise to call by: today, then next working day."""
    team = session.get(Team, person.team_id)
    region = team.region if team is not None else "england"
    local_now = now.astimezone(tz)
    slots: list[datetime] = []
    day_end = datetime.combine(local_now.date(), CONTACT_DAY_END, tzinfo=tz)
    slot = local_now.replace(minute=0, second=0, microsecond=0) + CONTACT_SLOT_STEP
    while slot <= day_end:
        if slot - local_now >= CONTACT_SLOT_MARGIN:
            slots.append(slot)
        slot += CONTACT_SLOT_STEP
    next_day = _next_working_day(local_now.date(), region)
    slots.extend(datetime.combine(next_day, t, tzinfo=tz) for t in NEXT_DAY_SLOTS)
    return [s for s in slots if s > now]


def _next_working_day(day: date, region: str) -> date:
    candidate = day
    for _ in range(_WORKING_DAY_SEARCH):
        candidate += timedelta(days=1)
        if is_working_day(candidate, region):
            return candidate
    return day + timedelta(days=1)


def _parse_contact_by(value: object, now: datetime) -> tuple[datetime | None, str]:
    # `value` comes from a Slack payload: anything but a non-empty string is no choice.
    if not value or not isinstance(value, str):
        return None, "Choose when you will contact the social worker."
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None, "Choose one of the times offered."
    if when.tzinfo is None:
        return None, "Choose one of the times offered."
    if when <= now:
        return None, "That time has passed; choose a later one."
    if when > now + CONTACT_HORIZON:
        return None, "Choose a time within the next two weeks."
    return when, ""


def _load(
    session: Session,
    prompt_id: int | None,
    slack_user_id: str,
    kind: str,
    *,
    now: datetime,
    settings: Settings,
    person_id: str | None = None,
    workspace: str | None = None,
) -> tuple[_Context | None, ResponseOutcome | None]:
    """The prompt's context, or the outcome that ends the attempt (not found, refused, …)."""
    prompt = session.get(OutboxMessage, prompt_id) if prompt_id is not None else None
    target = session.get(Target, prompt.target_id) if prompt and prompt.target_id else None
    if prompt is None or target is None:
        return None, ResponseOutcome("not_found", kind, slack_user_id, now)
    referral = session.get(Referral, target.referral_id)
    assert referral is not None
    if person_id is not None:
        # An email link: the person it was made for, while still in the rota.
        found = session.get(Person, person_id)
        person = found if found is not None and found.active else None
    else:
        person = person_for_slack_user(session, slack_user_id, workspace)
    context = _Context(prompt, target, referral, person, _recipient_of(session, prompt, target))
    store = RotaStore(session)
    if person is None or not _may_respond(store, context, person, now):
        audit.record(
            session,
            "response_refused",
            at=now,
            referral_id=referral.referral_id,
            actor=person.person_id if person is not None else (person_id or slack_user_id),
            recipient=context.recipient_id,
            target=target.spec,
            detail={
                "response": kind,
                "prompt_id": prompt.id,
                **(
                    {"via": "email link"}
                    if person_id
                    else {
                        "slack_user": slack_user_id,
                        **({"workspace": workspace} if workspace else {}),
                    }
                ),
                "in_rota": person is not None,
            },
            rota_version=store.current_rota_version(),
        )
        reason = (
            "You are not in the Handover rota."
            if person is None
            else "Only the person asked, their cover, duty holder and team manager, or a "
            "manager of their team, may respond to this prompt."
        )
        return None, _outcome(context, "refused", kind, slack_user_id, now, reason=reason)
    if referral.status != ReferralStatus.OPEN:
        return None, _outcome(context, "closed", kind, slack_user_id, now)
    if target.state in final_states_for(kind):
        earlier = _earlier_response(session, target.id)
        return None, _outcome(context, "already", kind, slack_user_id, now, earlier=earlier)
    return context, None


def _recipient_of(session: Session, prompt: OutboxMessage, target: Target) -> str | None:
    """Whom the target's prompt went to: the clicked prompt's recipient, else the sent prompt's."""
    if prompt.kind == OutboxKind.PROMPT and prompt.recipient_id:
        return prompt.recipient_id
    sent = session.scalars(
        select(OutboxMessage.recipient_id)
        .where(
            OutboxMessage.target_id == target.id,
            OutboxMessage.kind == OutboxKind.PROMPT,
            OutboxMessage.recipient_id.is_not(None),
        )
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    ).first()
    return sent or target.planned_recipient


def _may_respond(store: RotaStore, context: _Context, person: Person, now: datetime) -> bool:
    """The recipient, anyone in the target's chain, or a manager of the target's team: one with
    the `manager` permission whose own team it is or who is named as its manager
    (docs/reference/rota-files.md, `permissions`)."""
    pid = person.person_id
    if pid == context.recipient_id:
        return True
    try:
        chain = chain_for(store, context.target.spec, now)
        kind, ref = parse_target(context.target.spec)
    except TargetError:
        # The target's person or team has since left the rota: only the recipient remains.
        chain, kind, ref = [], "", ""
    if any(link.recipient == pid for link in chain):
        return True
    if not person.has_permission("manager"):
        return False
    teams: set[str] = set()
    if kind == "team":
        teams.add(ref)
    elif kind == "person":
        named = store.person(ref)
        if named is not None:
            teams.add(named.team_id)
    else:
        # A role's team is the team of whoever holds (or held, when prompted) the shift.
        holders = [link.recipient for link in chain if link.via == "shift"]
        holders += [context.recipient_id] if context.recipient_id else []
        teams.update(p.team_id for p in store.people_by_ids(holders).values())
    return not managed_teams(store.session, person).isdisjoint(teams)


def _earlier_response(session: Session, target_id: int) -> EarlierResponse | None:
    row = session.scalars(
        select(Response).where(Response.target_id == target_id).order_by(Response.id).limit(1)
    ).first()
    if row is None:
        return None
    return EarlierResponse(row.kind, row.responder_id, row.on_behalf_of, row.at)


def _messages_of(session: Session, target_id: int) -> tuple[tuple[str, str, str | None], ...]:
    rows = session.execute(
        select(OutboxMessage.message_channel, OutboxMessage.message_ts, OutboxMessage.channel)
        .where(
            OutboxMessage.target_id == target_id,
            # The prompt and its escalation steps' messages (older versions kept a step's first
            # message on the step's row); alerts to the on-call stay as they are.
            OutboxMessage.kind.in_(
                (OutboxKind.PROMPT, OutboxKind.ESCALATION, OutboxKind.STEP_MESSAGE)
            ),
            OutboxMessage.message_channel.is_not(None),
            OutboxMessage.message_ts.is_not(None),
            # Slack's messages: an email cannot be changed once sent.
            or_(
                OutboxMessage.channel.is_(None),
                OutboxMessage.channel == SLACK_CHANNEL,
                OutboxMessage.channel.startswith(f"{SLACK_CHANNEL}:"),  # a partner's Slack
            ),
        )
        .order_by(OutboxMessage.id)
    ).all()
    return tuple(
        dict.fromkeys((str(c), str(ts), workspace_of_channel(name)) for c, ts, name in rows)
    )


def _colleague_error(
    session: Session, store: RotaStore, context: _Context, colleague: object
) -> str:
    # `colleague` comes from a Slack payload: anything but a non-empty string is no choice.
    if not colleague or not isinstance(colleague, str):
        return "Choose the colleague who holds the information."
    person = store.person(colleague)
    if person is None or not person.active:
        return "Choose someone in the current rota."
    if colleague == context.recipient_id:
        return "Choose someone other than the person already asked."
    asked = session.scalar(
        select(func.count())
        .select_from(Target)
        .where(
            Target.referral_id == context.referral.referral_id,
            Target.spec == f"person:{colleague}",
            Target.state.not_in(sorted(FINAL_STATES)),
        )
    )
    if asked:
        return f"{person.name} is already being asked about this referral."
    return ""


def _add_redirect_target(
    session: Session,
    store: RotaStore,
    context: _Context,
    colleague: str,
    *,
    now: datetime,
    settings: Settings,
    version: int,
) -> Target:
    """A new target for the colleague, planned like any other, with its own outbox rows."""
    tz = settings.timezone
    referral_id = context.referral.referral_id
    target_text = f"person:{colleague}"
    plan = plan_referral(store, [target_text], now, alert_roles=settings.alert_roles, tz=tz)
    entry = plan.entries[0]
    new = planned_target(referral_id, entry, redirected_from_id=context.target.id)
    position = (
        session.scalar(select(func.max(Target.position)).where(Target.referral_id == referral_id))
        or 0
    )
    for attempt in range(_POSITION_ATTEMPTS):
        # Another redirect of this referral may take the next position concurrently.
        new.position = position + 1 + attempt
        try:
            with session.begin_nested():
                session.add(new)
                session.flush()
            break
        except IntegrityError:
            if attempt == _POSITION_ATTEMPTS - 1:
                raise

    log = partial(
        audit.record,
        session,
        at=now,
        referral_id=referral_id,
        actor=context.person.person_id if context.person else None,
        rota_version=version,
    )
    # As at intake: the on-call holders (de-duplicated by the plan) hear of a long gap or an
    # unroutable colleague, one event and one alert each; the referral itself is not news.
    alerts = [a for a in plan.alerts if a.target == target_text]
    schedule_target(
        session,
        new,
        entry,
        alerts,
        log=log,
        t0=plan.at,
        tz=tz,
        redirected_from=context.target.spec,
    )
    queue_target_alerts(session, referral_id, alerts, {target_text: new}, now=now)
    return new


def _outcome(
    context: _Context,
    status: ResponseStatus,
    kind: str,
    slack_user_id: str,
    now: datetime,
    **fields: Any,
) -> ResponseOutcome:
    person = context.person
    card = None
    if context.referral.card_channel and context.referral.card_ts:
        card = (context.referral.card_channel, context.referral.card_ts)
    return ResponseOutcome(
        status=status,
        kind=kind,
        slack_user_id=slack_user_id,
        at=now,
        responder_id=person.person_id if person is not None else None,
        responder_slack_id=slack_user_id,
        recipient_id=context.recipient_id,
        target=context.target.spec,
        referral=ReferralFacts.of(context.referral),
        card=card,
        **fields,
    )

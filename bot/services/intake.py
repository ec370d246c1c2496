"""Referral intake: the one service behind `POST /api/referrals` and the Slack referral modal.

Functions here take a session and never commit; the caller owns the transaction.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.delivery import outbox
from bot.delivery.kinds import OutboxKind, TargetState
from bot.models import (
    CATEGORIES,
    URGENCIES,
    AuditEvent,
    Referral,
    ReferralStatus,
    Target,
)
from bot.services import audit
from bot.services.coverage import coverage_for_referrals
from bot.services.logbook import detail_value
from bot.settings import Settings
from rota.plan import Alert, Plan, PlanEntry
from rota.planner import format_gap, plan_referral, validate_targets
from rota.store import RotaStore

SOURCE_API = "api"
SOURCE_SLACK = "slack"
SOURCES = (SOURCE_API, SOURCE_SLACK)

FIELDS = ("external_ref", "category", "urgency", "referred_at", "referrer", "notify", "summary")
REQUIRED_FIELDS = ("external_ref", "category", "urgency", "referrer", "notify")
EXTERNAL_REF_RE = re.compile(r"[A-Za-z0-9._:/-]{1,64}")
MAX_NOTIFY = 50
MAX_SUMMARY_CHARS = 10_000
MAX_TARGET_CHARS = 140
MAX_ID_CHARS = 64
FUTURE_TOLERANCE = timedelta(minutes=5)
# Earlier referral times are typing mistakes, and year-1 times cannot be shown in local time.
EARLIEST_REFERRED_AT = datetime(2000, 1, 1, tzinfo=UTC)
# A calendar date and a time of at least hours and minutes: not a date alone, nor a week date.
_DATE_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")

REFERRAL_ID_PREFIX = "HO-"
REFERRAL_ID_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
REFERRAL_ID_LENGTH = 6
_ID_ATTEMPTS = 20

Status = Literal["created", "duplicate", "conflict"]


# FieldError.code of a target named twice in the notify list
REPEATED_TARGET = "repeated_target"


@dataclass(frozen=True)
class FieldError:
    """What is wrong with one field of a referral request."""

    field: str  # "category", "notify[1]", …
    message: str
    code: str = ""  # a stable name for errors a surface words its own way (REPEATED_TARGET)

    def to_json(self) -> dict[str, str]:
        """As the API's 422 body lists it: {"field", "message"}."""
        return {"field": self.field, "message": self.message}


class InvalidReferral(ValueError):
    """The referral request has field errors; `errors` lists every one of them."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True)
class ReferralRequest:
    """A referral request, validated and normalized: what intake creates a referral from."""

    external_ref: str
    category: str
    urgency: str
    referred_at: datetime | None  # aware; None: not given, so the time of receipt
    referrer: str
    notify: tuple[str, ...]
    summary: str = ""

    def canonical(self) -> dict[str, Any]:
        """The normalized content compared for idempotency (summary included)."""
        return {
            "external_ref": self.external_ref,
            "category": self.category,
            "urgency": self.urgency,
            "referred_at": _utc_iso(self.referred_at) if self.referred_at else None,
            "referrer": self.referrer,
            "notify": list(self.notify),
            "summary": self.summary,
        }

    def request_hash(self) -> str:
        """sha256 of the canonical JSON of the normalized request."""
        text = json.dumps(
            self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class IntakeResult:
    """The referral a request came to, the API's body, and created, duplicate or conflict."""

    referral: Referral
    body: dict[str, Any]
    status: Status


def _utc_iso(instant: datetime) -> str:
    return instant.astimezone(UTC).isoformat()


def _local_iso(instant: datetime | None, tz: tzinfo) -> str | None:
    return instant.astimezone(tz).isoformat() if instant is not None else None


def _parse_fields(
    data: dict[str, Any], *, tz: tzinfo, now: datetime
) -> tuple[dict[str, Any], list[FieldError]]:
    """Check the shape of each field; return the values that passed and every error."""
    values: dict[str, Any] = {}
    errors: list[FieldError] = []

    for name in data:
        if name not in FIELDS:
            errors.append(FieldError(str(name), "unknown field"))
    for name in REQUIRED_FIELDS:
        if data.get(name) is None:
            errors.append(FieldError(name, "is required"))

    ref = data.get("external_ref")
    if ref is not None:
        if not isinstance(ref, str) or not EXTERNAL_REF_RE.fullmatch(ref):
            errors.append(
                FieldError(
                    "external_ref", "must be 1 to 64 of the characters A-Z a-z 0-9 . _ : / -"
                )
            )
        else:
            values["external_ref"] = ref

    category = data.get("category")
    if category is not None:
        if not isinstance(category, str) or category not in CATEGORIES:
            errors.append(FieldError("category", f"must be one of {', '.join(CATEGORIES)}"))
        else:
            values["category"] = category

    urgency = data.get("urgency")
    if urgency is not None:
        if not isinstance(urgency, str) or urgency not in URGENCIES:
            errors.append(FieldError("urgency", f"must be one of {', '.join(URGENCIES)}"))
        else:
            values["urgency"] = urgency

    referred_at = data.get("referred_at")
    values["referred_at"] = None
    if referred_at is not None:
        instant = _parse_instant(referred_at, tz)
        if instant is None:
            errors.append(
                FieldError("referred_at", "must be an ISO 8601 date-time, e.g. 2026-12-26T02:10")
            )
        elif instant < EARLIEST_REFERRED_AT:
            errors.append(FieldError("referred_at", "is before 2000-01-01"))
        elif instant > now + FUTURE_TOLERANCE:
            errors.append(FieldError("referred_at", "is in the future"))
        else:
            values["referred_at"] = instant

    referrer = data.get("referrer")
    if referrer is not None:
        if not _is_plain_text(referrer, MAX_ID_CHARS):
            errors.append(FieldError("referrer", "must be a person_id"))
        else:
            values["referrer"] = referrer.strip()

    notify = data.get("notify")
    if notify is not None:
        if not isinstance(notify, list):
            errors.append(FieldError("notify", "must be a list of targets"))
        elif not 1 <= len(notify) <= MAX_NOTIFY:
            errors.append(FieldError("notify", f"must have 1 to {MAX_NOTIFY} targets"))
        else:
            cleaned: list[str | None] = []
            for index, item in enumerate(notify):
                field_name = f"notify[{index}]"
                if not _is_plain_text(item, None):
                    errors.append(FieldError(field_name, "must be person:ID, team:ID or role:NAME"))
                    cleaned.append(None)
                elif len(item.strip()) > MAX_TARGET_CHARS:
                    errors.append(FieldError(field_name, f"is longer than {MAX_TARGET_CHARS}"))
                    cleaned.append(None)
                else:
                    cleaned.append(item.strip())
            errors += repeated_target_errors(cleaned)
            for index in repeated_targets(cleaned):
                cleaned[index] = None
            values["notify"] = cleaned

    summary = data.get("summary", "")
    if summary is None:
        summary = ""
    if not isinstance(summary, str):
        errors.append(FieldError("summary", "must be text"))
    elif "\x00" in summary:
        errors.append(FieldError("summary", "must not contain NUL characters"))
    elif len(summary) > MAX_SUMMARY_CHARS:
        errors.append(FieldError("summary", f"is longer than {MAX_SUMMARY_CHARS} characters"))
    else:
        values["summary"] = summary

    return values, _in_field_order(errors)


def repeated_targets(notify: Sequence[str | None]) -> dict[int, int]:
    """Each index whose target (compared stripped) an earlier entry names: that entry's index."""
    first_index: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for index, item in enumerate(notify):
        if item is None:
            continue
        first = first_index.setdefault(item.strip(), index)
        if first != index:
            repeats[index] = first
    return repeats


def repeated_target_errors(notify: Sequence[str | None]) -> list[FieldError]:
    """A `notify[i]` error for each target an earlier entry of `notify` already names."""
    return [
        FieldError(
            f"notify[{index}]",
            f"repeats notify[{first}] ({str(notify[index]).strip()})",
            REPEATED_TARGET,
        )
        for index, first in repeated_targets(notify).items()
    ]


def _parse_instant(value: Any, tz: tzinfo) -> datetime | None:
    """An ISO 8601 date and time as an instant in UTC (local to `tz` without an offset)."""
    if not isinstance(value, str) or not _DATE_TIME_RE.match(value.strip()):
        return None
    try:
        instant = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=tz)
    try:
        return instant.astimezone(UTC)
    except OverflowError:
        # Beyond datetime's range in UTC (0001-01-01T00:00+01:00, 9999-12-31T23:00-01:00):
        # the nearest end of the range, which the bounds on referred_at then refuse.
        if instant.year < 5000:
            return datetime.min.replace(tzinfo=UTC)
        return datetime.max.replace(tzinfo=UTC)


def _is_plain_text(value: Any, max_chars: int | None) -> bool:
    """A non-blank string without control characters (which the database may refuse)."""
    if not isinstance(value, str) or not value.strip():
        return False
    if max_chars is not None and len(value.strip()) > max_chars:
        return False
    return not any(ord(char) < 0x20 or ord(char) == 0x7F for char in value)


def _build_request(values: dict[str, Any]) -> ReferralRequest:
    return ReferralRequest(
        external_ref=values["external_ref"],
        category=values["category"],
        urgency=values["urgency"],
        referred_at=values["referred_at"],
        referrer=values["referrer"],
        notify=tuple(values["notify"]),
        summary=values["summary"],
    )


def parse_referral_request(data: dict[str, Any], *, tz: tzinfo, now: datetime) -> ReferralRequest:
    """Parse a referral's fields without the rota; raise InvalidReferral with every error."""
    if not isinstance(data, dict):
        raise InvalidReferral([FieldError("body", "must be a JSON object")])
    values, errors = _parse_fields(data, tz=tz, now=now)
    if errors:
        raise InvalidReferral(errors)
    return _build_request(values)


def check_against_rota(store: RotaStore, request: ReferralRequest) -> list[FieldError]:
    """Errors of the referrer and the notify targets against the current rota."""
    return _referrer_errors(store, request.referrer) + _notify_errors(store, list(request.notify))


def _referrer_errors(store: RotaStore, person_id: str) -> list[FieldError]:
    person = store.person(person_id)
    if person is None:
        return [FieldError("referrer", f"unknown person {person_id}")]
    if not person.active:
        return [FieldError("referrer", f"{person_id} is no longer in the rota")]
    if not person.has_permission("referrer"):
        return [FieldError("referrer", f"{person_id} does not have the referrer permission")]
    return []


def _notify_errors(store: RotaStore, notify: list[str | None]) -> list[FieldError]:
    indexed = [(index, target) for index, target in enumerate(notify) if target is not None]
    if not indexed:
        return []
    problems = validate_targets(store, [target for _, target in indexed])
    return [FieldError(f"notify[{indexed[i][0]}]", message) for i, message in problems]


def validate_referral(
    session: Session, data: dict[str, Any], *, tz: tzinfo, now: datetime
) -> ReferralRequest:
    """Parse and check a referral against the rota; raise InvalidReferral with every error.

    A request whose external_ref is already known is not checked against the rota again:
    it will be answered as a duplicate or a conflict of the referral already received.
    """
    if not isinstance(data, dict):
        raise InvalidReferral([FieldError("body", "must be a JSON object")])
    values, errors = _parse_fields(data, tz=tz, now=now)
    if "external_ref" in values and not errors and _find_referral(session, values["external_ref"]):
        return _build_request(values)
    store = RotaStore(session)
    if "referrer" in values:
        errors += _referrer_errors(store, values["referrer"])
    if "notify" in values:
        errors += _notify_errors(store, values["notify"])
    if errors:
        raise InvalidReferral(_in_field_order(errors))
    return _build_request(values)


def _in_field_order(errors: list[FieldError]) -> list[FieldError]:
    def key(error: FieldError) -> tuple[int, int]:
        base, _, rest = error.field.partition("[")
        position = FIELDS.index(base) if base in FIELDS else len(FIELDS)
        index = int(rest.rstrip("]")) if rest.rstrip("]").isdigit() else -1
        return position, index

    return sorted(errors, key=key)


def _find_referral(session: Session, external_ref: str) -> Referral | None:
    return session.scalars(select(Referral).where(Referral.external_ref == external_ref)).first()


def new_referral_id() -> str:
    """A fresh referral ID: HO- and 6 random Crockford base32 characters."""
    return REFERRAL_ID_PREFIX + "".join(
        secrets.choice(REFERRAL_ID_ALPHABET) for _ in range(REFERRAL_ID_LENGTH)
    )


def _unused_referral_id(session: Session) -> str:
    for _ in range(_ID_ATTEMPTS):
        candidate = new_referral_id()
        if session.get(Referral, candidate) is None:
            return candidate
    raise RuntimeError("no unused referral ID after repeated attempts")


def receive_referral(
    session: Session,
    request: ReferralRequest,
    *,
    now: datetime,
    settings: Settings,
    source: str = SOURCE_API,
) -> IntakeResult:
    """Record a referral, its targets, its outbox rows and audit events (or answer a repeat)."""
    if source not in SOURCES:
        raise ValueError(f"unknown referral source {source!r}")
    request_hash = request.request_hash()
    existing = _find_referral(session, request.external_ref)
    if existing is not None:
        return _answer_repeat(session, existing, request, request_hash, now=now, source=source)

    store = RotaStore(session)
    errors = check_against_rota(store, request)
    if errors:
        raise InvalidReferral(errors)
    tz = settings.timezone
    plan = plan_referral(store, list(request.notify), now, alert_roles=settings.alert_roles, tz=tz)
    plan_json = plan.to_json(tz)
    for _ in range(_ID_ATTEMPTS):
        referral_id = _unused_referral_id(session)
        body = {
            "referral_id": referral_id,
            "status": ReferralStatus.OPEN,
            "rota_version": plan.rota_version,
            "plan": plan_json["plan"],
            "alerts": plan_json["alerts"],
        }
        referral = Referral(
            referral_id=referral_id,
            external_ref=request.external_ref,
            category=request.category,
            urgency=request.urgency,
            referred_at=request.referred_at or now,
            received_at=now,
            referrer_id=request.referrer,
            summary=request.summary,
            source=source,
            request_hash=request_hash,
            rota_version=plan.rota_version,
            plan_json=json.dumps(body, ensure_ascii=False),
            status=ReferralStatus.OPEN,
        )
        try:
            # A savepoint, so a concurrent twin's unique external_ref leaves our
            # transaction usable for reading what the twin wrote.
            with session.begin_nested():
                session.add(referral)
                session.flush()
        except IntegrityError:
            existing = _find_referral(session, request.external_ref)
            if existing is not None:
                return _answer_repeat(
                    session, existing, request, request_hash, now=now, source=source
                )
            continue  # the referral ID was taken concurrently: draw another
        _write_plan(session, referral, request, plan, now=now, settings=settings)
        return IntakeResult(referral=referral, body=body, status="created")
    raise RuntimeError("could not store the referral after repeated attempts")


def _answer_repeat(
    session: Session,
    existing: Referral,
    request: ReferralRequest,
    request_hash: str,
    *,
    now: datetime,
    source: str,
) -> IntakeResult:
    if existing.request_hash != request_hash:
        body = {
            "error": "external_ref was already used for a referral with different content",
            "referral_id": existing.referral_id,
        }
        return IntakeResult(referral=existing, body=body, status="conflict")
    audit.record(
        session,
        "referral_duplicate",
        at=now,
        referral_id=existing.referral_id,
        actor=request.referrer,
        detail={"source": source, "external_ref": existing.external_ref},
        rota_version=existing.rota_version,
    )
    return IntakeResult(referral=existing, body=json.loads(existing.plan_json), status="duplicate")


def _write_plan(
    session: Session,
    referral: Referral,
    request: ReferralRequest,
    plan: Plan,
    *,
    now: datetime,
    settings: Settings,
) -> None:
    tz = settings.timezone
    referral_id = referral.referral_id
    log = partial(
        audit.record, session, at=now, referral_id=referral_id, rota_version=plan.rota_version
    )
    log(
        "referral_received",
        actor=request.referrer,
        detail={
            "source": referral.source,
            "external_ref": request.external_ref,
            "category": request.category,
            "urgency": request.urgency,
            "referred_at": _local_iso(referral.referred_at, tz),
            "targets": len(plan.entries),
        },
    )

    targets: dict[str, Target] = {}
    for position, entry in enumerate(plan.entries):
        target = planned_target(referral_id, entry, position=position)
        session.add(target)
        targets[entry.target] = target
    session.flush()

    outbox.enqueue_card(session, referral_id, now, settings.edt_channel)
    for alert in plan.alerts:
        if alert.kind == OutboxKind.ON_CALL:
            outbox.enqueue_alert(
                session,
                OutboxKind.ON_CALL,
                referral_id,
                due_at=now,
                recipient_id=alert.recipient,
                role=alert.target,
                detail=alert.detail,
            )

    for entry in plan.entries:
        schedule_target(
            session, targets[entry.target], entry, plan.alerts, log=log, t0=plan.at, tz=tz
        )
    queue_target_alerts(session, referral_id, plan.alerts, targets, now=now)
    session.flush()


def schedule_target(
    session: Session,
    target: Target,
    entry: PlanEntry,
    alerts: Sequence[Alert],
    *,
    log: Callable[..., object],
    t0: datetime,
    tz: tzinfo,
    **extra: Any,
) -> None:
    """Log an unroutable target, or schedule a routable one's prompt and log its long gap.

    A long gap is logged once per on-call holder told of it (the plan's alerts, holders already
    de-duplicated), so the log shows who knew. `extra` (e.g. `redirected_from`) goes into the
    unroutable event and into the prompt's row and event.
    """
    if target.state == TargetState.UNROUTABLE:
        reasons = [
            a.detail for a in alerts if a.kind == OutboxKind.UNROUTABLE and a.target == entry.target
        ]
        reason = reasons[0] if reasons else "nobody to reach within 7 days"
        log("unroutable", target=entry.target, detail={"reason": reason, **extra})
        return
    schedule_prompt(session, target, entry, log=log, tz=tz, **extra)
    for alert in alerts:
        if alert.kind == OutboxKind.LONG_GAP and alert.target == entry.target:
            log(
                "long_gap_alert",
                target=entry.target,
                recipient=alert.recipient,
                detail=_gap_detail(entry, t0, tz),
            )


def queue_target_alerts(
    session: Session,
    referral_id: str,
    alerts: Sequence[Alert],
    targets: Mapping[str, Target],
    *,
    now: datetime,
) -> None:
    """One outbox row for each long-gap or unroutable alert of the plan (one per on-call holder)."""
    for alert in alerts:
        if alert.kind in (OutboxKind.LONG_GAP, OutboxKind.UNROUTABLE):
            target = targets.get(alert.target)
            outbox.enqueue_alert(
                session,
                OutboxKind(alert.kind),
                referral_id,
                due_at=now,
                target_id=target.id if target is not None else None,
                recipient_id=alert.recipient,
                target=alert.target,
                detail=alert.detail,
            )


def planned_target(referral_id: str, entry: PlanEntry, **fields: Any) -> Target:
    """A target row for a plan entry: held until its prompt is due, or unroutable."""
    routable = entry.due_at is not None and entry.via != "unroutable"
    return Target(
        referral_id=referral_id,
        spec=entry.target,
        planned_via=entry.via,
        planned_recipient=entry.recipient,
        due_at=entry.due_at,
        state=TargetState.HELD if routable else TargetState.UNROUTABLE,
        **fields,
    )


def schedule_prompt(
    session: Session,
    target: Target,
    entry: PlanEntry,
    *,
    log: Callable[..., object],
    tz: tzinfo,
    **extra: Any,
) -> None:
    """Add a routable target's prompt to the outbox, due as planned, and log it scheduled.

    `extra` (e.g. `redirected_from`) goes into both the row's detail and the event's.
    """
    assert entry.due_at is not None
    outbox.enqueue_prompt(
        session,
        target,
        entry.due_at,
        planned_via=entry.via,
        planned_recipient=entry.recipient,
        **extra,
    )
    log(
        "prompt_scheduled",
        target=entry.target,
        recipient=entry.recipient,
        detail={
            "due_at": _local_iso(entry.due_at, tz),
            "via": entry.via,
            "immediate": entry.immediate,
            **extra,
        },
    )


def _gap_detail(entry: PlanEntry, t0: datetime, tz: tzinfo) -> dict[str, Any]:
    assert entry.due_at is not None
    gap = entry.due_at - t0
    return {
        "due_at": _local_iso(entry.due_at, tz),
        "gap_minutes": int(gap.total_seconds() // 60),
        "gap": format_gap(gap),
    }


def referral_detail(session: Session, referral_id: str, tz: tzinfo) -> dict[str, Any] | None:
    """The referral, its targets with their state and its audit events, for the case system."""
    referral = session.get(Referral, referral_id)
    if referral is None:
        return None
    targets = session.scalars(
        select(Target).where(Target.referral_id == referral_id).order_by(Target.position)
    ).all()
    events = session.scalars(
        select(AuditEvent)
        .where(AuditEvent.referral_id == referral_id)
        .order_by(AuditEvent.at, AuditEvent.id)
    ).all()
    # A breach leaves the target's state as it was (it may still be answered); its instant is
    # the first `breach` event naming it.
    breached_at: dict[str, datetime] = {}
    for event in events:
        if event.event == "breach" and event.target:
            breached_at.setdefault(event.target, event.at)
    return {
        "referral_id": referral.referral_id,
        "external_ref": referral.external_ref,
        "category": referral.category,
        "urgency": referral.urgency,
        "referred_at": _local_iso(referral.referred_at, tz),
        "received_at": _local_iso(referral.received_at, tz),
        "referrer": referral.referrer_id,
        "source": referral.source,
        # No summary: the case system that sent it holds it (docs/openapi.yaml, minimal data).
        "status": referral.status,
        "closed_at": _local_iso(referral.closed_at, tz),
        "closed_by": referral.closed_by,
        "close_reason": referral.close_reason,
        "purged_at": _local_iso(referral.purged_at, tz),
        "rota_version": referral.rota_version,
        "targets": [
            {
                "position": target.position,
                "target": target.spec,
                "state": target.state,
                "due_at": _local_iso(target.due_at, tz),
                "planned_recipient": target.planned_recipient,
                "planned_via": target.planned_via,
                "breached_at": _local_iso(breached_at.get(target.spec), tz),
            }
            for target in targets
        ],
        "events": [
            {
                "at": _local_iso(event.at, tz),
                "event": event.event,
                "actor": event.actor,
                "recipient": event.recipient,
                "target": event.target,
                "detail": detail_value(event.detail),
            }
            for event in events
        ],
        # The one rule of docs/coverage.md, as App Home and the report apply it.
        "coverage": coverage_for_referrals(session, [referral_id], tz)[referral_id].as_json(),
    }

"""`handover plan` and `handover rota who`: dry runs of the planner against the rota store."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import inspect
from sqlalchemy.orm import Session

from bot.clock import clock_from_env
from bot.db import BATCH_TIMEOUTS, create_db_engine, sqlite_path
from bot.errors import InputError, ServiceUnavailable
from bot.services.intake import repeated_targets
from bot.settings import Settings
from rota.calendar import local_instant
from rota.escalation import escalation_schedule, respond_by
from rota.plan import Plan
from rota.planner import plan_referral, validate_targets
from rota.store import RotaStore
from rota.worktime import working_time_for

EARLIEST_YEAR, LATEST_YEAR = 2000, 2999
_NOT_MIGRATED = "the database has no rota tables; run `handover db upgrade` and import a rota"


def text_argument(option: str, value: str) -> str:
    """`value` of `option`, refused when the terminal passed bytes that are not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # Python keeps undecodable argv bytes as lone surrogates; show the bytes themselves.
        shown = os.fsencode(value).decode("utf-8", "backslashreplace")
        raise InputError(f"{option} '{shown}' is not valid UTF-8 text") from None
    return value


def parse_at(text: str | None, tz: ZoneInfo, option: str = "--at") -> datetime:
    """`--at` as an aware instant: ISO 8601, local to `tz` without an offset; default now."""
    if text is None or not text.strip():
        return clock_from_env().now()
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InputError(
            f"{option} {text!r} is not an ISO 8601 time (e.g. 2026-12-24T18:00)"
        ) from exc
    if not EARLIEST_YEAR <= parsed.year <= LATEST_YEAR:
        # Far dates overflow the calendar's arithmetic, and no rota reaches them.
        raise InputError(f"{option} {text!r} is outside the years {EARLIEST_YEAR} to {LATEST_YEAR}")
    if parsed.tzinfo is None:
        # Wall-clock input goes through the calendar so clock-change gaps are handled alike.
        return local_instant(parsed.date(), parsed.time(), tz)
    return parsed


@contextmanager
def rota_session(settings: Settings) -> Iterator[Session]:
    """A read session on the rota store; a clear error when there is no migrated database."""
    path = sqlite_path(settings.database_url)
    if path is not None and not path.exists():
        # Opening it would create an empty file; say what is missing instead.
        raise ServiceUnavailable(f"no database file {path}; run `handover db upgrade` first")
    engine = create_db_engine(settings.database_url, timeouts=BATCH_TIMEOUTS)
    try:
        if not inspect(engine).has_table("people"):
            raise ServiceUnavailable(_NOT_MIGRATED)
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def render_plan_table(result: Plan, tz: ZoneInfo) -> str:
    """A readable aligned table of a plan and its alerts."""
    at = result.at.astimezone(tz)
    lines = [
        f"referral received {at:%a %d %b %Y %H:%M} ({at.isoformat()}), "
        f"rota version {result.rota_version}",
        "",
    ]
    rows = [["TARGET", "RECIPIENT", "VIA", "DUE", "IMMEDIATE"]]
    for entry in result.entries:
        due = entry.due_at.astimezone(tz).isoformat() if entry.due_at else "-"
        rows.append(
            [
                entry.target,
                entry.recipient or "-",
                entry.via,
                due,
                "yes" if entry.immediate else "no",
            ]
        )
    lines.append(_table(rows))
    lines.append("")
    if result.alerts:
        alert_rows = [["ALERT", "TARGET", "RECIPIENT", "DETAIL"]]
        alert_rows.extend([a.kind, a.target, a.recipient or "-", a.detail] for a in result.alerts)
        lines.append(_table(alert_rows))
    else:
        lines.append("no alerts")
    return "\n".join(lines)


def plan(args: argparse.Namespace, settings: Settings) -> int:
    """`handover plan`: print the plan a referral received at --at would get."""
    tz = settings.timezone
    t0 = parse_at(args.at, tz)
    targets = [text_argument("--notify", target) for target in args.notify]
    repeats = repeated_targets(targets)
    with rota_session(settings) as session:
        store = RotaStore(session)
        # As at intake, a repeated target's one error is that it repeats an earlier one.
        errors = [
            (i, message) for i, message in validate_targets(store, targets) if i not in repeats
        ]
        errors += [(i, f"repeats notify[{first}]") for i, first in repeats.items()]
        errors.sort(key=lambda error: error[0])
        if errors:
            raise InputError(
                "invalid --notify targets:\n"
                + "\n".join(f"  notify[{i}] {targets[i]!r}: {message}" for i, message in errors)
            )
        result = plan_referral(store, targets, t0, alert_roles=settings.alert_roles, tz=tz)
        urgency = getattr(args, "urgency", None)
        steps = plan_steps(store, result, settings, urgency, tz) if urgency else None
    if args.format == "json":
        body = result.to_json(tz)
        if steps is not None:
            body["urgency"] = urgency
            body["escalation"] = [
                {k: v.astimezone(tz).isoformat() if isinstance(v, datetime) else v
                 for k, v in row.items()}
                for row in steps
            ]  # fmt: skip
        print(json.dumps(body, indent=2))
    else:
        print(render_plan_table(result, tz))
        if steps is not None:
            print()
            print(render_steps_table(steps, urgency or "", tz))
    return 0


STEP_COLUMNS = ("respond_by", "remind", "escalate", "escalate_channel", "breach")


def plan_steps(
    store: RotaStore, result: Plan, settings: Settings, urgency: str, tz: ZoneInfo
) -> list[dict[str, object]]:
    """For each routable target: when its prompt asks a response by and when each escalation
    step falls if nobody responds, counted from its due time in its recipient's working time
    at `urgency`'s offsets (docs/timing.md)."""
    policy = settings.policy_for(urgency)
    rows: list[dict[str, object]] = []
    for entry in result.entries:
        if entry.due_at is None:
            continue
        working = working_time_for(store, entry.recipient, entry.target, tz)
        schedule = dict(escalation_schedule(entry.due_at, working, policy))
        rows.append(
            {
                "target": entry.target,
                "respond_by": respond_by(entry.due_at, working, policy, urgent=urgency == "urgent"),
                **schedule,
            }
        )
    return rows


def render_steps_table(steps: list[dict[str, object]], urgency: str, tz: ZoneInfo) -> str:
    """The escalation table of `handover plan --urgency`."""
    rows = [["TARGET", "RESPOND BY", "REMIND", "ESCALATE", "CHANNEL", "BREACH"]]
    for step in steps:
        cells = [str(step["target"])]
        for column in STEP_COLUMNS:
            at = step[column]
            assert isinstance(at, datetime)
            cells.append(at.astimezone(tz).isoformat())
        rows.append(cells)
    return f"if nobody responds ({urgency} offsets):\n" + _table(rows)


def rota_who(args: argparse.Namespace, settings: Settings) -> int:
    """`handover rota who`: who is at work (or on shift of --role) at --at."""
    tz = settings.timezone
    t = parse_at(args.at, tz)
    if args.role:
        text_argument("--role", args.role)
    away: list[tuple[str, str, str, str]] = []
    with rota_session(settings) as session:
        store = RotaStore(session)
        if args.role:
            if not store.role_known(args.role):
                raise InputError(f"unknown role {args.role}")
            rows = [
                (person.person_id, person.name, person.team_id, f"shift {shift.role}")
                for person, shift in store.people_on_shift(t, args.role)
            ]
        else:
            rows = [
                (a.person.person_id, a.person.name, a.person.team_id, a.why)
                for a in store.people_at_work(t, tz)
            ]
            away = [
                (a.person.person_id, a.person.name, a.team.team_id, a.why)
                for a in store.people_away(t, tz)
            ]
    if getattr(args, "format", "table") == "json":
        body: dict[str, object] = {
            "at": t.astimezone(tz).isoformat(),
            "people": [
                {"person_id": p, "name": n, "team": team, "why": why} for p, n, team, why in rows
            ],
        }
        if not args.role:
            body["away"] = [
                {"person_id": p, "name": n, "team": team, "why": why} for p, n, team, why in away
            ]
        print(json.dumps(body, indent=2))
        return 0
    local = t.astimezone(tz)
    print(f"at work {local:%a %d %b %Y %H:%M} ({local.isoformat()})")
    if rows:
        print(_table([["PERSON", "NAME", "TEAM", "WHY"], *[list(r) for r in rows]]))
    else:
        print("nobody")
    if away:
        # Within their hours, yet not at work: the coordinator sees who is missing and why.
        print("")
        print("away within their hours")
        print(_table([["PERSON", "NAME", "TEAM", "WHY"], *[list(r) for r in away]]))
    return 0

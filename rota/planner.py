"""Routing: who each notify target reaches, and when (docs/timing.md).

For a referral received at t0, each target's due time T0 is the earliest instant >= t0 at which
someone in its chain is at work; the recipient is the first in chain order at work at T0.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from rota.calendar import Availability, ClosureWindow, closures_by_day, local_days
from rota.hours import parse_hours
from rota.plan import Alert, Plan, PlanEntry, TargetError, Via
from rota.queries import ChainPerson, ChainTeam
from rota.store import (
    RoleShifts,
    RotaStore,
    closure_applies,
    closure_window,
    effective_hours,
)

HORIZON = timedelta(days=7)
LONG_GAP = timedelta(hours=48)
TARGET_KINDS = ("person", "team", "role")
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class ChainLink:
    """One concrete step of a chain: a person_id (or a channel ID when via is 'channel')."""

    recipient: str
    via: Via


@dataclass(frozen=True)
class _Member:
    """One step of a chain before it is resolved at an instant."""

    via: Via
    person_id: str | None = None  # a named person (self, deputy, manager)
    role: str | None = None  # whoever holds a shift of this role (duty, shift)
    team_id: str | None = None  # the team whose channel this is (channel)
    channel: str | None = None


def parse_target(text: str) -> tuple[str, str]:
    """Split `person:ID`, `team:ID` or `role:NAME` into (kind, ref); TargetError otherwise."""
    kind, sep, ref = text.strip().partition(":")
    if not sep or kind not in TARGET_KINDS or not ref.strip():
        raise TargetError(f"malformed target {text!r}: use person:ID, team:ID or role:NAME")
    return kind, ref.strip()


def _target_error(store: RotaStore, text: str) -> str | None:
    try:
        kind, ref = parse_target(text)
    except TargetError as exc:
        return str(exc)
    if kind == "person":
        person = store.chain_person(ref)
        if person is None:
            return f"unknown person {ref}"
        if not person.active:
            return f"person {ref} is inactive"
    elif kind == "team":
        team = store.chain_team(ref)
        if team is None:
            return f"unknown team {ref}"
        if not team.active:
            return f"team {ref} is inactive"
    elif not store.role_known(ref):
        return f"unknown role {ref}"
    return None


def validate_targets(store: RotaStore, targets: Sequence[str]) -> list[tuple[int, str]]:
    """Every bad target as (index, message), so all can be reported at once."""
    # Read the named people, teams and roles (with the chains, which planning reads next)
    # in one query rather than one per target.
    _load_targets(store, targets)
    errors = []
    for index, text in enumerate(targets):
        message = _target_error(store, text)
        if message is not None:
            errors.append((index, message))
    return errors


def _load_targets(store: RotaStore, targets: Iterable[str]) -> None:
    """Read the people, teams and roles these targets name, with their chains, in one query."""
    refs: dict[str, list[str]] = {kind: [] for kind in TARGET_KINDS}
    for text in targets:
        kind, _, ref = text.strip().partition(":")
        refs.get(kind, []).append(ref.strip())
    store.load_targets(refs["person"], refs["team"], refs["role"])


def _check_target(store: RotaStore, target: str) -> tuple[str, str]:
    message = _target_error(store, target)
    if message is not None:
        raise TargetError(message)
    return parse_target(target)


def _active_person(store: RotaStore, person_id: str | None) -> ChainPerson | None:
    if not person_id:
        return None
    person = store.chain_person(person_id)
    return person if person is not None and person.active else None


def _members(store: RotaStore, target: str) -> list[_Member]:
    """The chain of a valid target, with missing, inactive and repeated people left out."""
    kind, ref = _check_target(store, target)
    if kind == "role":
        return [_Member("shift", role=ref)]
    members: list[_Member] = []
    seen: set[str] = set()

    def add_person(person_id: str | None, via: Via) -> None:
        if _active_person(store, person_id) is not None and person_id not in seen:
            seen.add(person_id)
            members.append(_Member(via, person_id=person_id))

    if kind == "person":
        person = store.chain_person(ref)
        assert person is not None
        team = store.chain_team(person.team_id)
        add_person(ref, "self")
        add_person(person.deputy_id, "deputy")
        members.append(_Member("duty", role=f"duty:{person.team_id}"))
        add_person(team.manager_id if team else None, "manager")
        return members
    team = store.chain_team(ref)
    assert team is not None
    members.append(_Member("duty", role=f"duty:{ref}"))
    add_person(team.manager_id, "manager")
    if team.channel:
        members.append(_Member("channel", team_id=ref, channel=team.channel))
    return members


class _Window:
    """The rota data of [start, end] for a set of chain members, read in two queries at most."""

    def __init__(
        self,
        store: RotaStore,
        members: Iterable[_Member],
        start: datetime,
        end: datetime,
        tz: ZoneInfo,
        *,
        also_roles: Iterable[str] = (),
    ) -> None:
        self.store, self.start, self.end, self.tz = store, start, end, tz
        members = list(members)
        # The people named and their teams, so chains cost no query per link.
        person_ids = {m.person_id for m in members if m.person_id}
        store.load_targets(person_ids, {m.team_id for m in members if m.team_id})
        people = [p for i in person_ids if (p := store.chain_person(i)) is not None]
        team_ids = {p.team_id for p in people} | {m.team_id for m in members if m.team_id}
        teams = {i: t for i in team_ids if (t := store.chain_team(i)) is not None}
        days = local_days(start, end, tz)
        self.first_day, self.last_day = days[0], days[-1]
        roles = [m.role for m in members if m.role] + list(also_roles)
        applies = {"all"} | {t.region for t in teams.values()} | set(teams)
        window = store.read_window(
            person_ids, roles, applies, start, end, (self.first_day, self.last_day)
        )
        self.person_shifts, self.roles = window.shifts, window.roles
        self.closures, self.absences = window.closures, window.absences
        self._availability: dict[_Member, Availability] = {}
        self._closures_of: dict[str, dict[date, list[ClosureWindow]]] = {}

    def _team_closures(self, team: ChainTeam) -> dict[date, list[ClosureWindow]]:
        if team.team_id not in self._closures_of:
            self._closures_of[team.team_id] = closures_by_day(
                closure_window(c) for c in self.closures if closure_applies(c, team)
            )
        return self._closures_of[team.team_id]

    def availability(self, member: _Member) -> Availability:
        """When this member (a person or a team channel) is at work within the window."""
        if member not in self._availability:
            self._availability[member] = self._build(member)
        return self._availability[member]

    def _build(self, member: _Member) -> Availability:
        if member.channel is not None:
            team = self.store.chain_team(member.team_id or "")
            if team is None:
                return Availability()
            return Availability(
                hours=parse_hours(team.hours),
                region=team.region,
                closures=self._team_closures(team),
            )
        person = self.store.chain_person(member.person_id or "")
        if person is None or not person.active:
            return Availability()
        team = self.store.chain_team(person.team_id)
        shifts = [(s.start_at, s.end_at) for s in self.person_shifts.get(person.person_id, [])]
        if team is None:
            return Availability(shifts=shifts)
        return Availability(
            hours=effective_hours(person, team),
            region=team.region,
            closures=self._team_closures(team),
            absences=self.absences.get(person.person_id, ()),
            shifts=shifts,
        )

    def holders(self, role: str) -> RoleShifts:
        """Who holds `role` from the window's start on."""
        return self.roles[role]

    def link_at(
        self, member: _Member, t: datetime, excluding: Collection[str] = ()
    ) -> ChainLink | None:
        """The member as a concrete link if at work at t, else None (a role: its first holder
        at t but those `excluding` names)."""
        if member.role is not None:
            holder = self.holders(member.role).holder(t, excluding)
            return ChainLink(holder, member.via) if holder is not None else None
        if not self.availability(member).is_at_work(t, self.tz):
            return None
        recipient = member.channel if member.channel is not None else member.person_id
        assert recipient is not None
        return ChainLink(recipient, member.via)

    def next_at_work(self, member: _Member, until: datetime) -> datetime | None:
        """The earliest instant in [start, until] at which the member is at work."""
        if member.role is not None:
            return self.holders(member.role).next_held(until)
        return self.availability(member).next_at_work(self.start, until, self.tz)

    def on_call(self, roles: Sequence[str]) -> list[tuple[str, str]]:
        """(role, person_id) for each active holder of these roles at the start, role by role."""
        holders: list[tuple[str, str]] = []
        for role in dict.fromkeys(roles):
            for person_id in dict.fromkeys(s.person_id for s in self.roles[role].at_start):
                holders.append((role, person_id))
        return holders


def _first_at_work(
    window: _Window, members: Sequence[_Member], t: datetime, excluding: Collection[str] = ()
) -> ChainLink | None:
    for member in members:
        link = window.link_at(member, t, excluding)
        if link is not None and link.recipient not in excluding:
            return link
    return None


def _due(
    window: _Window, members: Sequence[_Member], t0: datetime
) -> tuple[datetime, ChainLink] | None:
    """T0 and the recipient at T0 for a chain, or None when nobody is at work within 7 days."""
    assert t0 == window.start
    candidates = [window.next_at_work(m, t0 + HORIZON) for m in members]
    found = [c for c in candidates if c is not None]
    if not found:
        return None
    due = min(found)
    link = _first_at_work(window, members, due)
    assert link is not None, "a member found at work at T0 must resolve"
    return due, link


def chain_for(store: RotaStore, target: str, t: datetime) -> list[ChainLink]:
    """The target's chain as concrete links at t (the duty holder is whoever is on duty at t)."""
    members = _members(store, target)
    window = _Window(store, members, t, t + _SECOND, ZoneInfo("UTC"))
    links: list[ChainLink] = []
    seen: set[str] = set()
    for member in members:
        if member.role is not None:
            recipient = window.holders(member.role).holder(t)
        elif member.channel is not None:
            recipient = member.channel
        else:
            recipient = member.person_id
        if recipient is not None and recipient not in seen:
            seen.add(recipient)
            links.append(ChainLink(recipient, member.via))
    return links


def resolve_recipient(
    store: RotaStore, target: str, t: datetime, tz: ZoneInfo, *, excluding: Collection[str] = ()
) -> ChainLink | None:
    """The first in the target's chain at work at t (used at send time), passing over those
    `excluding` names (people nobody could reach), or None."""
    members = _members(store, target)
    window = _Window(store, members, t, t + _SECOND, tz)
    return _first_at_work(window, members, t, excluding)


def resolve_recipients(
    store: RotaStore, targets: Iterable[str], t: datetime, tz: ZoneInfo
) -> dict[str, ChainLink | None]:
    """`resolve_recipient` of several targets at t, reading the rota for all of them at once
    (two statements for a batch of prompts). A target no longer valid is left out: resolving
    it alone says why."""
    specs = list(dict.fromkeys(targets))
    _load_targets(store, specs)
    chains: dict[str, list[_Member]] = {}
    for spec in specs:
        try:
            chains[spec] = _members(store, spec)
        except TargetError:
            continue
    window = _Window(store, [m for members in chains.values() for m in members], t, t + _SECOND, tz)
    return {spec: _first_at_work(window, members, t) for spec, members in chains.items()}


def on_call_at(
    store: RotaStore, roles: Sequence[str], t: datetime, tz: ZoneInfo
) -> list[tuple[str, str]]:
    """(role, person_id) for each active holder of these roles on shift at t, role by role."""
    return _Window(store, [], t, t + _SECOND, tz, also_roles=roles).on_call(roles)


def is_at_work(store: RotaStore, person_id: str, t: datetime, tz: ZoneInfo) -> bool:
    """Whether the person is at work at t (by shift, or by hours on a working day)."""
    member = _Member("self", person_id=person_id)
    return _Window(store, [member], t, t + _SECOND, tz).availability(member).is_at_work(t, tz)


def next_at_work(
    store: RotaStore,
    person_id: str,
    t: datetime,
    tz: ZoneInfo,
    horizon: timedelta = HORIZON,
) -> datetime | None:
    """The earliest instant in [t, t + horizon] at which the person is at work, or None."""
    member = _Member("self", person_id=person_id)
    return _Window(store, [member], t, t + horizon, tz).next_at_work(member, t + horizon)


def format_gap(gap: timedelta) -> str:
    """A gap as '78 h 50 min' (whole minutes)."""
    minutes = int(gap.total_seconds() // 60)
    hours, rest = divmod(minutes, 60)
    return f"{hours} h {rest} min" if rest else f"{hours} h"


def _local_label(t: datetime, tz: ZoneInfo) -> str:
    local = t.astimezone(tz)
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def plan_referral(
    store: RotaStore,
    targets: Sequence[str],
    t0: datetime,
    *,
    alert_roles: Sequence[str],
    tz: ZoneInfo,
) -> Plan:
    """The plan of a referral received at t0: each target's recipient and due time, and alerts."""
    if t0.tzinfo is None:
        raise ValueError("plan_referral needs an aware t0")
    errors = validate_targets(store, targets)
    if errors:
        raise TargetError("; ".join(message for _, message in errors))
    chains = [_members(store, target) for target in targets]
    members = (m for chain in chains for m in chain)
    window = _Window(store, members, t0, t0 + HORIZON, tz, also_roles=alert_roles)

    holders = window.on_call(alert_roles)
    alerts: list[Alert] = [
        Alert(
            "on_call",
            f"role:{role}",
            person_id,
            f"on call as {role}: referral received {_local_label(t0, tz)}",
        )
        for role, person_id in holders
    ]
    on_call_ids = list(dict.fromkeys(person_id for _, person_id in holders)) or [None]

    entries: list[PlanEntry] = []
    for target, chain in zip(targets, chains, strict=True):
        due = _due(window, chain, t0)
        if due is None:
            entries.append(PlanEntry(target, None, "unroutable", None, False))
            detail = "nobody in the chain is at work within 7 days"
            alerts.extend(Alert("unroutable", target, r, detail) for r in on_call_ids)
            continue
        due_at, link = due
        entries.append(PlanEntry(target, link.recipient, link.via, due_at, due_at == t0))
        if due_at - t0 > LONG_GAP:
            detail = (
                f"next reachable {_local_label(due_at, tz)} "
                f"({format_gap(due_at - t0)} after receipt)"
            )
            alerts.extend(Alert("long_gap", target, r, detail) for r in on_call_ids)
    return Plan(t0, store.current_rota_version(), tuple(entries), tuple(alerts))

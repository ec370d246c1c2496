"""The values the routing planner returns (docs/timing.md; `plan --format json` in
docs/reference/commands.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

Via = Literal["self", "deputy", "duty", "manager", "channel", "shift", "unroutable"]
AlertKind = Literal["on_call", "long_gap", "unroutable"]


@dataclass(frozen=True)
class PlanEntry:
    """Who a target's prompt goes to, how they were found, and when it is due."""

    target: str  # as given: person:ID | team:ID | role:NAME
    recipient: str | None  # person_id; a Slack channel ID when via == "channel"; None if unroutable
    via: Via
    due_at: datetime | None  # T0, aware; None when unroutable
    immediate: bool

    def to_json(self, tz: ZoneInfo) -> dict[str, Any]:
        """An element of `plan` in `handover plan --format json`, its time in `tz`."""
        return {
            "target": self.target,
            "recipient": self.recipient,
            "via": self.via,
            "due_at": self.due_at.astimezone(tz).isoformat() if self.due_at else None,
            "immediate": self.immediate,
        }


@dataclass(frozen=True)
class Alert:
    """An alert the plan raises: nobody on call, a long gap, or an unroutable target."""

    kind: AlertKind
    target: str  # role:NAME for on_call; the concerned target otherwise
    recipient: str | None  # the on-call person alerted (None when nobody holds the role)
    detail: str

    def to_json(self) -> dict[str, Any]:
        """An element of `alerts` in `handover plan --format json`."""
        return {
            "kind": self.kind,
            "target": self.target,
            "recipient": self.recipient,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Plan:
    """A referral's routing at `at` by one rota version: its entries and its alerts."""

    at: datetime  # t0, aware
    rota_version: int
    entries: tuple[PlanEntry, ...] = ()
    alerts: tuple[Alert, ...] = field(default_factory=tuple)

    def to_json(self, tz: ZoneInfo) -> dict[str, Any]:
        """The JSON object of `handover plan --format json`, times in `tz` with their offset."""
        return {
            "at": self.at.astimezone(tz).isoformat(),
            "rota_version": self.rota_version,
            "plan": [entry.to_json(tz) for entry in self.entries],
            "alerts": [alert.to_json() for alert in self.alerts],
        }


class TargetError(ValueError):
    """A notify target is malformed or names nothing in the rota (e.g. 'unknown team gp-x')."""

"""Slack's Web API rate limits: per-method tiers and a workspace-wide message limit.

Slack limits each method per workspace and app ("tiers", counted per minute, short bursts
tolerated) and answers HTTP 429 with ``Retry-After`` beyond. chat.postMessage has its own
per-channel limit (about one message a second), kept by the workspace; this module keeps the
others. Everything here is off unless configured, so tests that do not care run at full speed.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.slack_standin.model import ControlError


@dataclass(frozen=True)
class Limit:
    """A token bucket: ``burst`` calls at once, refilled at ``per_minute`` a minute."""

    per_minute: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_minute <= 0 or self.burst < 1:
            raise ControlError("a limit needs per_minute > 0 (or per_second > 0) and burst >= 1")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Limit:
        """Parse ``{"per_minute": 50, "burst": 5}`` or ``{"per_second": 10, "burst": 10}``."""
        unknown = sorted(set(data) - {"per_minute", "per_second", "burst"})
        if unknown:
            raise ControlError(f"unknown limit fields: {', '.join(unknown)}")
        try:
            if "per_second" in data:
                # A per-second limit tolerates one second's worth at once.
                per_minute = float(data["per_second"]) * 60
                default_burst = math.ceil(per_minute / 60)
            else:
                # A tier tolerates a tenth of a minute's allowance at once.
                per_minute = float(data["per_minute"])
                default_burst = math.ceil(per_minute / 10)
            burst = int(data.get("burst") or max(1, default_burst))
        except KeyError as exc:
            raise ControlError("a limit needs per_minute or per_second") from exc
        except (TypeError, ValueError) as exc:
            raise ControlError(f"bad limit: {exc}") from exc
        return cls(per_minute=per_minute, burst=burst)

    def to_dict(self) -> dict[str, Any]:
        """The limit as JSON."""
        return {"per_minute": self.per_minute, "burst": self.burst}


# Slack's published tiers ("50+ per minute", "100+ per minute"), each tolerating a short burst:
# a tenth of a minute's allowance at once.
TIER_3 = Limit(per_minute=50, burst=5)
TIER_4 = Limit(per_minute=100, burst=10)

# The tier of each simulated method, from its page in Slack's method catalogue.
SLACK_TIERS: Mapping[str, Limit] = {
    "chat.delete": TIER_3,
    "chat.update": TIER_3,
    "conversations.history": TIER_3,
    "conversations.open": TIER_3,
    "users.lookupByEmail": TIER_3,
    "chat.postEphemeral": TIER_4,
    "users.info": TIER_4,
    "views.open": TIER_4,
    "views.publish": TIER_4,
    "views.push": TIER_4,
    "views.update": TIER_4,
}

# The methods that share the workspace-wide message limit (HANDOVER_SLACK_RATE on the bot side).
MESSAGE_METHODS = ("chat.postMessage", "chat.update")


@dataclass(frozen=True)
class RateLimits:
    """Which limits apply: per method (each workspace its own bucket) and workspace-wide."""

    methods: Mapping[str, Limit] = field(default_factory=dict)
    workspace: Limit | None = None
    workspace_methods: tuple[str, ...] = MESSAGE_METHODS

    @classmethod
    def slack_tiers(cls, *, messages_per_second: float | None = None) -> RateLimits:
        """Slack's tiers for every simulated method, and optionally a workspace message rate."""
        workspace = (
            Limit(per_minute=messages_per_second * 60, burst=max(1, math.ceil(messages_per_second)))
            if messages_per_second
            else None
        )
        return cls(methods=dict(SLACK_TIERS), workspace=workspace)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateLimits:
        """Parse the body of ``POST /_standin/rate_limits``."""
        unknown = sorted(set(data) - {"tiers", "methods", "workspace", "workspace_methods"})
        if unknown:
            raise ControlError(f"unknown rate-limit fields: {', '.join(unknown)}")
        methods: dict[str, Limit] = dict(SLACK_TIERS) if data.get("tiers") else {}
        raw_methods = data.get("methods") or {}
        if not isinstance(raw_methods, Mapping):
            raise ControlError("'methods' maps a method name to a limit or null")
        for name, raw in raw_methods.items():
            if raw is None:
                methods.pop(str(name), None)
            elif isinstance(raw, Mapping):
                methods[str(name)] = Limit.from_dict(raw)
            else:
                raise ControlError(f"the limit of {name} must be an object or null")
        raw_workspace = data.get("workspace")
        if raw_workspace is not None and not isinstance(raw_workspace, Mapping):
            raise ControlError("'workspace' is a limit object or null")
        shared = data.get("workspace_methods", MESSAGE_METHODS)
        if not isinstance(shared, list | tuple) or not all(isinstance(m, str) for m in shared):
            raise ControlError("'workspace_methods' is a list of method names")
        return cls(
            methods=methods,
            workspace=Limit.from_dict(raw_workspace) if raw_workspace else None,
            workspace_methods=tuple(shared),
        )

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON."""
        return {
            "methods": {name: limit.to_dict() for name, limit in sorted(self.methods.items())},
            "workspace": self.workspace.to_dict() if self.workspace else None,
            "workspace_methods": list(self.workspace_methods),
        }


class RateLimited(Exception):
    """A call over a limit; Slack answers HTTP 429 with ``Retry-After: retry_after``."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class Bucket:
    """One token bucket (the caller holds the stand-in's lock)."""

    def __init__(self, capacity: float, per_second: float, now: float) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.tokens = capacity
        self.updated = now

    def refill(self, now: float) -> None:
        """Add the tokens earned since the last look."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now

    def retry_after(self) -> int:
        """Whole seconds until a token is back (at least 1, as Slack's ``Retry-After``)."""
        return max(1, math.ceil((1.0 - self.tokens) / self.per_second))

    def take(self, now: float) -> None:
        """Take a token or raise RateLimited."""
        self.refill(now)
        if self.tokens < 1.0:
            raise RateLimited(self.retry_after())
        self.tokens -= 1.0


class RateLimiter:
    """Checks calls against RateLimits per workspace and counts the 429s answered per method."""

    def __init__(
        self, limits: RateLimits | None = None, *, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or RateLimits()
        self._monotonic = monotonic
        self._buckets: dict[tuple[str, str], Bucket] = {}
        self.ratelimited: Counter[str] = Counter()

    def configure(self, limits: RateLimits | None) -> None:
        """Replace the limits (``None`` turns them all off) and start every bucket full."""
        self.limits = limits or RateLimits()
        self._buckets.clear()

    def check(self, team_id: str, method: str) -> None:
        """Take a token from every limit ``method`` is under in workspace ``team_id``."""
        now = self._monotonic()
        checks: list[tuple[str, Limit]] = []
        if method in self.limits.methods:
            checks.append((method, self.limits.methods[method]))
        if self.limits.workspace is not None and method in self.limits.workspace_methods:
            checks.append(("*workspace*", self.limits.workspace))
        buckets = [self._bucket(team_id, key, limit, now) for key, limit in checks]
        # A refused call costs nothing: check every bucket before taking from any.
        for bucket in buckets:
            bucket.refill(now)
        short = [b for b in buckets if b.tokens < 1.0]
        if short:
            raise RateLimited(max(b.retry_after() for b in short))
        for bucket in buckets:
            bucket.tokens -= 1.0

    def count(self, method: str) -> None:
        """Count one 429 answered to ``method`` (by a limit or an injected fault)."""
        self.ratelimited[method] += 1

    def counts(self) -> dict[str, int]:
        """The 429s answered per method since the last reset."""
        return dict(sorted(self.ratelimited.items()))

    def reset(self) -> None:
        """Forget counts and refill every bucket."""
        self.ratelimited.clear()
        self._buckets.clear()

    def _bucket(self, team_id: str, key: str, limit: Limit, now: float) -> Bucket:
        bucket = self._buckets.get((team_id, key))
        if bucket is None:
            bucket = Bucket(float(limit.burst), limit.per_minute / 60.0, now)
            self._buckets[(team_id, key)] = bucket
        return bucket

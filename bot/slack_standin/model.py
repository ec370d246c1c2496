"""Values shared by the stand-in's workspace, server and control API."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

FAULT_KINDS = ("status", "hang", "ratelimit", "error", "hold")


class ControlError(ValueError):
    """A control request (fault, user, setting) that the stand-in cannot accept."""


@dataclass(frozen=True)
class StandInUser:
    """One person in the stand-in's user directory."""

    id: str
    name: str
    email: str | None = None
    deleted: bool = False
    real_name: str | None = None
    is_bot: bool = False
    tz: str = "Europe/London"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StandInUser:
        """Build a user from a JSON object (``id`` and ``name`` required)."""
        try:
            user_id = str(data["id"])
        except KeyError as exc:
            raise ControlError("a user needs an 'id'") from exc
        if user_id[:1] not in ("U", "W"):
            raise ControlError(f"user id {user_id!r} must start with U or W")
        deleted = data.get("deleted", False)
        if isinstance(deleted, str):
            deleted = deleted.strip().lower() in ("1", "true", "yes")
        return cls(
            id=user_id,
            name=str(data.get("name") or user_id.lower()),
            email=(str(data["email"]) if data.get("email") else None),
            deleted=bool(deleted),
            real_name=(str(data["real_name"]) if data.get("real_name") else None),
            is_bot=bool(data.get("is_bot", False)),
            tz=str(data.get("tz") or "Europe/London"),
        )

    def to_slack(self, team_id: str) -> dict[str, Any]:
        """Render the user the way users.info and users.lookupByEmail return it."""
        real_name = self.real_name or self.name
        profile: dict[str, Any] = {
            "real_name": real_name,
            "real_name_normalized": real_name,
            "display_name": self.name,
            "display_name_normalized": self.name,
            "team": team_id,
        }
        if self.email:
            profile["email"] = self.email
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "deleted": self.deleted,
            "real_name": real_name,
            "tz": self.tz,
            "tz_label": self.tz,
            "tz_offset": 0,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "is_admin": False,
            "is_owner": False,
            "profile": profile,
        }


@dataclass(frozen=True)
class RateLimit:
    """A per-channel token bucket for chat.postMessage: ``burst`` at once, then ``per_second``."""

    burst: int = 5
    per_second: float = 1.0

    def __post_init__(self) -> None:
        if self.burst < 1 or self.per_second <= 0:
            raise ControlError("a rate limit needs burst >= 1 and per_second > 0")


# Slack's chat.postMessage limit: about one a second per channel, with short bursts allowed.
DEFAULT_RATE_LIMIT = RateLimit()


@dataclass
class Fault:
    """A failure the stand-in delivers on the next ``count`` matching calls.

    ``kind`` is ``status`` (HTTP ``status``), ``hang`` (wait ``seconds``), ``ratelimit`` (HTTP 429
    with ``Retry-After: retry_after``), ``error`` (Slack ``error`` with HTTP 200) or ``hold`` (the
    call waits *before* it takes effect, until ``POST /_standin/holds/release`` or ``seconds``,
    then is applied and answered as usual: a request that reaches Slack late, as from a process
    frozen in the middle of sending it). ``method`` is a method name or ``*``; ``channel``, when
    given, limits the fault to calls with that ``channel`` argument (a user ID for a DM post).
    With ``after_apply`` the call takes effect first and only its response fails, as when a
    response is lost on the way back; otherwise nothing is applied.
    """

    kind: str
    method: str = "*"
    count: int = 1
    status: int = 500
    seconds: float = 0.0
    retry_after: int = 1
    error: str = ""
    after_apply: bool = False
    channel: str | None = None
    remaining: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ControlError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if self.count < 1:
            raise ControlError("a fault's count must be at least 1")
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ControlError("a status fault needs an HTTP status from 400 to 599")
        if self.kind == "error" and not self.error:
            raise ControlError("an error fault needs the Slack 'error' to return")
        if self.kind in ("hang", "hold") and self.seconds <= 0:
            raise ControlError(f"a {self.kind} fault needs 'seconds' > 0")
        if self.kind == "hold" and self.after_apply:
            raise ControlError("a hold fault holds a call before it takes effect: no after_apply")
        if self.retry_after < 0:
            raise ControlError("retry_after must not be negative")
        if self.remaining < 0:
            self.remaining = self.count

    def matches(self, method: str, channel: object = None) -> bool:
        """Whether this fault applies to a call of ``method`` (with that ``channel`` argument)."""
        if self.channel is not None and channel != self.channel:
            return False
        return self.remaining > 0 and self.method in ("*", method)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build a fault from the JSON body of ``POST /_standin/faults``."""
        allowed = {
            "kind",
            "method",
            "count",
            "status",
            "seconds",
            "retry_after",
            "error",
            "after_apply",
            "channel",
        }
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ControlError(f"unknown fault fields: {', '.join(unknown)}")
        if "kind" not in data:
            raise ControlError("a fault needs a 'kind'")
        try:
            return cls(
                kind=str(data["kind"]),
                method=str(data.get("method") or "*"),
                count=int(data.get("count", 1)),
                status=int(data.get("status", 500)),
                seconds=float(data.get("seconds", 0.0)),
                retry_after=int(data.get("retry_after", 1)),
                error=str(data.get("error", "")),
                after_apply=bool(data.get("after_apply", False)),
                channel=str(data["channel"]) if data.get("channel") else None,
            )
        except ControlError:
            raise
        except (TypeError, ValueError) as exc:
            raise ControlError(f"bad fault: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        """The fault as JSON, with how many deliveries remain."""
        return asdict(self)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer to a Web API call, sent after waiting ``delay`` seconds."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class RecordedCall:
    """One Web API call as the stand-in received and answered it (the token is never kept)."""

    method: str
    args: dict[str, Any]
    timestamp: float
    status: int
    response: dict[str, Any]
    team_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The call as JSON for ``GET /_standin/calls``."""
        return copy.deepcopy(asdict(self))


class IdSource:
    """Message timestamps and view and DM IDs, unique across all workspaces of one stand-in.

    The caller holds the stand-in's lock.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        """Start the counters again (after a reset nothing refers to the old IDs)."""
        self._last_ts_micros = 0
        self._views = 0
        self._dms = 0
        self._hashes = 0

    def ts(self) -> str:
        """A message ``ts``: the clock in microseconds, strictly increasing."""
        micros = max(int(self._clock() * 1_000_000), self._last_ts_micros + 1)
        self._last_ts_micros = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def view_id(self) -> str:
        """A new view ID (``V0000000001``)."""
        self._views += 1
        return f"V{self._views:010d}"

    def dm_id(self) -> str:
        """A new DM channel ID (``D0000000001``)."""
        self._dms += 1
        return f"D{self._dms:010d}"

    def view_hash(self) -> str:
        """A new view ``hash``: it changes with every update, as Slack's does."""
        self._hashes += 1
        return f"{int(self._clock())}.{self._hashes:014d}"

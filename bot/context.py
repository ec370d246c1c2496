"""What Slack handlers and HTTP endpoints are given: settings, sessions, clock, dispatcher."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock
from bot.settings import Settings


def _no_wake() -> None:
    """Nothing to wake: no dispatcher runs in this process (a worker polls instead)."""


@dataclass(frozen=True)
class Services:
    settings: Settings
    session_factory: sessionmaker[Session]
    clock: Clock
    wake_dispatcher: Callable[[], None] = field(default=_no_wake)

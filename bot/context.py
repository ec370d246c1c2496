"""What Slack handlers and HTTP endpoints are given: settings, sessions, clock, dispatcher,
the queue for work after an ack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock
from bot.settings import Settings


def _no_wake() -> None:
    """Nothing to wake: no dispatcher runs in this process (a worker polls instead)."""


def run_now(job: Callable[[], None]) -> bool:
    """No work queue: run a listener's post-ack `job` at once, in the listener's thread."""
    job()
    return True


@dataclass(frozen=True)
class Services:
    settings: Settings
    session_factory: sessionmaker[Session]
    clock: Clock
    wake_dispatcher: Callable[[], None] = field(default=_no_wake)
    # Where a Slack listener's work after its ack runs: bot/web/work.py's queue under `serve`.
    # False when the job was refused (the queue is full).
    after_ack: Callable[[Callable[[], None]], bool] = field(default=run_now)
    # Queues App Home redraws (bot/delivery/home.py's HomeRefreshes); None: redraw at once.
    homes: Any = None

"""What Slack handlers and HTTP endpoints are given: settings, sessions, clock, dispatcher,
the queue for work after an ack."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk import WebClient
from sqlalchemy.orm import Session, sessionmaker

from bot.clock import Clock
from bot.settings import Settings


def _no_wake() -> None:
    """Nothing to wake: no dispatcher runs in this process (a worker polls instead)."""


def run_now(job: Callable[[], None], *, urgent: bool = False) -> bool:
    """No work queue: run a listener's post-ack `job` at once, in the listener's thread."""
    job()
    return True


@dataclass(frozen=True)
class Services:
    settings: Settings
    session_factory: sessionmaker[Session]
    clock: Clock
    wake_dispatcher: Callable[[], None] = field(default=_no_wake)
    # Where a Slack listener's work after its ack runs: bot/web/work.py's queue under `serve`,
    # called as after_ack(job, urgent=...). False when the job was refused (the queue is full).
    after_ack: Callable[..., bool] = field(default=run_now)
    # The Slack requests in progress (bot/web/work.py's SlackTraffic), counted by the HTTP layer
    # so that the work after the acks can make way for them; None: not counted.
    slack_traffic: Any = None
    # Writes a click's or a slash command's job to the slack_jobs table after its ack
    # (bot/slackjobs/writer.py's JobWriter); None: the job runs on `after_ack` instead.
    slack_jobs: Any = None
    # Queues App Home redraws (bot/delivery/home.py's HomeRefreshes); None: redraw at once.
    homes: Any = None
    # The Web API client of a workspace (None: the home one), or None where the app is not
    # installed; unset when there are no partner workspaces (SLACK_CLIENT_ID unset), so the
    # client of the request in hand is the only one (docs/partner-workspaces.md).
    slack_client_for: Callable[[str | None], WebClient | None] | None = None

    def client_for(self, workspace: str | None, default: WebClient) -> WebClient | None:
        """The client that reaches `workspace`; `default` (the request's) without partners."""
        if self.slack_client_for is None:
            return default
        return self.slack_client_for(workspace)

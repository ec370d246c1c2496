"""Every click that becomes a job after its ack (handlers/deferred.py): the work of each kind,
for the runner of the slack_jobs table in a dispatcher process (bot/slackjobs/runner.py)."""

from __future__ import annotations

import logging

from slack_sdk import WebClient

from bot.context import Services
from bot.slackjobs.queue import ClaimedJob
from bot.slackjobs.runner import JobWork
from handlers import actions, contacts, home, oncall
from handlers.deferred import Click, ClickWork

logger = logging.getLogger(__name__)


def click_jobs(services: Services, client: WebClient) -> dict[str, JobWork]:
    """Each click kind's work as payload -> work, through the client of the click's workspace
    (`client`: the home workspace's)."""
    works: dict[str, ClickWork] = {}
    for surface in (actions, contacts, oncall, home):
        works.update(surface.clicks(services))
    return {kind: _from_payload(services, client, kind, work) for kind, work in works.items()}


def _from_payload(services: Services, client: WebClient, kind: str, work: ClickWork) -> JobWork:
    def run(job: ClaimedJob) -> None:
        click = Click.from_payload(job.payload)
        there = services.client_for(click.workspace, client)
        if there is None:
            # The app was removed from that workspace: nothing there can be shown or answered.
            logger.warning("a %s click from a workspace without the app: not done", kind)
            return
        work(click, there)

    return run

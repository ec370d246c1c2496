"""Each `/handover` subcommand's job (handlers/commands.py's `command_job`): its work, for the
runner of the slack_jobs table in a process that runs the dispatcher (bot/slackjobs/runner.py).

A job answers once, through the command's response_url, or not at all. The job's private part
(the response_url and the words typed: a close's reason) is erased before the answer: for
`close`, in the close's own transaction; for a subcommand that only reads, in the one that
marks the job done, after which the runner sends the answer the work left it. A job run again
after a crash mid-job either finds the private part there, nothing of its work committed, and
does it all; or finds it gone and does nothing: the referral is closed once and
`referral_closed` logged once, and the user is never answered twice (a crash in the instant
between that commit and the answer leaves them unanswered; `/handover log REFERRAL_ID` shows
the close). Slack takes a response_url's answers for 30 minutes. A job claimed later than that
(no dispatcher ran meanwhile) is answered in a DM from the app instead: a `close` is still
carried out, late rather than never (until it is, the referral's held prompts would go out
about a closed case); a subcommand that only reads is not (its answer, who is on call *now*,
would mislead), the DM says to type it again, and the job is dropped with `slack_job_dropped`
and a log line that says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from slack_sdk import WebClient
from slack_sdk.webhook import WebhookClient
from sqlalchemy.orm import Session

from bot.channels.slack import SlackError, slack_edge
from bot.clock import Clock, SystemClock
from bot.context import Services
from bot.slackjobs import queue
from bot.slackjobs.queue import PRIVATE, ClaimedJob
from bot.slackjobs.runner import GiveUp, JobWork
from bot.workspaces.oauth import WORKSPACE_KEY
from handlers.commands import JOB_KIND_PREFIX, SUBCOMMANDS, close_and_answer
from handlers.home import tell_directly

logger = logging.getLogger(__name__)

RESPONSE_URL_LIFETIME = timedelta(minutes=30)  # Slack's, for a slash command's response_url
ANSWER_TIMEOUT_SECONDS = 10


class ResponseUrlExpired(GiveUp):
    """The command's response_url no longer takes answers, and its answer would mislead now:
    it was not carried out."""


class ClaimLost(Exception):
    """Another runner holds the job now (this one's lease ended while it worked): this one's
    work is rolled back, the other's counts."""


def command_jobs(
    services: Services, client: WebClient, *, wall_clock: Clock | None = None
) -> dict[str, JobWork]:
    """Each subcommand's work as a job's kind -> work; a late answer is a DM through the
    client of the command's workspace (`client`: the home workspace's). `wall_clock`: the
    response_url's expiry is real time, whatever the service's clock says."""
    wall = wall_clock or SystemClock()
    return {JOB_KIND_PREFIX + name: _work_of(services, client, name, wall) for name in SUBCOMMANDS}


def _work_of(services: Services, client: WebClient, name: str, wall: Clock) -> JobWork:
    def run(job: ClaimedJob) -> Callable[[], None] | None:
        private = job.payload.get(PRIVATE)
        if private is None:
            logger.warning(
                "slack job %s (%s) was carried out by an earlier attempt: not again",
                job.id, job.kind, extra={"job": job.id, "kind": job.kind},
            )  # fmt: skip
            return None
        issued = datetime.fromtimestamp(job.payload["issued_at"], UTC)
        expires = issued + RESPONSE_URL_LIFETIME
        late = wall.now() >= expires
        command = {
            "user_id": job.payload["user"],
            WORKSPACE_KEY: job.payload.get("workspace"),
            "channel_id": job.payload.get("channel"),
        }
        if late and name != "close":
            tell_user_of(
                services, client, job,
                f"Your `/handover {name}` of {issued:%H:%M} UTC could not be answered in time. "
                "Please type it again.",
            )  # fmt: skip
            raise ResponseUrlExpired(
                f"unanswered: its response_url expired at {expires:%Y-%m-%d %H:%M:%S} UTC, "
                f"30 minutes after `/handover {name}`, which was not carried out (the user "
                "was told in a DM to type it again)"
            )
        args = [str(word) for word in private.get("args") or []]

        def forget_private(session: Session) -> None:
            if not queue.forget_private(session, job):
                raise ClaimLost(f"slack job {job.id} is held by another runner")

        response_url = str(private["response_url"])
        if name == "close":
            text = close_and_answer(services, command, args, with_the_close=forget_private)
            # Committed with the close: no other attempt will answer.
            if late:
                logger.warning(
                    "slack job %s (%s) carried out %d minutes after `/handover close`, past "
                    "its response_url's 30: answered in a DM",
                    job.id, job.kind, (wall.now() - issued) // timedelta(minutes=1),
                    extra={"job": job.id, "kind": job.kind},
                )  # fmt: skip
                tell_user_of(
                    services, client, job,
                    f"Your `/handover close` of {issued:%H:%M} UTC was carried out late. {text}",
                )  # fmt: skip
            else:
                _send(response_url, {"text": text, "response_type": "ephemeral"}, job)
            return None
        answers: list[dict[str, Any]] = []
        SUBCOMMANDS[name](services, command, args, lambda **kw: answers.append(kw))
        [answer] = answers  # each subcommand answers once
        # Sent once the runner has marked the job done, its private part erased with it.
        return lambda: _send(response_url, answer, job)

    return run


def tell_user_of(
    services: Services,
    client: WebClient,
    job: ClaimedJob,
    text: str,
    *,
    send: Callable[[WebClient, str, str], None] = tell_directly,
) -> None:
    """Tell the user who clicked or typed `job` in a DM from the app, through the client of the
    job's workspace (`send`: handlers/home.py's `tell_directly`, or `send_directly` to have a
    failure raised; `client`: the home workspace's)."""
    user = job.payload.get("user")
    if not user:
        logger.warning("slack job %s (%s) names no user to tell", job.id, job.kind)
        return
    there = services.client_for(job.payload.get("workspace"), client)
    if there is None:  # the app was removed from that workspace: nobody there to tell
        logger.warning("slack job %s (%s): its workspace no longer has the app", job.id, job.kind)
        return
    send(there, str(user), text)


def _send(response_url: str, answer: dict[str, Any], job: ClaimedJob) -> None:
    """Post the answer; a failure is logged, not retried (it may have reached Slack)."""
    client = WebhookClient(response_url, timeout=ANSWER_TIMEOUT_SECONDS)
    try:
        with slack_edge("response_url"):
            response = client.send(**answer)
    except SlackError:
        return  # logged at the edge; the work is done, and is not done again
    if response.status_code != 200:
        logger.error(
            "slack job %s (%s): Slack refused its answer (HTTP %s %s)",
            job.id, job.kind, response.status_code, (response.body or "")[:60],
            extra={"job": job.id, "kind": job.kind},
        )  # fmt: skip

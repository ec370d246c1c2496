"""Telling a professional that their click or slash command was not carried out: its job
failed every attempt and was dropped (bot/slackjobs/runner.py, `slack_job_dropped`).

Without this they would believe it worked. The notice is a private one in their DM with the
app (handlers/home.py's `tell_directly`: its notification names nothing); it names the button's
label or the subcommand and the minute, never a referral or anything typed (a close's
reason is the job's private part, erased with the drop).

Nothing is lost: the notice is a job of its own (kind NOTICE_KIND), written in the drop's own
transaction, its payload only the user, their workspace and the notice's text, so a runner that
dies after the drop leaves it to the next, and a DM that Slack refuses for now (down, a 5xx, or
still rate-limited once its call has waited out 429s through the shared bucket for a minute:
bot/delivery/pacing.py's `Pacer.job_client`) raises and is tried again after the usual backoff
(bot/slackjobs/queue.py's BACKOFF). Nothing is marked sent before the DM: the runner marks the
job done after it. So a runner that dies after the DM is sent and before that mark sends it
again when the job's lease ends: the notice is at least once, as any Slack call without an
idempotency key is; in practice once. A notice that Slack refuses for good (the user
deactivated, the token revoked) is given up at once; one that fails every attempt is dropped
like any job, and no notice is made of a notice.
"""

from __future__ import annotations

from datetime import UTC, datetime

from slack_sdk import WebClient

from bot.channels.slack import SlackError, SlackTransientError
from bot.context import Services
from bot.slackjobs.queue import ClaimedJob, NewJob
from bot.slackjobs.runner import GiveUp, JobWork
from handlers.blocks.alerts import ACK_BUTTON_LABEL
from handlers.blocks.home import PAGINATION_LABELS
from handlers.blocks.loop import CONTACT_LABELS
from handlers.blocks.prompt import BUTTON_LABELS
from handlers.command_jobs import tell_user_of
from handlers.commands import JOB_KIND_PREFIX, SUBCOMMANDS
from handlers.home import send_directly
from handlers.ids import ONCALL_ACK

# The kind of the job that tells a dropped job's user (docs/reference/slack.md).
NOTICE_KIND = "handover_dropped_notice"

# The label of each button whose click is a job (handlers/clicks.py), as its user saw it.
CLICK_LABELS = {
    **BUTTON_LABELS,
    ONCALL_ACK: ACK_BUTTON_LABEL,
    **CONTACT_LABELS,
    **PAGINATION_LABELS,
}


def dropped_notice(job: ClaimedJob) -> NewJob | None:
    """The runner's `dropped_notice`: the job that tells the user of `job`, just dropped, what
    was not carried out; None for a job that names no user, or for a notice itself."""
    user = job.payload.get("user")
    if job.kind == NOTICE_KIND or not user:
        return None
    payload = {"user": user, "workspace": job.payload.get("workspace"), "text": notice_text(job)}
    return NewJob(kind=NOTICE_KIND, payload=payload)


class NoticeRefused(GiveUp):
    """Slack refused the notice for a reason no later attempt would change (the user cannot
    be reached, the token is refused, the request is malformed)."""


def notice_jobs(services: Services, client: WebClient) -> dict[str, JobWork]:
    """The notice's work, as its kind -> work: the DM, through the client of the dropped job's
    workspace (`client`: the home workspace's). A failure Slack may get over raises, for the
    runner to try again."""

    def tell(job: ClaimedJob) -> None:
        try:
            tell_user_of(services, client, job, str(job.payload["text"]), send=send_directly)
        except SlackTransientError:
            raise
        except SlackError as exc:
            raise NoticeRefused(f"Slack refused it for good ({exc.error})") from exc

    return {NOTICE_KIND: tell}


def notice_text(job: ClaimedJob) -> str:
    """What the user of a dropped job is told: what they did, when (UTC, as a late command's
    answer says), and to do it again."""
    if job.kind.startswith(JOB_KIND_PREFIX):
        name = job.kind.removeprefix(JOB_KIND_PREFIX)
        command = f"`/handover {name}`" if name in SUBCOMMANDS else "`/handover` command"
        issued = job.payload.get("issued_at")
        at = datetime.fromtimestamp(issued, UTC) if issued is not None else job.created_at
        return f"Your {command} of {at:%H:%M} UTC could not be carried out. Please type it again."
    label = CLICK_LABELS.get(job.kind)
    what = f"click on “{label}”" if label else "click"
    return (
        f"Your {what} at {job.created_at:%H:%M} UTC could not be carried out. "
        "Please click it again."
    )

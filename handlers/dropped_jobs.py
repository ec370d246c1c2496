"""Telling a professional that their click or slash command was not carried out: its job
failed every attempt and was dropped (bot/slackjobs/runner.py, `slack_job_dropped`).

Without this they would believe it worked. The notice is a private one in their DM with the
app (handlers/home.py's `tell_directly`: its notification names nothing); it names the button's
label or the subcommand and the minute, never a referral or anything typed (a close's
reason is the job's private part, erased with the drop).
"""

from __future__ import annotations

from datetime import UTC, datetime

from slack_sdk import WebClient

from bot.context import Services
from bot.slackjobs.queue import ClaimedJob
from bot.slackjobs.runner import DroppedNotice
from handlers.blocks.alerts import ACK_BUTTON_LABEL
from handlers.blocks.home import PAGINATION_LABELS
from handlers.blocks.loop import CONTACT_LABELS
from handlers.blocks.prompt import BUTTON_LABELS
from handlers.command_jobs import tell_user_of
from handlers.commands import JOB_KIND_PREFIX, SUBCOMMANDS
from handlers.ids import ONCALL_ACK

# The label of each button whose click is a job (handlers/clicks.py), as its user saw it.
CLICK_LABELS = {
    **BUTTON_LABELS,
    ONCALL_ACK: ACK_BUTTON_LABEL,
    **CONTACT_LABELS,
    **PAGINATION_LABELS,
}


def dropped_notice(services: Services, client: WebClient) -> DroppedNotice:
    """The runner's `tell_dropped`: a DM to the user of a dropped job, through the client of
    the job's workspace (`client`: the home workspace's)."""

    def tell(job: ClaimedJob) -> None:
        tell_user_of(services, client, job, notice_text(job))

    return tell


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

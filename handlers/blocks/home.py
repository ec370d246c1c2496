"""Block Kit for the App Home tab and for `/handover log` answers (pure builders).

Minimal data (docs/reference/slack.md): only referral IDs, case references, categories,
urgencies, times, targets and people's rota IDs appear; never a summary or anything a person
typed. Every view stays within Block Kit's limits: at most 100 blocks in a Home tab (50 in a
message), section text at most 3000 characters. Long lists are paginated (Home) or cut with a
pointer (messages).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from bot.delivery.kinds import OutboxKind, TargetState
from bot.services.coverage import (
    AGENCY_LABELS,
    COVERAGE_WORDS,
    STRATEGY_AGENCIES,
    Coverage,
    CoverageState,
)
from bot.services.home import (
    PROMPTS_PER_PAGE,
    REFERRALS_PER_PAGE,
    HomeContent,
    ManagerHome,
    MyReferral,
    ReferralRow,
)
from bot.services.logbook import (
    OpenPrompt,
    Overdue,
    ReferralHistory,
)
from handlers.blocks.parts import (
    SECTION_TEXT_LIMIT,
    actions_block,
    button,
    context_block,
    divider_block,
    header_block,
    section_block,
)
from handlers.blocks.prompt import (
    QUESTION,
    RESPONSE_LABELS,
    ReferralFacts,
    category_label,
    format_local,
    mrkdwn_escape,
    response_buttons,
    urgency_label,
)
from handlers.ids import HAS_INFO, NOT_KNOWN
from rota.escalation import BREACH, ESCALATE, ESCALATE_CHANNEL, REMIND

HOME_NEXT = "handover_home_next"
HOME_PREVIOUS = "handover_home_previous"
PAGINATION_ACTIONS = (HOME_NEXT, HOME_PREVIOUS)
PAGINATION_LABELS = {HOME_PREVIOUS: "Previous", HOME_NEXT: "Next"}

MAX_VIEW_BLOCKS = 100
MAX_MESSAGE_BLOCKS = 50
MAX_OVERDUE_LINES = 15
MAX_OWN_PROMPTS_FOR_MANAGER = 5
MAX_MESSAGE_SECTIONS = 40

# An overdue prompt's latest escalation step, as done and as due
STEP_DONE = {
    REMIND: "reminded",
    ESCALATE: "escalated",
    ESCALATE_CHANNEL: "escalation channel",
    BREACH: "breached",
}
STEP_DUE = {
    REMIND: "reminder due",
    ESCALATE: "escalation due",
    ESCALATE_CHANNEL: "escalation channel due",
    BREACH: "breach due",
}

# A screen reader reads the words: the icon is never the only sign of a state.
COVERAGE_ICONS = {
    CoverageState.COVERED: "✅",
    CoverageState.PENDING: "⏳",
    CoverageState.MISSED: "🚫",
    CoverageState.NOT_ASKED: "❌",
}
COVERAGE_KEY = "coverage: " + ", ".join(
    f"{COVERAGE_ICONS[s]} {COVERAGE_WORDS[s]}" for s in CoverageState
)


def pack_lines(lines: Iterable[str], limit: int = SECTION_TEXT_LIMIT) -> list[str]:
    """Join lines into as few texts as possible, each at most `limit` characters."""
    texts: list[str] = []
    current = ""
    for line in lines:
        line = line[:limit]
        if current and len(current) + 1 + len(line) > limit:
            texts.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current:
        texts.append(current)
    return texts


def coverage_line(coverage: Coverage) -> str:
    """'Social care ✅ covered · Police ⏳ pending · Health 🚫 missed', then the gaps in bold."""
    parts = [
        f"{AGENCY_LABELS[a]} {COVERAGE_ICONS[coverage.states[a]]} "
        f"{COVERAGE_WORDS[coverage.states[a]]}"
        for a in STRATEGY_AGENCIES
    ]
    line = " · ".join(parts)
    if coverage.gaps:
        missing = ", ".join(
            f"{AGENCY_LABELS[a].lower()} {COVERAGE_WORDS[coverage.states[a]]}"
            for a in coverage.gaps
        )
        line += f"  :warning: *Gap: {missing}*"
    return line


# A target's state in words (docs/reference/slack.md): what a screen reader reads.
TARGET_STATE_WORDS = {
    TargetState.HELD: "waiting for their working day",
    TargetState.PROMPTED: "asked, no answer yet",
    TargetState.ESCALATED: "asked, escalated, no answer yet",
    TargetState.FAILED: "could not be reached",
    TargetState.UNROUTABLE: "nobody to ask within 7 days",
    TargetState.CANCELLED: "cancelled",
    TargetState.ACKNOWLEDGED: "acknowledged, no answer yet",
    TargetState.HAS_INFORMATION: "holds information",
    TargetState.NOT_KNOWN: "not known to them",
    TargetState.REDIRECTED: "redirected to a colleague",
}
CONTACT_WORDS = {
    "awaiting": "contact not yet confirmed",
    "confirmed": "contact made",
    "missed": "contact missed",
}


def target_state_words(state: str) -> str:
    """A target's state for people: 'holds information'."""
    return TARGET_STATE_WORDS.get(state, state.replace("_", " "))


def my_referral_text(row: MyReferral, tz: ZoneInfo) -> str:
    """A referral the person made: its line, coverage, each target's state and the offers."""
    lines = [referral_line(row.facts, tz), coverage_line(row.coverage)]
    lines += [
        f"• `{mrkdwn_escape(target)}`: {target_state_words(state)}" for target, state in row.targets
    ]
    for offer in row.offers:
        lines.append(
            f":telephone_receiver: *{mrkdwn_escape(offer.name)}* offered information, "
            f"{offer.method.replace('_', ' ')} by {format_local(offer.contact_by, tz)} "
            f"({CONTACT_WORDS.get(offer.state, offer.state)})"
        )
    return "\n".join(lines)


def my_referral_blocks(rows: Sequence[MyReferral], tz: ZoneInfo) -> list[dict[str, Any]]:
    """'Referrals you made': each with its targets' states and who offered information."""
    if not rows:
        return []
    blocks: list[dict[str, Any]] = [header_block(f"Referrals you made ({len(rows)} open)")]
    blocks += [
        section_block(my_referral_text(r, tz), block_id=f"home_mine_{r.facts.referral_id}")
        for r in rows
    ]
    return blocks


def referral_line(facts: ReferralFacts, tz: ZoneInfo) -> str:
    """'*HO-ABC123* · `LCS-1` · Domestic abuse · URGENT · received Sat 14 Nov 2026 02:10 GMT'."""
    return (
        f"*{facts.referral_id}* · `{mrkdwn_escape(facts.external_ref)}` · "
        f"{category_label(facts.category)} · {urgency_label(facts.urgency)} · "
        f"received {format_local(facts.received_at, tz)}"
    )


def overdue_line(item: Overdue, tz: ZoneInfo) -> str:
    """One overdue target: referral, target, recipient, and the latest escalation step taken
    (or, before any, the next one due)."""
    who = f" → `{mrkdwn_escape(item.recipient_id)}`" if item.recipient_id else ""
    if item.state == TargetState.HELD:
        what = f"not sent, due {format_local(item.since, tz)}"
    elif item.state == TargetState.FAILED:
        what = f"could not be delivered, due {format_local(item.since, tz)}"
    elif item.last_step is not None and item.last_step_at is not None:
        what = f"no response, {STEP_DONE[item.last_step]} {format_local(item.last_step_at, tz)}"
    elif item.next_step is not None and item.next_step_at is not None:
        what = f"no response, {STEP_DUE[item.next_step]} {format_local(item.next_step_at, tz)}"
    else:
        what = f"no response, reminder due {format_local(item.since, tz)}"
    return f":alarm_clock: *{item.referral_id}* `{mrkdwn_escape(item.target)}`{who}: {what}"


def build_pagination(page: int, pages: int, what: str) -> list[dict[str, Any]]:
    """'Page 2 of 5' and Previous/Next buttons (none when everything fits one page)."""
    if pages <= 1:
        return []
    buttons = []
    if page > 1:
        buttons.append(button(HOME_PREVIOUS, PAGINATION_LABELS[HOME_PREVIOUS], str(page - 1)))
    if page < pages:
        buttons.append(button(HOME_NEXT, PAGINATION_LABELS[HOME_NEXT], str(page + 1)))
    return [
        context_block(f"{what}: page {page} of {pages}"),
        actions_block(buttons, "home_pagination"),
    ]


def _overdue_blocks(overdue: Sequence[Overdue], tz: ZoneInfo) -> list[dict[str, Any]]:
    if not overdue:
        return [section_block(":white_check_mark: Nothing is overdue.")]
    lines = [overdue_line(o, tz) for o in overdue[:MAX_OVERDUE_LINES]]
    if len(overdue) > MAX_OVERDUE_LINES:
        lines.append(
            f"…and {len(overdue) - MAX_OVERDUE_LINES} more: `/handover log overdue` lists them all."
        )
    return [section_block(text) for text in pack_lines(lines)[:3]]


def prompt_blocks(prompt: OpenPrompt, tz: ZoneInfo) -> list[dict[str, Any]]:
    """A section naming an open prompt and the four response buttons (value: the prompt id);
    once acknowledged, only "I hold information" and "Not known to us" remain."""
    facts = ReferralFacts.of(prompt.referral)
    seen = " You acknowledged it: please answer." if prompt.acknowledged else ""
    text = (
        f"{referral_line(facts, tz)}\n"
        f"Asked of `{mrkdwn_escape(prompt.target)}` at {format_local(prompt.sent_at, tz)}. "
        f"{QUESTION}{seen}"
    )
    buttons = response_buttons(prompt.prompt_id)
    if prompt.acknowledged:
        buttons = [b for b in buttons if b["action_id"] in (HAS_INFO, NOT_KNOWN)]
    return [section_block(text), actions_block(buttons, f"home_prompt_{prompt.prompt_id}")]


def _home(blocks: list[dict[str, Any]], page: int) -> dict[str, Any]:
    assert len(blocks) <= MAX_VIEW_BLOCKS, "the Home view has too many blocks"
    return {
        "type": "home",
        "callback_id": "handover_home",
        "private_metadata": str(page),
        "blocks": blocks,
    }


def build_manager_home(
    *,
    referrals: Sequence[ReferralRow],
    total_open: int,
    overdue: Sequence[Overdue],
    own_prompts: Sequence[OpenPrompt],
    page: int,
    pages: int,
    tz: ZoneInfo,
    now: datetime,
    my_referrals: Sequence[MyReferral] = (),
    everything: bool = True,
) -> dict[str, Any]:
    """A manager's Home: what is overdue, then one page of open referrals with their coverage
    (those concerning their teams, or all of them for `oversight`)."""
    which = "" if everything else " concerning your teams"
    blocks: list[dict[str, Any]] = [
        header_block("Handover: referrals"),
        context_block(
            f"{total_open} open referral{'s' if total_open != 1 else ''}{which} · "
            f"{len(overdue)} overdue · updated {format_local(now, tz)} · "
            f"{COVERAGE_KEY}"
        ),
    ]
    if own_prompts:
        blocks.append(header_block("Waiting for your answer"))
        for prompt in own_prompts[:MAX_OWN_PROMPTS_FOR_MANAGER]:
            blocks.extend(prompt_blocks(prompt, tz))
        if len(own_prompts) > MAX_OWN_PROMPTS_FOR_MANAGER:
            more = len(own_prompts) - MAX_OWN_PROMPTS_FOR_MANAGER
            blocks.append(context_block(f"…and {more} more in your direct messages."))
    blocks.append(header_block(f"Overdue ({len(overdue)})"))
    blocks.extend(_overdue_blocks(overdue, tz))
    blocks.append(divider_block())
    blocks.append(header_block(f"Open referrals ({total_open})"))
    if not referrals:
        blocks.append(section_block("No open referrals."))
    for row in referrals[:REFERRALS_PER_PAGE]:
        text = f"{referral_line(row.facts, tz)}\n{coverage_line(row.coverage)}"
        if row.overdue:
            text += f"\n:alarm_clock: {row.overdue} overdue"
        blocks.append(section_block(text, block_id=f"home_referral_{row.facts.referral_id}"))
    blocks.extend(build_pagination(page, pages, "Open referrals"))
    blocks.extend(my_referral_blocks(my_referrals, tz))
    return _home(blocks, page)


def build_professional_home(
    *,
    prompts: Sequence[OpenPrompt],
    total: int,
    page: int,
    pages: int,
    tz: ZoneInfo,
    my_referrals: Sequence[MyReferral] = (),
) -> dict[str, Any]:
    """A professional's Home: their own unanswered prompts, each with the four buttons."""
    blocks: list[dict[str, Any]] = [
        header_block("Handover: waiting for your answer"),
        context_block(
            "Referrals you have been asked about and not yet answered. Only the referral "
            "ID, case reference, category and urgency are shown here; the record is in "
            "the case system."
        ),
    ]
    if not prompts:
        blocks.append(section_block(":white_check_mark: Nothing is waiting for your answer."))
    for prompt in prompts[:PROMPTS_PER_PAGE]:
        blocks.extend(prompt_blocks(prompt, tz))
    if total:
        blocks.append(context_block(f"{total} waiting in all."))
    blocks.extend(build_pagination(page, pages, "Your prompts"))
    blocks.extend(my_referral_blocks(my_referrals, tz))
    return _home(blocks, page)


def build_home(content: HomeContent, *, tz: ZoneInfo, now: datetime) -> dict[str, Any]:
    """The Home view of `bot.services.home.home_content`'s answer."""
    if content is None:
        return build_unknown_user_home()
    if isinstance(content, ManagerHome):
        return build_manager_home(
            referrals=content.referrals,
            total_open=content.total_open,
            overdue=content.overdue,
            own_prompts=content.own_prompts,
            page=content.page,
            pages=content.pages,
            tz=tz,
            now=now,
            my_referrals=content.my_referrals,
            everything=content.everything,
        )
    return build_professional_home(
        prompts=content.prompts,
        total=content.total,
        page=content.page,
        pages=content.pages,
        tz=tz,
        my_referrals=content.my_referrals,
    )


def build_unknown_user_home() -> dict[str, Any]:
    """The Home of a Slack user who is not in the rota."""
    return _home(
        [
            header_block("Handover"),
            section_block(
                "Handover prompts daytime professionals about out-of-hours safeguarding "
                "referrals, and shows managers what is open and overdue.\n\n"
                "You are not in the rota yet, so there is nothing here for you. If you should "
                "receive prompts, ask your team manager to add your Slack account to "
                "people.csv."
            ),
        ],
        1,
    )


# ----- /handover log answers (ephemeral messages: at most 50 blocks) ---------------------------


def _message_sections(lines: list[str], overflow: str) -> list[dict[str, Any]]:
    texts = pack_lines(lines)
    blocks = [section_block(t) for t in texts[:MAX_MESSAGE_SECTIONS]]
    if len(texts) > MAX_MESSAGE_SECTIONS:
        blocks.append(context_block(overflow))
    return blocks


def build_log_open_message(
    rows: Sequence[ReferralRow], total_open: int, tz: ZoneInfo
) -> list[dict[str, Any]]:
    """`/handover log open`: open referrals with their coverage."""
    blocks: list[dict[str, Any]] = [header_block(f"Open referrals ({total_open})")]
    if not rows:
        return [*blocks, section_block("No open referrals.")]
    lines = [f"{referral_line(r.facts, tz)}\n{coverage_line(r.coverage)}" for r in rows]
    blocks += _message_sections(lines, "More referrals are open: see the Handover Home tab.")
    if total_open > len(rows):
        blocks.append(context_block(f"Showing {len(rows)} of {total_open}: see the Home tab."))
    return blocks


def build_log_overdue_message(overdue: Sequence[Overdue], tz: ZoneInfo) -> list[dict[str, Any]]:
    """`/handover log overdue`: targets unanswered past their reminder, or never sent."""
    blocks: list[dict[str, Any]] = [header_block(f"Overdue ({len(overdue)})")]
    if not overdue:
        return [*blocks, section_block(":white_check_mark: Nothing is overdue.")]
    lines = [overdue_line(o, tz) for o in overdue]
    return blocks + _message_sections(lines, "More are overdue: run `handover log` for all.")


def _answer_text(kind: str) -> str:
    return RESPONSE_LABELS.get(kind, kind.replace("_", " ")).lower()


def build_log_referral_message(history: ReferralHistory, tz: ZoneInfo) -> list[dict[str, Any]]:
    """`/handover log REFERRAL_ID`: who was asked, when, who answered and who never did."""
    referral = history.referral
    facts = ReferralFacts.of(referral)
    blocks: list[dict[str, Any]] = [
        header_block(f"Referral {referral.referral_id} ({referral.status})"),
        section_block(f"{referral_line(facts, tz)}\n{coverage_line(history.coverage)}"),
    ]
    lines: list[str] = []
    never: list[str] = []
    for t in history.targets:
        name = f"`{mrkdwn_escape(t.target)}`"
        parts = [f"*{name}* ({target_state_words(t.state)})"]
        if not t.asked:
            if t.state == TargetState.HELD and t.due_at is not None:
                parts.append(f"not asked yet, due {format_local(t.due_at, tz)}")
            elif t.state == TargetState.UNROUTABLE:
                parts.append("unroutable: nobody to reach within 7 days")
            else:
                parts.append("not asked")
        for a in t.asked:
            to = f"`{mrkdwn_escape(a.recipient_id or a.address or '?')}`"
            late = " (late)" if a.late else ""
            kind = "asked" if a.kind == OutboxKind.PROMPT else a.kind.replace("_", " ")
            parts.append(f"{kind} {to} at {format_local(a.sent_at, tz)}{late}")
        for r in t.answers:
            behalf = f" for `{mrkdwn_escape(r.on_behalf_of)}`" if r.on_behalf_of else ""
            parts.append(
                f"{_answer_text(r.kind)} by `{mrkdwn_escape(r.responder_id)}`{behalf} "
                f"at {format_local(r.at, tz)}"
            )
        if t.never_answered:
            never.append(name)
        lines.append("\n    ".join(parts))
    blocks += _message_sections(lines, "More targets: run `handover log --referral` for all.")
    if never:
        blocks.append(section_block(f":warning: *Never answered:* {', '.join(never)}"[:3000]))
    offers = [
        f":telephone_receiver: `{mrkdwn_escape(o.professional_id)}` offered information, "
        f"{o.method.replace('_', ' ')} by {format_local(o.contact_by, tz)}: "
        f"{CONTACT_WORDS.get(o.state, o.state)}"
        + (f" (said by `{mrkdwn_escape(o.answered_by)}`)" if o.answered_by else "")
        for o in history.offers
    ]
    if offers:
        blocks += _message_sections(offers, "More offers: run `handover log --referral` for all.")
    return blocks[:MAX_MESSAGE_BLOCKS]

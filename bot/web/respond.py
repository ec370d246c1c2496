"""`GET|POST /respond/{token}`: the pages where people reached by email answer a prompt.

A link (bot.response_links) names one answer to one prompt for one person. GET shows the prompt
(its fields only, as the Slack prompt has them) and the form of that answer, exactly as Slack's
buttons and modals offer it; POST checks the form's CSRF token, records the answer through the
response service the Slack buttons use (the same authorisation), tells Slack (the EDT card and
any Slack copy of the prompt), and redirects (303) to the page that shows the answer. No page
needs JavaScript. Refusals: 404 a forged or altered link, 410 an expired one (both logged
`response_refused`), 400 a form without a valid CSRF token (logged), 403 someone not allowed
(logged by the service), 409 an answer already given (it shows who answered; logged) or a closed
referral, 422 a form error, 503 the database down. Every response carries SECURITY_HEADERS.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from bot.context import Services
from bot.delivery.kinds import ResponseKind
from bot.response_links import LINK_LIFETIME, LinkClaim, LinkRefused, ResponseLinks
from bot.services.directory import search_text
from bot.services.response_pages import colleagues, log_refused_link, someone
from bot.services.responses import ResponseOutcome, check_response, record_response
from handlers.blocks.prompt import (
    ANSWER_BY_ACTION,
    BUTTON_LABELS,
    QUESTION,
    RESPONSE_LABELS,
    category_label,
    format_local,
    urgency_label,
)
from handlers.blocks.response import METHOD_LABELS, slot_label
from rota.models import Person

logger = logging.getLogger(__name__)

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
}
# What each answer's page is called: the words of the Slack button that records it.
ANSWER_LABELS = {answer: BUTTON_LABELS[action] for action, answer in ANSWER_BY_ACTION.items()}
ANSWER_ORDER = tuple(ANSWER_BY_ACTION.values())

# The page for each way a link or a form is refused: (status, title, explanation).
REFUSALS: dict[str, tuple[int, str, str]] = {
    "forged": (
        404,
        "This link does not work",
        "Check that you opened the whole link from Handover's email. If it still does not "
        "work, answer in Slack, or phone the team that sent the referral.",
    ),
    "altered": (
        404,
        "This link does not work",
        "Check that you opened the whole link from Handover's email. If it still does not "
        "work, answer in Slack, or phone the team that sent the referral.",
    ),
    "expired": (
        410,
        "This link has expired",
        "Links work until 7 days after the time the prompt asked for an answer by. If you "
        "hold information about this child or family, phone the team that sent the referral.",
    ),
    "csrf": (
        400,
        "This form has expired",
        "Forms work for 12 hours after they are opened. Nothing was recorded: open the form "
        "again and answer once more.",
    ),
    "not_found": (
        404,
        "This prompt is no longer in Handover",
        "Nothing was recorded. Phone the team that sent the referral if you hold information.",
    ),
    "closed": (
        409,
        "This referral is closed",
        "Nothing more is needed from you: the referral was closed after your email was sent.",
    ),
    "unavailable": (
        503,
        "Handover is unavailable",
        "Nothing was recorded. Please try again in a few minutes.",
    ),
}

AfterResponse = Callable[[ResponseOutcome], None]


def _no_follow_up(outcome: ResponseOutcome) -> None:
    """Nothing to tell: no Slack app in this process."""


def create_respond_blueprint(
    services: Services, links: ResponseLinks, *, after_response: AfterResponse = _no_follow_up
) -> Blueprint:
    """The response pages, reading links signed by `links`."""
    pages = Blueprint(
        "respond",
        __name__,
        url_prefix="/respond",
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    settings, factory, clock = services.settings, services.session_factory, services.clock
    tz = settings.timezone

    @pages.after_request
    def secured(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        return response

    def claim_of(token: str, now: datetime) -> LinkClaim | Response:
        """The link's claim, or the page refusing it (the refusal logged)."""
        try:
            return links.read(token, now)
        except LinkRefused as refused:
            with factory.begin() as session:
                log_refused_link(session, refused.reason, now=now, claim=refused.claim)
            return refusal_page(refused.reason)

    @pages.get("/<token>")
    def show(token: str) -> Response | tuple[str, int]:
        now = clock.now()
        try:
            claim = claim_of(token, now)
            if isinstance(claim, Response):
                return claim
            with factory.begin() as session:
                outcome = check_response(
                    session,
                    claim.prompt_id,
                    _slack_id(session, claim.person_id),
                    claim.answer,
                    now=now,
                    settings=settings,
                    person_id=claim.person_id,
                )
                return outcome_page(session, token, claim, outcome, now, viewing=True)
        except SQLAlchemyError:
            logger.exception("response page: database unavailable")
            return refusal_page("unavailable")

    @pages.post("/<token>")
    def answer(token: str) -> Response | tuple[str, int]:
        now = clock.now()
        try:
            claim = claim_of(token, now)
            if isinstance(claim, Response):
                return claim
            if not links.form_token_ok(request.form.get("csrf_token"), token, now):
                with factory.begin() as session:
                    log_refused_link(session, "csrf", now=now, claim=claim)
                return refusal_page("csrf", again=url_for("respond.show", token=token))
            answers = _answers(claim.answer)
            with factory.begin() as session:
                outcome = record_response(
                    session,
                    claim.prompt_id,
                    _slack_id(session, claim.person_id),
                    claim.answer,
                    now=now,
                    settings=settings,
                    person_id=claim.person_id,
                    **answers,
                )
                if outcome.status in ("already", "closed", "not_found"):
                    reason = {"already": "already answered", "closed": "referral closed"}
                    log_refused_link(
                        session,
                        reason.get(outcome.status, "prompt not found"),
                        now=now,
                        claim=claim,
                    )
                if outcome.status != "recorded":
                    return outcome_page(session, token, claim, outcome, now, posted=answers)
        except SQLAlchemyError:
            logger.exception("response page: database unavailable; nothing recorded")
            return refusal_page("unavailable")
        try:
            after_response(outcome)
        except Exception:
            # The answer is committed; Slack catches up when the card is next redrawn.
            logger.exception("could not show an email answer in Slack")
        return redirect(url_for("respond.show", token=token), code=303)

    def outcome_page(
        session: Any,
        token: str,
        claim: LinkClaim,
        outcome: ResponseOutcome,
        now: datetime,
        *,
        viewing: bool = False,
        posted: dict[str, str | None] | None = None,
    ) -> Response | tuple[str, int]:
        """The page for what the service said: the form, the answer given, or a refusal."""
        if outcome.status == "refused":
            return page(
                "respond/message.html",
                403,
                title="You cannot answer this prompt",
                text=outcome.reason,
            )
        if outcome.status in ("closed", "not_found"):
            status, title, text = REFUSALS[outcome.status]
            return page("respond/message.html", 200 if viewing else status, title=title, text=text)
        if outcome.status == "already":
            return answered_page(session, claim, outcome, now, status=200 if viewing else 409)
        return form_page(session, token, claim, outcome, now, posted=posted)

    def common(claim: LinkClaim, outcome: ResponseOutcome, session: Any) -> dict[str, Any]:
        facts = outcome.referral
        assert facts is not None
        respond_by = claim.expires_at - LINK_LIFETIME
        return {
            "answer": claim.answer,
            "answer_label": ANSWER_LABELS[claim.answer],
            "question": QUESTION,
            "referral_id": facts.referral_id,
            "facts": [
                ("Referral", facts.referral_id),
                ("Case reference", facts.external_ref),
                ("Category", category_label(facts.category)),
                ("Urgency", urgency_label(facts.urgency)),
                ("Referred at", format_local(facts.referred_at, tz)),
                ("Received", format_local(facts.received_at, tz)),
                ("Please respond by", format_local(respond_by, tz)),
            ],
            "you": someone(session, claim.person_id),
        }

    def form_page(
        session: Any,
        token: str,
        claim: LinkClaim,
        outcome: ResponseOutcome,
        now: datetime,
        *,
        posted: dict[str, str | None] | None,
    ) -> tuple[str, int]:
        posted = posted or {}
        context = common(claim, outcome, session)
        errors = dict(outcome.field_errors)
        if claim.answer == ResponseKind.HAS_INFORMATION:
            slots = outcome.contact_slots or tuple(
                check_response(
                    session,
                    claim.prompt_id,
                    "",
                    claim.answer,
                    now=now,
                    settings=settings,
                    person_id=claim.person_id,
                ).contact_slots
            )
            context["slots"] = [(s.isoformat(), slot_label(s, now, tz)) for s in slots]
            context["methods"] = list(METHOD_LABELS.items())
        if claim.answer == ResponseKind.REDIRECTED:
            query = search_text(request.args.get("q"))
            context["query"] = query
            context["colleagues"] = colleagues(session, claim.person_id, query)
        others = [
            (ANSWER_LABELS[other], links.token(replace(claim, answer=other)))
            for other in ANSWER_ORDER
            if other != claim.answer
        ]
        return page(
            "respond/form.html",
            422 if errors else 200,
            **context,
            csrf_token=links.form_token(token, now),
            errors=errors,
            posted=posted,
            others=others,
        )

    def answered_page(
        session: Any, claim: LinkClaim, outcome: ResponseOutcome, now: datetime, *, status: int
    ) -> tuple[str, int]:
        earlier = outcome.earlier
        context = common(claim, outcome, session)
        if earlier is None:
            return page("respond/message.html", status, title="Answered", text="")
        by = someone(session, earlier.responder_id)
        for_whom = someone(session, earlier.on_behalf_of)
        return page(
            "respond/answered.html",
            status,
            **context,
            given=RESPONSE_LABELS.get(earlier.kind, earlier.kind),
            by=by,
            for_whom=for_whom,
            at=format_local(earlier.at, tz),
            yours=earlier.responder_id == claim.person_id,
        )

    def refusal_page(reason: str, again: str | None = None) -> Response:
        status, title, text = REFUSALS[reason]
        body, code = page("respond/message.html", status, title=title, text=text, again=again)
        return Response(body, status=code, mimetype="text/html")

    return pages


def page(template: str, status: int, **context: Any) -> tuple[str, int]:
    """A rendered page and its status."""
    return render_template(template, **context), status


def _slack_id(session: Any, person_id: str) -> str:
    """The person's Slack ID when they have one (how Slack then shows who answered)."""
    person = session.get(Person, person_id)
    return (person.slack_user_id or "") if person is not None else ""


def _answers(answer: ResponseKind) -> dict[str, str | None]:
    """The form's fields for an answer, as the response service takes them."""
    form = request.form
    if answer == ResponseKind.HAS_INFORMATION:
        return {"contact_by": form.get("contact_by") or None, "method": form.get("method") or None}
    if answer == ResponseKind.REDIRECTED:
        return {"colleague": form.get("colleague") or None}
    return {}

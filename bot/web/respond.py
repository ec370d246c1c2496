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

A contact check (docs/closing-the-loop.md) is answered by the same links and the same pages:
its two answers ("Yes, contact made", "No, contact missed") are recorded through
`bot.services.loop.record_contact`, the service the Slack buttons use, with the same refusals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from flask import Blueprint, Response, redirect, render_template, request, url_for
from sqlalchemy.exc import SQLAlchemyError

from bot.context import Services
from bot.delivery.actions import RESPONSE_KIND_BY_ACTION
from bot.delivery.kinds import ResponseKind
from bot.models import ContactFollowup, ContactState
from bot.response_links import (
    LINK_LIFETIME,
    ContactAnswer,
    LinkClaim,
    LinkRefused,
    ResponseLinks,
)
from bot.services.directory import search_text
from bot.services.loop import ContactOutcome, record_contact
from bot.services.response_pages import colleagues, log_refused_link, someone
from bot.services.responses import ResponseOutcome, check_response, record_response
from handlers.blocks.prompt import (
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
ANSWER_LABELS = {
    answer: BUTTON_LABELS[action] for action, answer in RESPONSE_KIND_BY_ACTION.items()
}
ANSWER_ORDER = tuple(RESPONSE_KIND_BY_ACTION.values())
# The contact check's answers, in the words of its Slack buttons (handlers/blocks/loop.py).
CONTACT_LABELS = {
    ContactAnswer.MADE: "Yes, contact made",
    ContactAnswer.MISSED: "No, contact missed",
}
CONTACT_QUESTION = "Did the contact happen?"

_BROKEN_LINK = (
    404,
    "This link does not work",
    "Check that you opened the whole link from Handover's email. If it still does not "
    "work, answer in Slack, or phone the team that sent the referral.",
)
# The page for each way a link, a form or an answer is refused: (status, title, explanation).
REFUSALS: dict[str, tuple[int, str, str]] = {
    "forged": _BROKEN_LINK,
    "altered": _BROKEN_LINK,
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
    # The response service says why (its reason is the page's text).
    "refused": (403, "You cannot answer this prompt", ""),
    "contact_refused": (
        403,
        "You cannot answer this contact check",
        "Only the referrer, the daytime social-care team and oversight may say whether this "
        "contact happened. Nothing was recorded.",
    ),
}
# How the log names an answer refused once its link was read (the services log who may not).
LOGGED_REFUSALS = {
    "already": "already answered",
    "closed": "referral closed",
    "not_found": "prompt not found",
}
LOGGED_CONTACT_REFUSALS = {"already": "already answered", "not_found": "contact check not found"}

AfterResponse = Callable[[ResponseOutcome], None]
T = TypeVar("T")


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

    def ask(
        service: Callable[..., T],
        session: Any,
        claim: LinkClaim,
        answer: Any,
        now: datetime,
        **form: Any,
    ) -> T:
        """`service` (check_response, record_response, record_contact) asked about the link's
        prompt or contact check for the link's person: the call a Slack click makes."""
        return service(
            session,
            claim.prompt_id,
            _slack_id(session, claim.person_id),
            answer,
            now=now,
            settings=settings,
            person_id=claim.person_id,
            **form,
        )

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
            if claim.is_contact:
                with factory.begin() as session:
                    return contact_page(session, token, claim, now, status=200)
            with factory.begin() as session:
                outcome = ask(check_response, session, claim, claim.answer, now)
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
            if claim.is_contact:
                return answer_contact(token, claim, now)
            answers = _answers(claim.answer)
            with factory.begin() as session:
                outcome = ask(record_response, session, claim, claim.answer, now, **answers)
                if outcome.status in LOGGED_REFUSALS:
                    log_refused_link(session, LOGGED_REFUSALS[outcome.status], now=now, claim=claim)
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
            return refusal("refused", text=outcome.reason)
        if outcome.status in ("closed", "not_found"):
            return refusal(outcome.status, status=200 if viewing else None)
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
                ask(check_response, session, claim, claim.answer, now).contact_slots
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

    def answer_contact(token: str, claim: LinkClaim, now: datetime) -> Response | tuple[str, int]:
        """Record a contact check's answer as its Slack button does; 303 to the page."""
        made = claim.answer == ContactAnswer.MADE
        with factory.begin() as session:
            outcome = ask(record_contact, session, claim, made, now)
            if outcome.status in LOGGED_CONTACT_REFUSALS:
                reason = LOGGED_CONTACT_REFUSALS[outcome.status]
                log_refused_link(session, reason, now=now, claim=claim)
            if outcome.status == "refused":
                return refusal("contact_refused")
            if outcome.status == "not_found":
                return refusal("not_found")
            if outcome.status == "already":
                return contact_page(session, token, claim, now, status=409, outcome=outcome)
        return redirect(url_for("respond.show", token=token), code=303)

    def contact_page(
        session: Any,
        token: str,
        claim: LinkClaim,
        now: datetime,
        *,
        status: int,
        outcome: ContactOutcome | None = None,
    ) -> tuple[str, int]:
        """The contact check: its form, or the answer it has (who gave it and when)."""
        followup = session.get(ContactFollowup, claim.prompt_id)
        if followup is None:
            return refusal("not_found", status=200 if status == 200 else None)
        assert isinstance(claim.answer, ContactAnswer)
        context: dict[str, Any] = {
            "answer": claim.answer,
            "answer_label": CONTACT_LABELS[claim.answer],
            "question": CONTACT_QUESTION,
            "referral_id": followup.referral_id,
            "facts": [
                ("Referral", followup.referral_id),
                ("Who promised", _label(someone(session, followup.professional_id))),
                ("How", METHOD_LABELS.get(followup.method, followup.method)),
                ("Promised by", format_local(followup.contact_by, tz)),
            ],
            "you": someone(session, claim.person_id),
        }
        if followup.state != ContactState.AWAITING:
            return page(
                "respond/contact.html",
                status,
                **context,
                given=CONTACT_LABELS[
                    ContactAnswer.MADE
                    if followup.state == ContactState.CONFIRMED
                    else ContactAnswer.MISSED
                ],
                by=someone(session, followup.answered_by),
                at=format_local(followup.answered_at, tz) if followup.answered_at else "",
                yours=followup.answered_by == claim.person_id and outcome is None,
            )
        other = next(a for a in ContactAnswer if a != claim.answer)
        return page(
            "respond/contact.html",
            status,
            **context,
            csrf_token=links.form_token(token, now),
            others=[(CONTACT_LABELS[other], links.token(replace(claim, answer=other)))],
        )

    def refusal_page(reason: str, again: str | None = None) -> Response:
        body, code = refusal(reason, again=again)
        return Response(body, status=code, mimetype="text/html")

    return pages


def page(template: str, status: int, **context: Any) -> tuple[str, int]:
    """A rendered page and its status."""
    return render_template(template, **context), status


def refusal(
    reason: str, *, status: int | None = None, text: str | None = None, again: str | None = None
) -> tuple[str, int]:
    """The page of a refusal (REFUSALS), with another status or text when given."""
    code, title, explanation = REFUSALS[reason]
    return page(
        "respond/message.html",
        code if status is None else status,
        title=title,
        text=explanation if text is None else text,
        again=again,
    )


def _slack_id(session: Any, person_id: str) -> str:
    """The person's Slack ID when they have one (how Slack then shows who answered)."""
    person = session.get(Person, person_id)
    return (person.slack_user_id or "") if person is not None else ""


def _label(person: Any) -> str:
    return person.label if person is not None else ""


def _answers(answer: ResponseKind) -> dict[str, str | None]:
    """The form's fields for an answer, as the response service takes them."""
    form = request.form
    if answer == ResponseKind.HAS_INFORMATION:
        return {"contact_by": form.get("contact_by") or None, "method": form.get("method") or None}
    if answer == ResponseKind.REDIRECTED:
        return {"colleague": form.get("colleague") or None}
    return {}

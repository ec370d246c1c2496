"""The HTTP surface of `serve`: Slack's endpoint, the case-system API, the health check and,
with email reach, the response pages (`/respond/{token}`)."""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, jsonify, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from bot.context import Services
from bot.response_links import ResponseLinks
from bot.settings import SettingsError
from bot.web.api import create_api_blueprint
from bot.web.app import slack_follow_up
from bot.web.respond import create_respond_blueprint

logger = logging.getLogger(__name__)

SLACK_MAX_BODY = 1024 * 1024


def respond_pages(bolt_app: App, services: Services) -> Blueprint:
    """The email response pages, their links signed with a key derived from the signing secret."""
    settings = services.settings
    if not settings.slack_signing_secret or not settings.public_url:
        raise SettingsError("email needs SLACK_SIGNING_SECRET and HANDOVER_PUBLIC_URL")
    links = ResponseLinks(settings.slack_signing_secret, settings.public_url)
    follow_up = slack_follow_up(bolt_app.client, services)
    return create_respond_blueprint(services, links, after_response=follow_up)


def create_web_app(bolt_app: App, services: Services) -> Flask:
    """The Flask (WSGI) application served by waitress."""
    web = Flask("handover")
    web.config["MAX_CONTENT_LENGTH"] = SLACK_MAX_BODY
    slack_handler = SlackRequestHandler(bolt_app)

    @web.post("/slack/events")
    def slack_events():
        return slack_handler.handle(request)

    @web.get("/healthz")
    def healthz():
        try:
            with services.session_factory() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError:
            logger.exception("health check: database unreachable")
            return jsonify(status="unavailable", database="unreachable"), 503
        return jsonify(status="ok")

    web.register_blueprint(
        create_api_blueprint(services.settings, services.session_factory, services.clock)
    )
    if services.settings.email_enabled:
        web.register_blueprint(respond_pages(bolt_app, services))

    @web.errorhandler(404)
    def not_found(_error):
        return jsonify(error="not found"), 404

    @web.errorhandler(405)
    def method_not_allowed(_error):
        return jsonify(error="method not allowed"), 405

    @web.errorhandler(413)
    def too_large(_error):
        return jsonify(error="request too large"), 413

    @web.errorhandler(Exception)
    def unexpected(error: Exception):
        if isinstance(error, HTTPException):
            return jsonify(error=error.name.lower()), error.code
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal error"), 500

    return web

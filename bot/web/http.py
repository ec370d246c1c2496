"""The HTTP surface of `serve`: Slack's endpoint, the case-system API and the health check."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, request
from slack_bolt import App
from slack_bolt.adapter.flask import SlackRequestHandler
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from bot.context import Services
from bot.web.api import create_api_blueprint

logger = logging.getLogger(__name__)

SLACK_MAX_BODY = 1024 * 1024


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

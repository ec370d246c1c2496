"""Prompt buttons (acknowledge, has information, not known, redirect)."""

from __future__ import annotations

from slack_bolt import App

from bot.services import Services


def register(app: App, services: Services) -> None:
    """Listen for the prompt buttons."""

"""Handover: out-of-hours safeguarding handover bot for Slack."""

__version__ = "0.1.0"

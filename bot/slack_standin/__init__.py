"""A local stand-in for the Slack Web API, so tests and the demo run the real bot without Slack.

``SlackStandIn().start().url`` is the value for ``SLACK_API_URL`` and ``WebClient(base_url=...)``.
"""

from bot.slack_standin.model import ControlError, Fault, RateLimit, RecordedCall, StandInUser
from bot.slack_standin.server import SlackStandIn

__all__ = ["ControlError", "Fault", "RateLimit", "RecordedCall", "SlackStandIn", "StandInUser"]

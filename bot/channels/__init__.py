"""Ways of reaching people: the channel interface (`base`) and Slack (`slack`)."""

from __future__ import annotations

from slack_sdk import WebClient

from bot.channels.base import Channels
from bot.channels.slack import SlackChannel


def build_channels(client: WebClient) -> Channels:
    """The channels the dispatcher delivers through: Slack, for everyone and every room."""
    return Channels([SlackChannel(client)])

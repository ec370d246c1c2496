"""A response is shown on the target's messages in every workspace they are in, each through
that workspace's client, and the card's reply through the council's (docs/partner-workspaces.md).
Against the Slack stand-in with the council's workspace and a police force's."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from slack_sdk import WebClient

from bot.clock import FixedClock
from bot.context import Services
from bot.services.logbook import ReferralFacts
from bot.services.responses import ResponseOutcome
from bot.settings import Settings
from bot.slack_standin import SlackStandIn, StandInUser
from handlers.responses import _show_on_messages_and_card

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
POLICE = "T0POLICE"


def test_each_message_is_updated_in_its_own_workspace_naming_the_responder_as_it_can() -> None:
    with SlackStandIn(
        users=[StandInUser(id="U0EDTRAJ", name="raj")], channels=["C0EDTCARDS"], rate_limit=None
    ) as standin:
        standin.add_workspace(
            POLICE, users=[StandInUser(id="U0PCAHMED", name="ahmed")], token="xoxb-police"
        )
        home = WebClient(base_url=standin.url, token="xoxb-home")
        police = WebClient(base_url=standin.url, token="xoxb-police")
        prompt = police.chat_postMessage(channel="U0PCAHMED", text="prompt")
        reminder = home.chat_postMessage(channel="U0EDTRAJ", text="escalation")
        card = home.chat_postMessage(channel="C0EDTCARDS", text="card")
        services = Services(
            Settings(),
            None,  # type: ignore[arg-type]  (no database on this path)
            FixedClock(AT),
            slack_client_for=lambda workspace: police if workspace == POLICE else home,
        )
        outcome = ResponseOutcome(
            status="recorded",
            kind="acknowledged",
            slack_user_id="U0PCAHMED",
            at=AT,
            responder_id="pol-pc-ahmed",
            responder_slack_id="U0PCAHMED",
            target="person:pol-pc-ahmed",
            referral=ReferralFacts("HO-1ZF205", "LCS-1", "neglect", "standard", AT, AT),
            messages=(
                (prompt["channel"], prompt["ts"], POLICE),
                (reminder["channel"], reminder["ts"], None),
            ),
            card=(card["channel"], card["ts"]),
        )

        # Ahmed clicked in the police workspace: `police` is his request's client.
        _show_on_messages_and_card(police, outcome, services, (None, None), POLICE)

        updates = {c.args["channel"]: c for c in standin.calls("chat.update")}
        assert {ch: c.team_id for ch, c in updates.items()} == {
            prompt["channel"]: POLICE,
            reminder["channel"]: "T0STANDIN",
        }
        # A mention in his own workspace; his rota id in the council's, where it cannot resolve.
        assert "<@U0PCAHMED>" in json.dumps(updates[prompt["channel"]].args)
        assert "<@U0PCAHMED>" not in json.dumps(updates[reminder["channel"]].args)
        assert "`pol-pc-ahmed`" in json.dumps(updates[reminder["channel"]].args)
        [reply] = [c for c in standin.calls("chat.postMessage") if c.args.get("thread_ts")]
        assert (reply.team_id, reply.args["channel"]) == ("T0STANDIN", "C0EDTCARDS")

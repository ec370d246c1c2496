"""A local stand-in for Slack, so tests and the demo run the real bot without Slack.

``SlackStandIn().start().url`` is the value for ``SLACK_API_URL`` and ``WebClient(base_url=...)``.
It simulates the Web API methods the bot uses (checked against Slack's spec table), several
workspaces with their own bot tokens and people, OAuth v2 installs, Socket Mode, Slack's rate
limits, and delivery of events, slash commands and interactions to the app.

Modules, one job each: ``workspace`` (one team's state and methods), ``api`` (tokens, faults,
limits, recording: the Web API's front door), ``installs`` (tokens per workspace, OAuth codes),
``ratelimits`` (tiers and the workspace message limit), ``payloads`` (what Slack sends apps),
``people`` (people acting in Slack: commands, clicks, submissions, events),
``socket_mode`` (the WebSocket end), ``delivery`` (envelopes, acks, retries; Socket Mode or
Request URL), ``control`` (the control API), ``web`` (the HTTP front), ``server`` (the whole).

Control API (JSON, under ``control_url`` = ``http://HOST:PORT/_standin/``; 400 for bad input,
500 for a defect of the stand-in):

Inspection
  GET  calls[?method=M&team=T]        recorded calls (never the token or client secret)
  GET  calls/count                    how many calls were recorded so far
  GET  messages[?channel=C | ?user=U[&team=T]]   stored messages, oldest first
  GET  ephemerals[?user=U]  GET views  GET home?user=U  GET dm?user=U  GET text
  GET  responses[?name=N]             what the app posted to response URLs
  GET  rate_limits                    limits in force and ``ratelimited``: 429s per method
Setup
  POST users {"team"?, "users": [...]}      POST channels {"team"?, "channels": [...]}
  POST faults {kind, method, channel, count, status, seconds, retry_after, error,
               after_apply} | [...]
  DELETE faults      POST reset      POST response/NAME (a response_url)
  GET  holds         calls a `hold` fault holds back (listed until answered)
  POST holds/release  let them take effect and be answered
  POST rate_limit {"burst", "per_second"} | {"enabled": false}   chat.postMessage per channel
  POST rate_limits {"tiers": true, "methods": {M: {"per_minute", "burst"} | null},
                    "workspace": {"per_second", "burst"}, "workspace_methods": [...]}
                   | {"enabled": false}
  POST tokens {"revoke": "xoxb-…"} | {"bind": "xoxb-…", "team": "T…"}
Workspaces, OAuth and the app
  GET  workspaces     POST workspaces {"team_id", "name"?, "domain"?, "bot_user_id"?,
                                       "users"?, "channels"?, "token"?}
  POST workspaces/T…/uninstall        tokens revoked; tokens_revoked + app_uninstalled sent
  POST oauth/authorize {"team_id", "user"?, "scope"?, "redirect_uri"?}  -> {"code"}
  GET  /oauth/v2/authorize?client_id&scope&redirect_uri&state&team=T…[&user=U][&deny=1]
       (outside /_standin/) an admin approves: 302 to redirect_uri?code=…&state=…
  GET  app     POST app {"socket_mode"?: bool, "request_url"?, "signing_secret"?}
       Socket Mode on (apps.connections.open answers a URL), or HTTP delivery to the app
Delivering to the app (Socket Mode when on, else the Request URL; waits for the ack unless
"wait": false; answers {"envelope": {envelope_id, type, payload, state, attempts, ack, …}})
  POST deliver {"type": "events_api"|"slash_commands"|"interactive", "payload", "via"?}
  POST deliver/event {"user"?, "team"?, "event": {"type", …}}
  POST deliver/command {"user", "text"?, "channel"?, "command"?}
  POST deliver/click {"user", "action_id", "channel"?, "ts"?}
  POST deliver/view_submission {"user", "view_id", "values"}
  GET  envelopes[?state=S]    GET envelopes/ID
  GET  socket                 POST socket/disconnect {"reason"?, "close_after"?}
  POST socket/drop
"""

from bot.slack_standin.model import ControlError, Fault, RateLimit, RecordedCall, StandInUser
from bot.slack_standin.ratelimits import Limit, RateLimits
from bot.slack_standin.server import SlackStandIn

__all__ = [
    "ControlError",
    "Fault",
    "Limit",
    "RateLimit",
    "RateLimits",
    "RecordedCall",
    "SlackStandIn",
    "StandInUser",
]

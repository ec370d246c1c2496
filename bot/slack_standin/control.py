"""The JSON control API under ``/_standin/``: set the stand-in up, look inside, deliver to the app.

Every route is documented in the package docstring (``bot/slack_standin/__init__.py``) and in
docs/testing-with-the-standin.md. A route answers a dict (HTTP 200), ``None`` (404), or raises
ControlError (400).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bot.slack_standin.model import ControlError, Fault, RateLimit, StandInUser
from bot.slack_standin.ratelimits import RateLimits

if TYPE_CHECKING:
    from bot.slack_standin.server import SlackStandIn


def route(
    standin: SlackStandIn, verb: str, path: str, query: dict[str, str], body: Any
) -> dict[str, Any] | None:
    """Answer one control request (``path`` without the ``/_standin/`` prefix)."""
    for handler in (_inspection, _setup, _app_and_workspaces, _deliveries):
        answer = handler(standin, verb, path, query, body)
        if answer is not None:
            return answer
    return None


def _inspection(
    standin: SlackStandIn, verb: str, path: str, query: dict[str, str], body: Any
) -> dict[str, Any] | None:
    team = query.get("team") or None
    match (verb, path):
        case ("GET", "calls"):
            calls = standin.calls(query.get("method"))
            if team:
                calls = [c for c in calls if c.team_id == team]
            return {"ok": True, "calls": [c.to_dict() for c in calls]}
        case ("GET", "calls/count"):
            # How many calls so far, cheaply: a harness polls it to see Slack traffic stop.
            return {"ok": True, "count": standin.call_count()}
        case ("GET", "messages"):
            channel = query.get("channel")
            if not channel and query.get("user"):
                # A person's DM with the app, without knowing its channel ID.
                channel = standin.dm_channel_for(query["user"], team=team)
                if channel is None:
                    return {"ok": True, "messages": []}
            return {"ok": True, "messages": standin.messages(channel or None)}
        case ("GET", "ephemerals"):
            return {"ok": True, "ephemerals": standin.ephemerals(query.get("user"))}
        case ("GET", "views"):
            return {"ok": True, "views": standin.views()}
        case ("GET", "home"):
            return {"ok": True, "view": standin.home_view(_required(query, "user"), team=team)}
        case ("GET", "dm"):
            return {"ok": True, "channel": standin.dm_channel_for(_required(query, "user"), team)}
        case ("GET", "text"):
            return {"ok": True, "text": standin.all_text()}
        case ("GET", "faults"):
            return {"ok": True, "faults": standin.api.faults()}
        case ("GET", "holds"):
            return {"ok": True, "held": standin.held()}
        case ("GET", "responses"):
            return {"ok": True, "responses": standin.responses(query.get("name"))}
        case ("GET", "rate_limits"):
            return {"ok": True, **standin.rate_limits()}
    return None


def _setup(
    standin: SlackStandIn, verb: str, path: str, query: dict[str, str], body: Any
) -> dict[str, Any] | None:
    match (verb, path):
        case ("POST", "faults"):
            faults = [Fault.from_dict(item) for item in _items(body, "faults", "a fault")]
            for fault in faults:
                standin.inject(fault)
            return {"ok": True, "faults": standin.api.faults()}
        case ("DELETE", "faults"):
            standin.clear_faults()
            return {"ok": True}
        case ("POST", "holds/release"):
            return {"ok": True, "released": standin.release_holds()}
        case ("POST", "users"):
            users = [StandInUser.from_dict(item) for item in _items(body, "users", "a user")]
            standin.add_users(users, team=_team(body))
            return {"ok": True}
        case ("POST", "channels"):
            channels = body.get("channels") if isinstance(body, dict) else body
            if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
                raise ControlError("send {'channels': ['C…', …]}")
            standin.add_channels(channels, team=_team(body))
            return {"ok": True}
        case ("POST", "rate_limit"):
            if not isinstance(body, dict):
                raise ControlError("send {'enabled': false} or {'burst': 5, 'per_second': 1}")
            if body.get("enabled", True) is False:
                standin.set_rate_limit(None)
            else:
                standin.set_rate_limit(
                    RateLimit(
                        burst=int(body.get("burst", 5)),
                        per_second=float(body.get("per_second", 1.0)),
                    )
                )
            return {"ok": True}
        case ("POST", "rate_limits"):
            if not isinstance(body, dict):
                raise ControlError("send {'tiers': true, 'workspace': {'per_second': 10}}")
            if body.get("enabled", True) is False:
                standin.set_rate_limits(None)
            else:
                standin.set_rate_limits(RateLimits.from_dict(body))
            return {"ok": True, **standin.rate_limits()}
        case ("POST", "tokens"):
            if isinstance(body, dict) and isinstance(body.get("revoke"), str):
                standin.revoke_token(body["revoke"])
                return {"ok": True}
            if isinstance(body, dict) and isinstance(body.get("bind"), str):
                standin.api.installations.bind(body["bind"], _required(body, "team"))
                return {"ok": True}
            raise ControlError("send {'revoke': 'xoxb-…'} or {'bind': 'xoxb-…', 'team': 'T…'}")
        case ("POST", "reset"):
            standin.reset()
            return {"ok": True}
    if verb == "POST" and path.startswith("response/") and path != "response/":
        standin.api.record_response(path.removeprefix("response/"), body)
        return {"ok": True}
    return None


def _app_and_workspaces(
    standin: SlackStandIn, verb: str, path: str, query: dict[str, str], body: Any
) -> dict[str, Any] | None:
    match (verb, path):
        case ("GET", "app"):
            return {"ok": True, **standin.app_info()}
        case ("POST", "app"):
            data = _object(body)
            if "socket_mode" in data:
                standin.set_socket_mode(data["socket_mode"] is True)
            if "request_url" in data or "signing_secret" in data:
                standin.set_request_url(data.get("request_url"), data.get("signing_secret"))
            return {"ok": True, **standin.app_info()}
        case ("GET", "workspaces"):
            return {"ok": True, "workspaces": standin.workspaces()}
        case ("POST", "workspaces"):
            data = _object(body)
            allowed = {"team_id", "name", "domain", "bot_user_id", "bot_id", "users", "channels"}
            unknown = sorted(set(data) - allowed - {"token"})
            if unknown:
                raise ControlError(f"unknown workspace fields: {', '.join(unknown)}")
            users = [StandInUser.from_dict(u) for u in data.get("users") or []]
            workspace = standin.add_workspace(
                _required(data, "team_id"),
                name=data.get("name"),
                domain=data.get("domain"),
                bot_user_id=data.get("bot_user_id"),
                bot_id=data.get("bot_id"),
                users=users,
                channels=data.get("channels") or [],
                token=data.get("token"),
            )
            return {"ok": True, "workspace": workspace}
        case ("POST", "oauth/authorize"):
            data = _object(body)
            grant = standin.authorize(
                _required(data, "team_id"),
                user_id=data.get("user"),
                scope=data.get("scope"),
                user_scope=data.get("user_scope") or "",
                redirect_uri=data.get("redirect_uri"),
            )
            return {"ok": True, "code": grant.code, "team_id": grant.team_id}
    parts = path.split("/")
    if verb == "POST" and len(parts) == 3 and parts[0] == "workspaces" and parts[2] == "uninstall":
        return {"ok": True, "revoked": len(standin.uninstall(parts[1]))}
    return None


def _deliveries(
    standin: SlackStandIn, verb: str, path: str, query: dict[str, str], body: Any
) -> dict[str, Any] | None:
    data = body if isinstance(body, dict) else {}
    wait = data.get("wait", True) is not False
    via = data.get("via")
    match (verb, path):
        case ("POST", "deliver"):
            envelope = standin.deliver(
                str(_required(data, "type")), _payload(data), via=via, wait=wait
            )
            return {"ok": True, "envelope": envelope}
        case ("POST", "deliver/event"):
            event = data.get("event")
            if not isinstance(event, dict) or not isinstance(event.get("type"), str):
                raise ControlError("send {'user': 'U…', 'event': {'type': …}}")
            envelope = standin.deliver_event(
                event, user_id=data.get("user"), team=data.get("team"), via=via, wait=wait
            )
            return {"ok": True, "envelope": envelope}
        case ("POST", "deliver/command"):
            envelope = standin.deliver_command(
                _required(data, "user"),
                str(data.get("text") or ""),
                channel=data.get("channel"),
                command=str(data.get("command") or "/handover"),
                via=via,
                wait=wait,
            )
            return {"ok": True, "envelope": envelope}
        case ("POST", "deliver/click"):
            envelope = standin.click(
                _required(data, "user"),
                _required(data, "action_id"),
                channel=data.get("channel"),
                ts=data.get("ts"),
                via=via,
                wait=wait,
            )
            return {"ok": True, "envelope": envelope}
        case ("POST", "deliver/view_submission"):
            values = data.get("values")
            if not isinstance(values, dict):
                raise ControlError("send {'user': 'U…', 'view_id': 'V…', 'values': {…}}")
            envelope = standin.submit_view(
                _required(data, "user"), _required(data, "view_id"), values, via=via, wait=wait
            )
            return {"ok": True, "envelope": envelope}
        case ("GET", "envelopes"):
            return {"ok": True, "envelopes": standin.envelopes(query.get("state"))}
        case ("GET", "socket"):
            return {"ok": True, **standin.socket_info()}
        case ("POST", "socket/disconnect"):
            reason = str(data.get("reason") or "refresh_requested")
            close_after = data.get("close_after", 10.0)
            count = standin.socket_disconnect(
                reason, close_after=None if close_after is None else float(close_after)
            )
            return {"ok": True, "connections": count}
        case ("POST", "socket/drop"):
            return {"ok": True, "connections": standin.socket_drop()}
    if verb == "GET" and path.startswith("envelopes/"):
        return {"ok": True, "envelope": standin.envelope(path.removeprefix("envelopes/"))}
    return None


def _required(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not value or not isinstance(value, str):
        raise ControlError(f"'{name}' is required")
    return value


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ControlError("send a JSON object")
    return body


def _items(body: Any, key: str, what: str) -> list[dict[str, Any]]:
    items = body.get(key, [body]) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise ControlError(f"send {what} object, a list of them or {{'{key}': [...]}}")
    return items


def _team(body: Any) -> str | None:
    team = body.get("team") if isinstance(body, dict) else None
    if team is not None and not isinstance(team, str):
        raise ControlError("'team' is a team ID (T…)")
    return team


def _payload(data: dict[str, Any]) -> dict[str, Any]:
    payload = data.get("payload")
    if not isinstance(payload, dict):
        raise ControlError("'payload' must be a JSON object")
    return payload

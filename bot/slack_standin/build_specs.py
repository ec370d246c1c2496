"""Derive the stand-in's method table from Slack's OpenAPI spec.

Run ``python -m bot.slack_standin.build_specs SPEC_PATH`` and commit the ``methods.json`` it writes.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("methods.json")

# The methods the stand-in simulates. Every other method named by the spec answers
# ``not_implemented_in_standin``, so only these need their arguments in the table.
SIMULATED = (
    "apps.connections.open",
    "apps.uninstall",
    "auth.revoke",
    "auth.test",
    "chat.delete",
    "chat.getPermalink",
    "chat.postEphemeral",
    "chat.postMessage",
    "chat.update",
    "conversations.history",
    "conversations.open",
    "oauth.v2.access",
    "users.info",
    "users.lookupByEmail",
    "views.open",
    "views.publish",
    "views.push",
    "views.update",
)

# The spec was last refreshed in 2020: these arguments were added to Slack since and slack_sdk
# 3.x sends them, so the table would otherwise reject valid calls.
EXTRA_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "apps.connections.open": (),
    "chat.postMessage": ("metadata", "markdown_text", "container_id"),
    # Token rotation (slack_sdk sends these when refreshing a token).
    "oauth.v2.access": ("grant_type", "refresh_token"),
    "chat.update": ("metadata", "markdown_text", "file_ids", "reply_broadcast"),
    "chat.postEphemeral": ("markdown_text",),
    "conversations.history": ("include_all_metadata",),
    "conversations.open": ("prevent_creation",),
    "views.open": ("interactivity_pointer",),
    "views.push": ("interactivity_pointer",),
}

# The spec's ``required`` flags are unreliable (conversations.history marks nothing required,
# views.update marks nothing), so required arguments come from Slack's method pages instead.
REQUIRED_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "apps.connections.open": (),
    "apps.uninstall": (),
    "auth.revoke": (),
    "auth.test": (),
    "chat.delete": ("channel", "ts"),
    "chat.getPermalink": ("channel", "message_ts"),
    "chat.postEphemeral": ("channel", "user"),
    "chat.postMessage": ("channel",),
    "chat.update": ("channel", "ts"),
    "conversations.history": ("channel",),
    "conversations.open": (),
    "oauth.v2.access": (),
    "users.info": ("user",),
    "users.lookupByEmail": ("email",),
    "views.open": ("view",),
    "views.publish": ("user_id", "view"),
    "views.push": ("view",),
    "views.update": ("view",),
}

# Arguments where one of several names must be given.
REQUIRED_ONE_OF: dict[str, tuple[tuple[str, ...], ...]] = {
    "conversations.open": (("channel", "users"),),
    "views.open": (("trigger_id", "interactivity_pointer"),),
    "views.push": (("trigger_id", "interactivity_pointer"),),
    "views.update": (("view_id", "external_id"),),
}

# Accepted on every method: the token may ride as an argument, and Bolt's per-request client
# adds ``team_id`` to every call it makes.
GLOBAL_ARGUMENTS = ("token", "team_id")


def _spec_arguments(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p["name"] != "token"]


def build_table(spec: dict[str, Any]) -> dict[str, Any]:
    """Return the compact method table derived from the parsed OpenAPI document."""
    paths: dict[str, Any] = spec["paths"]
    known = sorted({path.strip("/") for path in paths} | set(SIMULATED))
    methods: dict[str, Any] = {}
    for name in SIMULATED:
        arguments: set[str] = set(EXTRA_ARGUMENTS.get(name, ()))
        # views.* are listed as GET in the spec; the verb does not matter, only the parameters.
        for operation in paths.get(f"/{name}", {}).values():
            arguments.update(_spec_arguments(operation))
        required = REQUIRED_ARGUMENTS[name]
        one_of = REQUIRED_ONE_OF.get(name, ())
        arguments.update(required)
        for group in one_of:
            arguments.update(group)
        methods[name] = {
            "arguments": sorted(arguments),
            "required": list(required),
            "one_of": [list(group) for group in one_of],
        }
    return {
        "source": (
            "slackapi/slack-api-specs@bc08db4 web-api/slack_web_openapi_v2_without_examples.json"
            " with the stand-in's own tables of newer and required arguments"
        ),
        "global_arguments": list(GLOBAL_ARGUMENTS),
        "known_methods": known,
        "methods": methods,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``methods.json`` from the spec at SPEC_PATH."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("spec_path", type=Path)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    spec = json.loads(args.spec_path.read_text(encoding="utf-8"))
    table = build_table(spec)
    args.output.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {args.output} ({len(table['known_methods'])} methods known)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""docs/reference names every external surface the code defines, and promises none it has built.

Operators and the acceptance tests outside this project read docs/reference (its README: "extend,
never rename"). Here the names are taken from the code itself: the `handover` parser, the
environment variables the bot reads, the Flask routes, the Slack identifiers of `handlers/` (and
of `bot/delivery/`: its buttons and message metadata) and the audit events of
`bot.models.AUDIT_EVENTS`.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.cli import build_parser
from bot.models import AUDIT_EVENTS

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference"
# Pages that may list what is promised but not built, under this heading, last.
PROMISE_PAGES = (*sorted(REFERENCE.glob("*.md")), ROOT / "docs" / "partner-workspaces.md")
BEING_BUILT = "## Contracted, being built"
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]*")
VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*")


def page(name: str) -> str:
    return (REFERENCE / name).read_text(encoding="utf-8")


def python_sources(*folders: str) -> Iterator[Path]:
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Each `handover` command path, with the long options of that command."""
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if path:
        yield path, options
    for action in subparsers:
        for name, child in action.choices.items():
            yield from commands(child, (*path, name))
    for action in parser._actions:  # a positional with choices (`log verify`)
        if path and not action.option_strings and action.choices and not subparsers:
            for choice in action.choices:
                yield (*path, choice), []


def environment_variables() -> set[str]:
    """The variables the bot (not its tests, nor the Slack stand-in) reads."""
    names: set[str] = set()
    for source in python_sources("bot"):
        if "slack_standin" in source.parts:
            continue
        names |= set(re.findall(r"\"((?:HANDOVER|SLACK)_[A-Z_]+)\"", source.read_text()))
    return names | {"DATABASE_URL", "PORT", "HOST", "LOG_LEVEL"}


def http_endpoints() -> set[tuple[str, str]]:
    """Each Flask route of `bot/web` as (method, path), the path as the reference writes it."""
    endpoints = set()
    for source in python_sources("bot/web"):
        text = source.read_text()
        prefix = re.search(r"url_prefix=\"([^\"]+)\"", text)
        for method, path in re.findall(r"@\w+\.(get|post)\(\s*\"([^\"]+)\"", text):
            full = (prefix.group(1) if prefix else "") + path
            endpoints.add((method.upper(), re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", full)))
    return endpoints


def http_routes() -> set[str]:
    return {path for _, path in http_endpoints()}


def slack_identifiers() -> set[str]:
    """action_ids, callback_ids, block_ids and metadata event types of the Slack surfaces (the
    buttons email answers too, and the event types, are delivery's)."""
    names = set()
    delivery = [ROOT / "bot" / "delivery" / name for name in ("actions.py", "metadata.py")]
    for source in (*python_sources("handlers"), *delivery):
        text = source.read_text()
        names |= set(re.findall(r"\"(handover_[a-z_]+)\"", text))
        for node in ast.parse(text).body:  # BLOCK_… and ACTION_… constants
            if (
                isinstance(node, ast.Assign)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
                and IDENTIFIER.fullmatch(node.value.value)
                and any(
                    isinstance(t, ast.Name) and t.id.startswith(("BLOCK_", "ACTION_"))
                    for t in node.targets
                )
            ):
                names.add(node.value.value)
    return names


def code_names() -> set[str]:
    names = environment_variables() | http_routes() | slack_identifiers() | set(AUDIT_EVENTS)
    names |= {f"{method} {path}" for method, path in http_endpoints()}
    for path, options in commands(build_parser()):
        names.add("handover " + " ".join(path))
        names |= {f"handover {' '.join(path)} {option}" for option in options}
    return names


def test_every_command_and_option_is_in_the_reference() -> None:
    text = page("commands.md")
    for path, options in commands(build_parser()):
        assert f"handover {' '.join(path)}" in text, path
        for option in options:
            if option != "--help":
                assert re.search(rf"{re.escape(option)}\b", text), (path, option)


def test_every_environment_variable_is_in_the_reference() -> None:
    text = page("configuration.md")
    missing = sorted(n for n in environment_variables() if f"`{n}`" not in text)
    assert missing == []


def test_every_http_route_is_in_the_reference() -> None:
    text = page("http.md")
    assert http_routes() >= {"/slack/events", "/healthz", "/api/referrals", "/respond/{token}"}
    missing = sorted(
        r for r in http_routes() if not re.search(rf"`(GET|POST)\S* {re.escape(r)}`", text)
    )
    assert missing == []


def test_every_slack_identifier_is_in_the_reference() -> None:
    text = page("slack.md")
    names = slack_identifiers()
    assert {"handover_ack", "handover_contact_made", "external_ref", "handover_home"} <= names
    missing = sorted(n for n in names if f"`{n}`" not in text)
    assert missing == []


def test_every_audit_event_is_in_the_reference() -> None:
    text = page("audit-events.md")
    missing = [e for e in AUDIT_EVENTS if not re.search(rf"^\| `{e}` \|", text, re.M)]
    assert missing == []


def promised(text: str) -> list[list[str]]:
    """The backquoted names of each item (a bullet, a table row) under the page's "being built"
    heading; none when the page has no such heading."""
    if BEING_BUILT not in text:
        return []
    section = text.split(BEING_BUILT, 1)[1].split("\n## ", 1)[0]
    items = re.split(r"\n(?=[-|] )", section)
    return [re.findall(r"`([^`]+)`", item) for item in items if item.startswith(("- ", "| "))]


def command_built(usage: str) -> bool:
    """Whether a promised command line (`handover rota check [--from TIME]`) is one the parser
    has, with every option it names."""
    words = usage.split()
    if words[:1] != ["handover"]:
        return False
    path: list[str] = []
    named: list[str] = []
    for word in (w.strip("[]()|\\") for w in words[1:]):
        if word.startswith("--"):
            named.append(word)
        elif re.fullmatch(r"[a-z][a-z-]*", word) and not named:
            path.append(word)
    known = dict(commands(build_parser()))
    return tuple(path) in known and all(o in known[tuple(path)] for o in named)


def built_already(text: str) -> list[str]:
    """The promised names the code defines. A variable counts only as the first name of its item
    (what the item promises); a promise may well mention a variable that exists."""
    names = code_names()
    return [
        name
        for item in promised(text)
        for place, name in enumerate(item)
        if (name in names and (place == 0 or not VARIABLE.fullmatch(name))) or command_built(name)
    ]


@pytest.mark.parametrize("source", PROMISE_PAGES, ids=lambda p: p.name)
def test_nothing_the_code_defines_is_still_promised_as_being_built(source: Path) -> None:
    built = built_already(source.read_text(encoding="utf-8"))
    assert built == [], f"{source.name}: built already, move into the page: {built}"


def test_a_built_name_under_the_heading_is_caught() -> None:
    text = (
        f"# Page\n\n{BEING_BUILT}\n\n| command | does |\n| --- | --- |\n"
        "| `handover log verify` | checks the chain |\n"
        "| `handover log rewind` | uses `HANDOVER_TIMEZONE`, logs `rota_imported` |\n"
        "| `handover rota ical (--role ROLE \\| --person ID) [--days N]` | a calendar |\n"
        "| `handover rota import --from-teams-app` | not an option yet |\n"
        "- `GET /healthz` answers 503 when not migrated\n"
        "- `HANDOVER_RETENTION_DAYS` erases old referrals\n\n## Next\n\n- `handover purge`\n"
    )
    assert built_already(text) == [
        "handover log verify",
        "rota_imported",
        "handover rota ical (--role ROLE \\| --person ID) [--days N]",
        "GET /healthz",
        "HANDOVER_RETENTION_DAYS",
    ]

"""An email made from a Slack message: its Block Kit read as plain text and as HTML.

The email is rendered from the very blocks the Slack message has, so it carries nothing the
Slack message does not (docs/information-governance.md): the referral ID, the case reference,
category, urgency, times and what is asked. Slack's mrkdwn becomes plain text and HTML (a
mention becomes the rota name of a colleague, never a Slack ID); each response button becomes a
link to the bot's response page (a prompt's answers and a contact check's alike); a button that
works only in Slack says so. The templates are Jinja2's (`bot/channels/templates/`), HTML
autoescaped.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

# Where a response button's link goes: (action_id, value) -> URL, or None (Slack only).
LinkFor = Callable[[str, str], str | None]
# A Slack user ID's rota name, or None.
NameOf = Callable[[str], str | None]

_TOKEN = re.compile(
    r"<(?P<ref>[^<>|\n]+)(?:\|(?P<label>[^<>\n]+))?>"
    r"|`(?P<code>[^`\n]+)`"
    r"|(?<![\w*])\*(?P<bold>[^*\n]+?)\*(?![\w*])"
    r"|(?<![\w_])_(?P<italic>[^_\n]+?)_(?![\w_])"
)

_env = Environment(
    loader=PackageLoader("bot.channels", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


@dataclass(frozen=True)
class Rich:
    """A piece of mrkdwn as plain text and as HTML."""

    text: str
    html: Markup


@dataclass(frozen=True)
class Link:
    """A response button as a link."""

    label: str
    url: str


@dataclass(frozen=True)
class Part:
    """One block of the email: heading, paragraph, fields, links or note."""

    kind: str
    rich: Rich | None = None
    fields: Sequence[tuple[Rich, Rich]] = ()
    links: Sequence[Link] = ()
    slack_only: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class RenderedEmail:
    """What the email says: its subject and its two bodies."""

    subject: str
    text: str
    html: str


def read_mrkdwn(source: str, name_of: NameOf) -> Rich:
    """Slack mrkdwn as plain text and HTML: bold, italic, code, mentions and links."""
    texts: list[str] = []
    markup: list[Markup] = []
    position = 0
    for match in _TOKEN.finditer(source):
        plain = html.unescape(source[position : match.start()])
        texts.append(plain)
        markup.append(escape(plain))
        text, marked = _token(match, name_of)
        texts.append(text)
        markup.append(marked)
        position = match.end()
    rest = html.unescape(source[position:])
    texts.append(rest)
    markup.append(escape(rest))
    joined = Markup("").join(markup).replace("\n", Markup("<br>\n"))
    return Rich("".join(texts), Markup(joined))


def _token(match: re.Match[str], name_of: NameOf) -> tuple[str, Markup]:
    if match.group("code") is not None:
        text = html.unescape(match.group("code"))
        return text, Markup("<code>{}</code>").format(text)
    if match.group("bold") is not None:
        inner = html.unescape(match.group("bold"))
        return inner, Markup("<strong>{}</strong>").format(inner)
    if match.group("italic") is not None:
        inner = html.unescape(match.group("italic"))
        return inner, Markup("<em>{}</em>").format(inner)
    ref, label = match.group("ref"), match.group("label")
    text = _reference(ref, label, name_of)
    if ref.startswith(("https://", "http://")):
        return text, Markup('<a href="{}">{}</a>').format(ref, text)
    return text, escape(text)


def _reference(ref: str, label: str | None, name_of: NameOf) -> str:
    """What a Slack reference reads as outside Slack."""
    if ref.startswith("@"):
        return name_of(ref[1:]) or "a colleague"
    if ref.startswith("#"):
        return f"#{label}" if label else "a team channel in Slack"
    if ref.startswith("!"):
        return label or f"@{ref[1:].split('^')[0]}"
    return html.unescape(label or ref)


def _text_of(element: Mapping[str, Any], name_of: NameOf) -> Rich:
    text = str(element.get("text") or "")
    if element.get("type") == "mrkdwn":
        return read_mrkdwn(text, name_of)
    return Rich(text, escape(text))


def _field(element: Mapping[str, Any], name_of: NameOf) -> tuple[Rich, Rich]:
    """A section field written '*Label*\\nValue' as (label, value)."""
    label, _, value = str(element.get("text") or "").partition("\n")
    kind = element.get("type")
    return (
        _text_of({"type": kind, "text": label.strip("*")}, name_of),
        _text_of({"type": kind, "text": value}, name_of),
    )


def read_blocks(
    blocks: Sequence[Mapping[str, Any]], link_for: LinkFor, name_of: NameOf
) -> Iterator[Part]:
    """The email's parts, block by block."""
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            yield Part("heading", _text_of(block.get("text") or {}, name_of))
        elif kind == "section":
            if block.get("text"):
                yield Part("paragraph", _text_of(block["text"], name_of))
            if block.get("fields"):
                yield Part("fields", fields=[_field(f, name_of) for f in block["fields"]])
        elif kind == "actions":
            links, slack_only = [], []
            for element in block.get("elements") or []:
                label = str((element.get("text") or {}).get("text") or "")
                url = link_for(str(element.get("action_id")), str(element.get("value") or ""))
                if url:
                    links.append(Link(label, url))
                else:
                    slack_only.append(label)
            yield Part("links", links=links, slack_only=slack_only)
        elif kind == "context":
            for element in block.get("elements") or []:
                if element.get("type") in ("mrkdwn", "plain_text"):
                    yield Part("note", _text_of(element, name_of))
        elif kind == "divider":
            yield Part("divider")


def render_email(
    text: str,
    blocks: Sequence[Mapping[str, Any]],
    *,
    link_for: LinkFor,
    name_of: NameOf,
    links_expire: str | None = None,
) -> RenderedEmail:
    """The email of a Slack message: its notification text is the subject (it names only the
    referral ID), its blocks the body; `links_expire` says until when the links work."""
    parts = list(read_blocks(blocks, link_for, name_of))
    context = {"subject": text, "parts": parts, "links_expire": links_expire}
    return RenderedEmail(
        subject=text,
        text=_env.get_template("email.txt").render(context),
        html=_env.get_template("email.html").render(context),
    )

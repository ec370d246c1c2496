"""What people saw in Slack during `handover demo`, rendered readably: as text and as HTML.

The demo records every Web API call the bot made to the Slack stand-in; this module turns those
calls into transcript entries (who saw what, when, in the simulated time) and draws them, never
as JSON. Emails (their plain-text part) and the bot's own web pages (read as text) are entries
too. Everything drawn in HTML passes through `html.escape`.
"""

from __future__ import annotations

import html
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo

from markupsafe import Markup

from bot.pages import render_transcript
from bot.services.report_page import ReportPage

# Slack emoji codes the bot uses, drawn as the characters Slack would show.
EMOJI = {
    "hourglass_flowing_sand": "\u23f3",
    "envelope": "\u2709\ufe0f",
    "white_check_mark": "\u2705",
    "information_source": "\u2139\ufe0f",
    "heavy_minus_sign": "\u2796",
    "arrow_right": "\u27a1\ufe0f",
    "arrow_up": "\u2b06\ufe0f",
    "rotating_light": "\U0001f6a8",
    "warning": "\u26a0\ufe0f",
    "x": "\u274c",
    "no_entry_sign": "\U0001f6ab",
    "grey_question": "\u2754",
    "telephone_receiver": "\U0001f4de",
    "bell": "\U0001f514",
    "alarm_clock": "\u23f0",
}

# Entry kinds, in the words of the transcript.
NARRATION = "narration"
MESSAGE = "message"
UPDATE = "update"
EPHEMERAL = "ephemeral"
MODAL = "modal"
HOME = "home"
NOTE = "note"  # something the bot did that nobody sees as a message (an email lookup)
EMAIL = "email"  # an email someone received (its plain text)
PAGE = "page"  # one of the bot's web pages as someone saw it (read as text)
CHECK = "check"  # the demo's own verdict

BODY_WIDTH = 96
_INDENT = " " * 18
_MENTION = re.compile(r"<([@#!])([A-Za-z0-9^_.:-]+)(?:\|([^>]*))?>")
_LINK = re.compile(r"<((?:https?|mailto):[^|>]+)(?:\|([^>]*))?>")
_EMOJI = re.compile(r":([a-z0-9_+-]+):")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_CODE = re.compile(r"`([^`\n]+)`")


@dataclass
class Directory:
    """Who a Slack user or channel ID is, for the reader."""

    people: dict[str, tuple[str, str]]  # slack user ID -> (name, person_id)
    channels: dict[str, str]  # channel ID -> "#name"
    dm_channels: dict[str, str] = field(default_factory=dict)  # D… -> user ID
    triggers: dict[str, str] = field(default_factory=dict)  # trigger_id -> user ID

    def person(self, user_id: str) -> str:
        """'Kiran Patel (hv-kpatel)' for a Slack user ID."""
        user_id = self.dm_channels.get(user_id, user_id)
        if user_id in self.people:
            name, person_id = self.people[user_id]
            return f"{name} ({person_id})"
        return user_id

    def short(self, user_id: str) -> str:
        """'Kiran Patel' for a Slack user ID."""
        user_id = self.dm_channels.get(user_id, user_id)
        return self.people[user_id][0] if user_id in self.people else user_id

    def channel(self, channel_id: str) -> str:
        """'#edt-referrals' for a channel ID."""
        return self.channels.get(channel_id, f"#{channel_id}")

    def is_person(self, channel_or_user: str) -> bool:
        """Whether the ID is a person's (or their DM with the app)."""
        return channel_or_user in self.people or channel_or_user in self.dm_channels


@dataclass
class Entry:
    """One thing in the transcript: a story beat, or what someone saw in Slack."""

    at: datetime
    kind: str
    audience: str  # "DM to Kiran Patel (hv-kpatel)", "#edt-referrals", or the narrator's text
    blocks: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""  # the notification text, or the narration
    title: str = ""  # a modal's or Home's title
    thread: bool = False
    ok: bool = True  # for CHECK entries


# ----- mrkdwn ----------------------------------------------------------------------------------


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _emoji(name: str) -> str:
    return EMOJI.get(name, f":{name}:")


def _mention_label(match: re.Match[str], directory: Directory) -> str:
    sigil, ident, label = match.group(1), match.group(2), match.group(3)
    if sigil == "@":
        return "@" + directory.short(ident)
    if sigil == "#":
        return f"#{label}" if label else directory.channel(ident)
    return "@" + (label or ident.split("^")[0])


def mrkdwn_to_text(text: str, directory: Directory) -> str:
    """Slack mrkdwn as plain text: mentions named, emoji drawn, formatting marks dropped."""
    text = _MENTION.sub(lambda m: _mention_label(m, directory), text)
    text = _LINK.sub(lambda m: m.group(2) or m.group(1), text)
    text = _CODE.sub(r"\1", text)
    text = _BOLD.sub(r"\1", text)
    text = _ITALIC.sub(r"\1", text)
    text = _STRIKE.sub(r"\1", text)
    return _unescape(_draw_emoji(text))


def mrkdwn_to_html(text: str, directory: Directory) -> str:
    """Slack mrkdwn as escaped HTML with bold, italic, code, mentions and emoji."""
    pieces: list[str] = []
    position = 0
    specials = re.compile(f"{_MENTION.pattern}|{_LINK.pattern}")
    out: list[str] = []
    for match in specials.finditer(text):
        pieces.append(text[position : match.start()])
        if match.group(1):  # a mention
            label = _mention_label(_MENTION.match(match.group(0)), directory)  # type: ignore[arg-type]
            token = f'<span class="mention">{html.escape(label)}</span>'
        else:
            link = _LINK.match(match.group(0))
            assert link is not None
            token = f"<u>{html.escape(_unescape(link.group(2) or link.group(1)))}</u>"
        out.append(token)
        pieces.append(f"\x00{len(out) - 1}\x00")
        position = match.end()
    pieces.append(text[position:])
    escaped = html.escape(_unescape("".join(pieces)))
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    escaped = _BOLD.sub(r"<b>\1</b>", escaped)
    escaped = _ITALIC.sub(r"<i>\1</i>", escaped)
    escaped = _STRIKE.sub(r"<s>\1</s>", escaped)
    escaped = _EMOJI.sub(lambda m: html.escape(_emoji(m.group(1))), escaped)
    escaped = re.sub("\x00(\\d+)\x00", lambda m: out[int(m.group(1))], escaped)
    return escaped.replace("\n", "<br>")


def _draw_emoji(text: str) -> str:
    return _EMOJI.sub(lambda m: _emoji(m.group(1)), text)


def _raw_text(obj: Any) -> tuple[str, bool]:
    """A text object's text and whether it is mrkdwn; ("", False) for anything else."""
    if not isinstance(obj, dict):
        return "", False
    return str(obj.get("text", "")), obj.get("type") == "mrkdwn"


def _text_of(obj: Any, directory: Directory) -> str:
    raw, is_mrkdwn = _raw_text(obj)
    return mrkdwn_to_text(raw, directory) if is_mrkdwn else _draw_emoji(raw)


def _html_of(obj: Any, directory: Directory) -> str:
    raw, is_mrkdwn = _raw_text(obj)
    if is_mrkdwn:
        return mrkdwn_to_html(raw, directory)
    return html.escape(_draw_emoji(raw)).replace("\n", "<br>")


# ----- entries from the stand-in's recorded calls ------------------------------------------


def _message_blocks(args: Mapping[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks")
    return list(blocks) if isinstance(blocks, list) else []


def _message_entry(
    at: datetime, kind: str, audience: str, message: Mapping[str, Any], thread: bool = False
) -> Entry:
    """The entry for a message's blocks and notification text."""
    return Entry(
        at=at,
        kind=kind,
        audience=audience,
        blocks=_message_blocks(message),
        text=str(message.get("text") or ""),
        thread=thread,
    )


def entry_for_call(
    method: str,
    args: Mapping[str, Any],
    response: Mapping[str, Any],
    at: datetime,
    directory: Directory,
) -> Entry | None:
    """The transcript entry for one Web API call, or None for calls nobody sees."""
    if not response.get("ok"):
        return Entry(
            at=at,
            kind=NOTE,
            audience=f"Slack refused {method}",
            text=f"{method} answered {response.get('error', 'an error')}",
        )
    if method == "chat.postMessage":
        channel = str(args.get("channel", ""))
        if directory.is_person(channel):
            audience = f"DM to {directory.person(channel)}"
        else:
            audience = directory.channel(channel)
        thread = bool(args.get("thread_ts"))
        if thread:
            audience = f"{audience}, reply in the card's thread"
        return _message_entry(at, MESSAGE, audience, args, thread=thread)
    if method == "chat.update":
        channel = str(args.get("channel", ""))
        where = (
            f"DM of {directory.person(channel)}"
            if directory.is_person(channel)
            else directory.channel(channel)
        )
        return _message_entry(at, UPDATE, f"{where}: message updated", args)
    if method == "chat.postEphemeral":
        where = directory.channel(str(args.get("channel", "")))
        audience = f"Only visible to {directory.person(str(args.get('user')))} in {where}"
        return _message_entry(at, EPHEMERAL, audience, args)
    if method in ("views.open", "views.push", "views.update"):
        view = args.get("view") if isinstance(args.get("view"), dict) else {}
        user_id = directory.triggers.get(str(args.get("trigger_id", "")))
        user = directory.person(user_id) if user_id else ""
        return Entry(
            at=at,
            kind=MODAL,
            audience=f"Modal opened{f' for {user}' if user else ''}",
            blocks=list(view.get("blocks") or []),
            title=_text_of(view.get("title"), directory),
        )
    if method == "views.publish":
        view = args.get("view") if isinstance(args.get("view"), dict) else {}
        return Entry(
            at=at,
            kind=HOME,
            audience=f"App Home of {directory.person(str(args.get('user_id')))}",
            blocks=list(view.get("blocks") or []),
            title="Home",
        )
    if method == "users.lookupByEmail":
        user = (response.get("user") or {}).get("id", "")
        return Entry(
            at=at,
            kind=NOTE,
            audience="Slack directory",
            text=f"Handover looked up {args.get('email')} by email: {directory.person(user)}",
        )
    return None


def entry_for_response_url(body: Any, at: datetime, audience: str) -> Entry:
    """A private answer sent to a slash command's response_url (`respond()`)."""
    body = body if isinstance(body, dict) else {"text": str(body)}
    return _message_entry(at, EPHEMERAL, audience, body)


# ----- text ------------------------------------------------------------------------------------


def _wrap(text: str, prefix: str) -> list[str]:
    lines: list[str] = []
    for raw in text.splitlines() or [""]:
        wrapped = textwrap.wrap(
            raw, BODY_WIDTH, subsequent_indent="  ", break_on_hyphens=False
        ) or [""]
        lines.extend(prefix + line for line in wrapped)
    return lines


def _element_label(element: Mapping[str, Any], directory: Directory) -> str:
    kind = element.get("type")
    if kind == "button":
        return f"[{_text_of(element.get('text'), directory)}]"
    if kind in ("static_select", "external_select", "users_select", "conversations_select"):
        return f"[{_text_of(element.get('placeholder'), directory) or 'Choose'} \u25be]"
    if kind in ("multi_static_select", "multi_external_select"):
        return f"[{_text_of(element.get('placeholder'), directory) or 'Choose'} \u25be]"
    if kind == "radio_buttons":
        return " ".join(
            f"( ) {_text_of(o.get('text'), directory)}" for o in element.get("options") or []
        )
    if kind == "plain_text_input":
        return "[" + ("text, several lines" if element.get("multiline") else "text") + "]"
    return f"[{kind}]"


def block_lines(
    blocks: Sequence[Mapping[str, Any]], directory: Directory, *, skip_fields: bool = False
) -> list[str]:
    """Block Kit as readable lines (no prefix)."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            lines.append(_text_of(block.get("text"), directory).upper())
        elif kind == "section":
            if block.get("text"):
                lines.extend(_text_of(block["text"], directory).splitlines())
            fields = block.get("fields") or []
            if fields and not skip_fields:
                pairs = []
                for f in fields:
                    label, _, value = _text_of(f, directory).partition("\n")
                    pairs.append(f"{label}: {value}" if value else label)
                lines.extend(" \u00b7 ".join(pairs[i : i + 3]) for i in range(0, len(pairs), 3))
            accessory = block.get("accessory")
            if isinstance(accessory, dict):
                lines.append(_element_label(accessory, directory))
        elif kind == "actions":
            lines.append(
                " ".join(_element_label(e, directory) for e in block.get("elements") or [])
            )
        elif kind == "context":
            parts = [_text_of(e, directory) for e in block.get("elements") or []]
            lines.extend(f"({line})" for line in " ".join(parts).splitlines())
        elif kind == "divider":
            lines.append("\u2500" * 24)
        elif kind == "input":
            optional = " (optional)" if block.get("optional") else ""
            label = _text_of(block.get("label"), directory)
            lines.append(
                f"{label}{optional}: {_element_label(block.get('element') or {}, directory)}"
            )
    return lines


def entry_lines(entry: Entry, directory: Directory, tz: ZoneInfo) -> list[str]:
    """One entry as console lines."""
    when = entry.at.astimezone(tz)
    stamp = f"{when:%a} {when.day:2d} {when:%b %H:%M}"
    if entry.kind == NARRATION:
        wrapped = _wrap(entry.text, "")
        return ["", f"{stamp}  \u25b6 {wrapped[0]}", *(f"{_INDENT}  {w}" for w in wrapped[1:])]
    if entry.kind == CHECK:
        mark = "OK  " if entry.ok else "FAIL"
        return [f"{stamp}  [{mark}] {entry.text}"]
    if entry.kind == NOTE:
        return [f"{stamp}  {entry.audience}: {entry.text}"]
    head = f"{stamp}  {entry.audience}"
    if entry.title:
        head += f": \u201c{entry.title}\u201d"
    if entry.kind in (EMAIL, PAGE):
        lines = [head]
        for line in entry.text.splitlines():
            lines.extend(_wrap(line, f"{_INDENT}\u2502 ") if line else [f"{_INDENT}\u2502"])
        return lines
    body = block_lines(entry.blocks, directory, skip_fields=entry.kind == UPDATE)
    if not body and entry.text:
        body = [entry.text]
    lines = [head]
    for line in body:
        lines.extend(_wrap(line, f"{_INDENT}\u2502 "))
    return lines


class _PageReader(HTMLParser):
    """The text of a page's <main>, a line per block, its controls drawn in brackets."""

    BLOCKS = frozenset({"h1", "h2", "p", "li", "legend", "div", "form", "fieldset", "tr"})

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.current: list[str] = []
        self.depth = 0  # inside <main>
        self.in_select = self.in_option = False
        self.option_shown = False

    def _flush(self) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            self.lines.append(text)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "main":
            self.depth += 1
        if not self.depth:
            return
        if tag in self.BLOCKS or tag == "dt":
            self._flush()
        if tag == "dd":
            self.current = [" ".join("".join(self.current).split()), ": "]
        elif tag == "select":
            self.in_select, self.option_shown = True, False
            self.current.append("[")
        elif tag == "option":
            self.in_option = True
        elif tag == "input" and found.get("type") == "radio":
            self.current.append("(\u2022) " if "checked" in found else "( ) ")
        elif tag == "input" and found.get("type") == "search":
            self.current.append(f"[{found.get('value') or ' '}]")
        elif tag == "button":
            self.current.append("[ ")

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if tag == "main":
            self._flush()
            self.depth -= 1
        elif tag == "select":
            self.in_select = False
            self.current.append(" \u25be]")
        elif tag == "option":
            self.in_option = False
        elif tag == "button":
            self.current.append(" ]")
        elif tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if not self.depth:
            return
        if self.in_option:
            if not self.option_shown:  # a select shows its first (or chosen) option
                self.current.append(data.strip())
                self.option_shown = True
            return
        self.current.append(data)


def page_text(page: str) -> str:
    """What a person reads on one of the bot's pages (its <main>), as plain lines."""
    reader = _PageReader()
    reader.feed(page)
    reader.close()
    return "\n".join(reader.lines)


def day_heading(day: datetime, tz: ZoneInfo) -> str:
    local = day.astimezone(tz)
    title = f"{local:%A} {local.day} {local:%B %Y}"
    return f"\n\u2550\u2550 {title} " + "\u2550" * max(4, 60 - len(title))


def transcript_text(entries: Iterable[Entry], directory: Directory, tz: ZoneInfo) -> list[str]:
    """The whole transcript as console lines, with a heading for each day."""
    lines: list[str] = []
    day = None
    for entry in entries:
        local_day = entry.at.astimezone(tz).date()
        if local_day != day:
            lines.append(day_heading(entry.at, tz))
            day = local_day
        lines.extend(entry_lines(entry, directory, tz))
    return lines


# ----- HTML ------------------------------------------------------------------------------------

# The transcript's own rules, on top of the pages' base layout (bot/templates/base.html).
CSS = """
:root { --blue:#1264a3; --green:#007a5a; --red:#c4164f; }
.verdict { margin:0 0 24px; padding:12px 16px; border-radius:6px; font-weight:600; }
.verdict.ok { background:#e3f4ec; color:var(--green); border:1px solid #b7e2cc; }
.verdict.fail { background:#fde7ee; color:var(--red); border:1px solid #f5b5c8; }
h2.day { margin:36px 0 12px; font-size:18px; color:var(--accent);
         border-bottom:2px solid var(--line); padding-bottom:6px; }
.timeline { position:relative; margin-left:88px; border-left:3px solid var(--line);
            padding-left:22px; }
.entry { position:relative; margin:14px 0; }
.entry .time { position:absolute; left:-112px; width:80px; text-align:right; top:2px;
               font-weight:700; color:var(--muted); font-variant-numeric:tabular-nums; }
.entry::before { content:""; position:absolute; left:-30px; top:7px; width:11px; height:11px;
                 border-radius:50%; background:#fff; border:3px solid var(--blue); }
.entry.narration::before { border-color:var(--accent); background:var(--accent); }
.entry.check::before { border-color:var(--green); }
.entry.check.fail::before { border-color:var(--red); background:var(--red); }
.narration .story { font-size:15.5px; font-style:italic; color:#3b3b3b; }
.where { font-size:13px; color:var(--muted); margin-bottom:4px; }
.where b { color:var(--ink); }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 16px;
        box-shadow:0 1px 2px rgba(0,0,0,.04); max-width:760px; }
.card.update { border-style:dashed; }
.card.ephemeral { background:#fbfbf6; }
.card.modal { border-top:4px solid var(--accent); }
.card.home { border-top:4px solid var(--blue); }
.card.email { border-top:4px solid var(--green); }
.card.page { border-top:4px solid var(--ink); }
.card pre.plain { white-space:pre-wrap; font-family:inherit; margin:0; }
.card .bot { font-weight:800; margin-bottom:4px; }
.card .bot .app { font-size:11px; background:#eee; color:var(--muted); border-radius:3px;
                  padding:1px 4px; margin-left:6px; font-weight:600; }
.card .title { font-weight:800; font-size:16px; margin-bottom:6px; }
.blk-header { font-weight:800; font-size:17px; margin:4px 0 6px; }
.blk-section { margin:6px 0; }
.fields { display:grid; grid-template-columns:repeat(2, minmax(0, 1fr)); gap:6px 18px;
          margin:8px 0; }
.fields div { font-size:14px; }
.blk-context { font-size:12.5px; color:var(--muted); margin:6px 0; }
.blk-divider { border:0; border-top:1px solid var(--line); margin:10px 0; }
.actions { display:flex; flex-wrap:wrap; gap:8px; margin:10px 0 4px; }
.btn { border:1px solid #bbb; border-radius:4px; padding:4px 12px; font-weight:700;
       font-size:13.5px; background:#fff; }
.btn.primary { background:var(--green); border-color:var(--green); color:#fff; }
.btn.danger { background:var(--red); border-color:var(--red); color:#fff; }
.input { margin:8px 0; }
.input label { display:block; font-weight:700; font-size:14px; }
.input .control { border:1px solid #bbb; border-radius:4px; padding:5px 8px; color:var(--muted);
                  font-size:13.5px; margin-top:3px; background:#fff; }
.opt { color:var(--muted); font-weight:400; }
code { background:#f3f3f3; border:1px solid #e6e6e6; border-radius:3px; padding:0 3px;
       color:#c01343; font-size:13px; }
.mention { background:#e8f5fa; color:var(--blue); border-radius:3px; padding:0 2px; }
.entry .note { font-size:13.5px; color:var(--muted); }
.check .note { color:var(--green); font-weight:600; }
.check.fail .note { color:var(--red); }
"""


def _element_html(element: Mapping[str, Any], directory: Directory) -> str:
    kind = element.get("type")
    if kind == "button":
        style = element.get("style")
        css = f"btn {style}" if style in ("primary", "danger") else "btn"
        return f'<span class="{css}">{_html_of(element.get("text"), directory)}</span>'
    if kind == "radio_buttons":
        return " &nbsp; ".join(
            f"\u25cb {_html_of(o.get('text'), directory)}" for o in element.get("options") or []
        )
    if kind == "plain_text_input":
        placeholder = _html_of(element.get("placeholder"), directory)
        return placeholder or ("several lines of text" if element.get("multiline") else "text")
    placeholder = _html_of(element.get("placeholder"), directory) or "Choose"
    return f"{placeholder} \u25be"


def blocks_html(
    blocks: Sequence[Mapping[str, Any]], directory: Directory, *, skip_fields: bool = False
) -> str:
    """Block Kit as Slack-like HTML (escaped)."""
    parts: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            parts.append(f'<div class="blk-header">{_html_of(block.get("text"), directory)}</div>')
        elif kind == "section":
            if block.get("text"):
                parts.append(f'<div class="blk-section">{_html_of(block["text"], directory)}</div>')
            fields = block.get("fields") or []
            if fields and not skip_fields:
                cells = "".join(f"<div>{_html_of(f, directory)}</div>" for f in fields)
                parts.append(f'<div class="fields">{cells}</div>')
            accessory = block.get("accessory")
            if isinstance(accessory, dict):
                parts.append(f'<div class="actions">{_element_html(accessory, directory)}</div>')
        elif kind == "actions":
            buttons = "".join(_element_html(e, directory) for e in block.get("elements") or [])
            parts.append(f'<div class="actions">{buttons}</div>')
        elif kind == "context":
            text = " ".join(_html_of(e, directory) for e in block.get("elements") or [])
            parts.append(f'<div class="blk-context">{text}</div>')
        elif kind == "divider":
            parts.append('<hr class="blk-divider">')
        elif kind == "input":
            optional = ' <span class="opt">(optional)</span>' if block.get("optional") else ""
            parts.append(
                '<div class="input"><label>'
                f"{_html_of(block.get('label'), directory)}{optional}</label>"
                f'<div class="control">{_element_html(block.get("element") or {}, directory)}'
                "</div></div>"
            )
    return "".join(parts)


def entry_html(entry: Entry, directory: Directory, tz: ZoneInfo) -> str:
    """One timeline item."""
    when = entry.at.astimezone(tz)
    time_html = f'<div class="time">{when:%H:%M}</div>'
    if entry.kind == NARRATION:
        return (
            f'<div class="entry narration">{time_html}'
            f'<div class="story">{html.escape(entry.text)}</div></div>'
        )
    if entry.kind in (NOTE, CHECK):
        extra = " fail" if not entry.ok else ""
        label = f"<b>{html.escape(entry.audience)}</b>: " if entry.kind == NOTE else ""
        return (
            f'<div class="entry {entry.kind}{extra}">{time_html}'
            f'<div class="note">{label}{html.escape(entry.text)}</div></div>'
        )
    title = f'<div class="title">{html.escape(entry.title)}</div>' if entry.title else ""
    if entry.kind in (EMAIL, PAGE):
        return (
            f'<div class="entry {entry.kind}">{time_html}'
            f'<div class="where"><b>{html.escape(entry.audience)}</b></div>'
            f'<div class="card {entry.kind}">{title}'
            f'<pre class="plain">{html.escape(entry.text)}</pre></div></div>'
        )
    body = blocks_html(entry.blocks, directory, skip_fields=entry.kind == UPDATE)
    if not body:
        body = f'<div class="blk-section">{html.escape(entry.text)}</div>'
    bot = ""
    if entry.kind in (MESSAGE, UPDATE, EPHEMERAL):
        bot = '<div class="bot">Handover<span class="app">APP</span></div>'
    return (
        f'<div class="entry {entry.kind}">{time_html}'
        f'<div class="where"><b>{html.escape(entry.audience)}</b></div>'
        f'<div class="card {entry.kind}">{bot}{title}{body}</div></div>'
    )


def transcript_html(
    entries: Sequence[Entry],
    directory: Directory,
    tz: ZoneInfo,
    *,
    title: str,
    intro: str,
    verdict: str,
    ok: bool,
    page: ReportPage | None,
) -> str:
    """The whole transcript as one self-contained HTML page, on the report's layout: the
    weekend day by day, then the managers' report of it (figures, charts, timelines)."""
    days: list[tuple[str, list[Markup]]] = []
    day = None
    for entry in entries:
        local = entry.at.astimezone(tz)
        if local.date() != day:
            days.append((f"{local:%A} {local.day} {local:%B %Y}", []))
            day = local.date()
        days[-1][1].append(Markup(entry_html(entry, directory, tz)))
    return render_transcript(
        title=title,
        intro=intro,
        verdict=verdict,
        ok=ok,
        days=days,
        page=page,
        window_label="The weekend's report",
        css=Markup(CSS),
    )

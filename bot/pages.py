"""Self-contained HTML pages: the managers' report (`handover report --html`) and the demo's
transcript, drawn with the Jinja2 templates in bot/templates/ on one base layout.

A page opens offline: its CSS is inline, its charts are inline SVG drawn by pygal (with pygal's
tooltip script left out), and it loads no font, script or image from anywhere. Each chart has a
table beside it with the same figures, for screen readers and for anyone who wants the numbers
(docs/reference/commands.md). Everything is escaped by Jinja2's autoescape; only the charts'
SVG, which pygal escapes, is inserted as markup.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import cache
from zoneinfo import ZoneInfo

import pygal
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from pygal.style import Style

from bot.services.coverage import COVERAGE_WORDS, STRATEGY_AGENCIES, CoverageState
from bot.services.logbook import LogWindow
from bot.services.report_page import ReportPage, local_time
from bot.services.reports import UNKNOWN_AGENCY, GroupFigures, Report, ResponseTimes

AGENCY_NAMES = {
    "social_care": "Social care",
    "police": "Police",
    "health": "Health",
    "probation": "Probation",
    "education": "Education",
    "other": "Other",
    UNKNOWN_AGENCY: "Not in the rota",
}
RESPONSE_NAMES = {
    "acknowledged": "Acknowledged",
    "has_information": "Holds information",
    "not_known": "Not known to them",
    "redirected": "Someone else holds it",
}
# Colours with at least 4.5:1 contrast on white (WCAG AA), told apart without colour too: each
# series is also named in the legend and the table.
CHART_STYLE = Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#1b1b1b",
    foreground_strong="#1b1b1b",
    foreground_subtle="#595959",
    opacity=".95",
    opacity_hover="1",
    colors=("#1d4e89", "#b3261e", "#2e6b30", "#6a3d9a", "#8a4b08", "#005f73"),
    font_family="system-ui, -apple-system, 'Segoe UI', Arial, sans-serif",
    label_font_size=13,
    major_label_font_size=13,
    value_font_size=12,
    legend_font_size=13,
    title_font_size=15,
)
_SVG_OPEN = re.compile(r"<svg ")
# pygal writes its chart's config into a <script> for its tooltips, which the page leaves out,
# and comments naming its web site; inline SVG in HTML needs no namespace declarations.
_LEFT_OUT = re.compile(
    r"<script\b[^>]*>.*?</script>|<!--.*?-->|\sxmlns(?::\w+)?=\"[^\"]*\"", re.DOTALL
)


def _chart_config() -> dict:
    return {
        "style": CHART_STYLE,
        "js": [],  # pygal's tooltips load a script from the web: the page must work offline
        "disable_xml_declaration": True,
        "width": 720,
        "height": 320,
        "explicit_size": False,
        "print_values": True,
        "print_values_position": "top",  # above the bar, dark on white: readable contrast
        "print_zeroes": False,
        "value_colors": ("#1b1b1b",),
        "legend_at_bottom": True,
        "truncate_label": 30,
        "margin": 16,
    }


def svg(chart: pygal.graph.graph.Graph, label: str) -> Markup:
    """The chart as inline SVG, labelled for assistive technology."""
    rendered = _LEFT_OUT.sub("", chart.render(is_unicode=True))
    attrs = f'<svg role="img" aria-label="{escape(label)}" focusable="false" '
    return Markup(_SVG_OPEN.sub(attrs, rendered, count=1))


def _minutes(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def minutes_text(value: float | None) -> str:
    """'42 min', '3 h 05 min', or an em dash for none."""
    if value is None:
        return "\u2014"
    whole = round(value)
    if whole < 60:
        return f"{whole} min"
    return f"{whole // 60} h {whole % 60:02d} min"


def window_words(window: LogWindow, tz: ZoneInfo) -> str:
    """'from Mon 9 Nov 2026 00:00 to Mon 23 Nov 2026 00:00' in local time, in words."""

    def when(at: datetime) -> str:
        local = at.astimezone(tz)
        return f"{local:%a} {local.day} {local:%b %Y %H:%M}"

    start = when(window.since) if window.since else "the beginning"
    end_at = window.before or window.until
    return f"from {start} to {when(end_at) if end_at else 'now'}"


def week_label(start: date) -> str:
    """'w/c 21 Dec' for the week commencing Monday 21 December."""
    return f"w/c {start.day} {start:%b}"


def response_time_chart(page: ReportPage) -> Markup:
    chart = pygal.Bar(**_chart_config(), title="Time to respond by agency type (working minutes)")
    times = page.report.response_times
    chart.x_labels = [AGENCY_NAMES.get(t.agency_type, t.agency_type) for t in times]
    chart.add("Median", [_minutes(t.median_minutes) for t in times])
    chart.add("90th percentile", [_minutes(t.p90_minutes) for t in times])
    return svg(chart, "Bar chart: median and 90th percentile time to respond by agency type")


# A county has hundreds of teams: the chart shows the slowest; the table beside it has them all.
CHART_TEAMS = 15


@dataclass(frozen=True)
class TeamRow:
    """One team of the report's `by_team`, with its time to answer (the report's own figures)."""

    figures: GroupFigures
    times: ResponseTimes


def team_rows(report: Report) -> list[TeamRow]:
    """Every team of the report, in its order, with its time to answer."""
    return [TeamRow(g, report.team_times(g.key)) for g in report.by_team]


def charted_teams(report: Report) -> list[TeamRow]:
    """The teams in the by-team chart: those that answered, slowest median first, at most
    CHART_TEAMS of them."""
    rows = [r for r in team_rows(report) if r.times.count]
    rows.sort(key=lambda r: (-(r.times.median_minutes or 0), r.figures.label))
    return rows[:CHART_TEAMS]


def team_chart(report: Report) -> Markup:
    rows = charted_teams(report)
    config = {**_chart_config(), "height": max(220, 60 + 34 * len(rows))}
    chart = pygal.HorizontalBar(**config, title="Median time to answer by team (working minutes)")
    chart.x_labels = [
        r.figures.label for r in reversed(rows)
    ]  # pygal draws the first at the bottom
    chart.add("Median", [_minutes(r.times.median_minutes) for r in reversed(rows)])
    return svg(chart, "Bar chart: median time to answer by team, slowest at the top")


def breach_chart(report: Report) -> Markup:
    chart = pygal.Bar(**_chart_config(), title="Breaches by agency type")
    chart.x_labels = [AGENCY_NAMES.get(g.key, g.label) for g in report.by_agency]
    chart.add("Breaches", [g.breaches for g in report.by_agency])
    return svg(chart, "Bar chart: breaches by agency type")


def coverage_chart(page: ReportPage) -> Markup:
    config = {**_chart_config(), "range": (0, 100), "value_formatter": lambda v: f"{v:.0f}%"}
    chart = pygal.Bar(**config, title="Strategy-discussion coverage week by week (%)")
    chart.x_labels = [week_label(w.start) for w in page.weeks]
    chart.add(
        "Social care, police and health all covered",
        [
            None if w.figures.coverage_rate is None else 100 * w.figures.coverage_rate
            for w in page.weeks
        ],
    )
    return svg(
        chart,
        "Bar chart: share of referrals covered by social care, police and health, by week",
    )


def trend_chart(page: ReportPage) -> Markup:
    chart = pygal.Line(**_chart_config(), title="Week on week", dots_size=4)
    chart.x_labels = [week_label(w.start) for w in page.weeks]
    chart.add("Referrals", [w.figures.referrals_received for w in page.weeks])
    chart.add("Prompts sent", [w.figures.prompts_sent for w in page.weeks])
    chart.add("Responses", [w.figures.responses_total for w in page.weeks])
    chart.add("Breaches", [w.figures.breaches for w in page.weeks])
    return svg(chart, "Line chart: referrals, prompts, responses and breaches by week")


def _change(values: Sequence[int]) -> str:
    """'+3 on the week before', 'no change', or '' for the first week."""
    if len(values) < 2:
        return ""
    delta = values[-1] - values[-2]
    if delta == 0:
        return "no change on the week before"
    return f"{delta:+d} on the week before"


@cache
def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bot", "templates"),
        autoescape=select_autoescape(("html",)),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["minutes"] = minutes_text
    env.filters["week"] = week_label
    env.filters["agency"] = lambda a: AGENCY_NAMES.get(a, str(a).replace("_", " "))
    env.filters["response"] = lambda k: RESPONSE_NAMES.get(k, str(k).replace("_", " "))
    env.filters["local"] = lambda at, tz: local_time(at, tz)
    env.filters["clock"] = lambda at: f"{at:%H:%M}"
    env.filters["percent"] = lambda rate: "\u2014" if rate is None else f"{rate:.0%}"
    return env


def report_context(page: ReportPage, window_label: str) -> dict:
    """What templates/report_body.html needs."""
    weeks = page.weeks
    return {
        "page": page,
        "report": page.report,
        "window_label": window_label,
        "charts": {
            "response_time": response_time_chart(page),
            "teams": team_chart(page.report),
            "breaches": breach_chart(page.report),
            "coverage": coverage_chart(page),
            "trend": trend_chart(page),
        },
        "teams": team_rows(page.report),
        "teams_charted": len(charted_teams(page.report)),
        "coverage_agencies": STRATEGY_AGENCIES,
        "coverage_states": [(str(state), COVERAGE_WORDS[state]) for state in CoverageState],
        "trend_changes": {
            "Referrals": _change([w.figures.referrals_received for w in weeks]),
            "Prompts sent": _change([w.figures.prompts_sent for w in weeks]),
            "Responses": _change([w.figures.responses_total for w in weeks]),
            "Breaches": _change([w.figures.breaches for w in weeks]),
        },
    }


def render_report(page: ReportPage, *, window_label: str, title: str = "Handover report") -> str:
    """The managers' report as one self-contained HTML page."""
    template = environment().get_template("report.html")
    return template.render(title=title, **report_context(page, window_label))


def render_transcript(
    *,
    title: str,
    intro: str,
    verdict: str,
    ok: bool,
    days: Sequence[tuple[str, Sequence[Markup]]],
    page: ReportPage | None,
    window_label: str,
    css: Markup,
) -> str:
    """The demo's transcript on the report's layout: the story day by day, then the report."""
    template = environment().get_template("transcript.html")
    context = report_context(page, window_label) if page is not None else {}
    return template.render(
        title=title, intro=intro, verdict=verdict, ok=ok, days=days, css=css, **context
    )

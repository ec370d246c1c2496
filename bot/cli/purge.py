"""`handover purge [--before DATE] [--dry-run]`: retention of personal data.

The command: docs/reference/commands.md; what is erased and why: docs/security.md.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

from bot.cli.log import database_session, local_time_label
from bot.clock import clock_from_env
from bot.errors import InputError, UsageError
from bot.services.logbook import parse_local_bound
from bot.services.retention import ERASED_FIELDS, RetentionReport, retention_cutoff, run_retention
from bot.settings import Settings

EXIT_OK = 0


def purge_command(args: argparse.Namespace, settings: Settings) -> int:
    """Erase the personal data of referrals closed before the cut-off; print what was done."""
    tz = settings.timezone
    now = clock_from_env().now()
    if args.before:
        bound = parse_local_bound(args.before, tz, "--before")
        before = (
            bound
            if isinstance(bound, datetime)
            else datetime.combine(bound, time(0), tzinfo=tz).astimezone(UTC)
        )
        if before > now:
            raise InputError(f"--before {args.before!r} is in the future: nothing closed yet")
        if before.year < 2000:
            raise InputError(f"--before {args.before!r} is before the year 2000")
    else:
        cutoff = retention_cutoff(settings, now)
        if cutoff is None:
            raise UsageError("give --before DATE, or set HANDOVER_RETENTION_DAYS")
        before = cutoff
    with database_session(settings) as session:
        report = run_retention(session, now=now, before=before, dry_run=args.dry_run)
        if not args.dry_run:
            session.commit()
    print(describe(report, tz))
    return EXIT_OK


def describe(report: RetentionReport, tz: ZoneInfo) -> str:
    """What a retention run did, for the terminal."""
    assert report.before is not None
    cutoff = local_time_label(report.before, tz)
    verb = "would purge" if report.dry_run else "purged"
    lines = [f"{verb} {len(report.referrals)} referral(s) closed before {cutoff}"]
    lines += [
        f"  {p.referral_id}  closed {local_time_label(p.closed_at, tz)}" for p in report.referrals
    ]
    if report.dry_run:
        lines.append("dry run: nothing was changed")
        return "\n".join(lines)
    if report.referrals:
        erased = ", ".join(name.replace("_", " ") for name in ERASED_FIELDS)
        lines.append(f"erased from each: {erased}; each purge is logged as referral_purged")
    lines.append(
        f"pruned {report.slack_events} Slack event id(s) and {report.slack_requests} "
        "Slack request signature(s)"
    )
    return "\n".join(lines)

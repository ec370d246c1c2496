"""The `handover` command line (docs/reference/commands.md). It only parses arguments and wires."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dotenv import load_dotenv

from bot.errors import HandoverError, InputError, ServiceUnavailable
from bot.logconfig import configure_logging

# Settings, SQLAlchemy and every command's code are imported when a command runs, not when the
# arguments are parsed: `--version`, `--help` and a mistyped option answer without them.
if TYPE_CHECKING:
    from bot.settings import Settings

EXIT_OK, EXIT_INPUT, EXIT_USAGE, EXIT_SERVICE = 0, 1, 2, 3


def _cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from bot.migrate import upgrade

    upgrade(settings.database_url)
    print("database is at the latest schema")
    return EXIT_OK


def _cmd_db_runtime_role(args: argparse.Namespace, settings: Settings) -> int:
    from bot.db import BATCH_TIMEOUTS, create_db_engine
    from bot.dbroles import create_runtime_role

    password = None
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("--password-stdin: no password on standard input")
    engine = create_db_engine(settings.database_url, timeouts=BATCH_TIMEOUTS)
    try:
        role = create_runtime_role(engine, args.name, password)
    finally:
        engine.dispose()
    print(
        f"runtime role {role.name} {'created' if role.created else 'brought into line'}: "
        f"SELECT, INSERT, UPDATE, DELETE on the working tables; audit_log SELECT and INSERT "
        f"only; no TRUNCATE, ALTER or trigger changes (the tables stay {role.owner}'s)"
    )
    if password is None and role.created:
        print(
            f"it has no password: set one with `\\password {role.name}` in psql, or rerun "
            "with --password-stdin"
        )
    return EXIT_OK


def _cmd_rota_import(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.rota import rota_import

    return rota_import(args, settings)


def _cmd_rota_check(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.rota import rota_check

    return rota_check(args, settings)


def _cmd_rota_ical(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.rota import rota_ical

    return rota_ical(args, settings)


def _cmd_rota_who(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.plan import rota_who

    return rota_who(args, settings)


def _cmd_plan(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.plan import plan

    return plan(args, settings)


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from bot.web.server import serve

    return serve(args, settings)


def _cmd_dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.dispatch import dispatch_command

    return dispatch_command(args, settings)


def _cmd_log(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.log import log_command, verify_command

    if args.action == "verify":
        return verify_command(args, settings)
    return log_command(args, settings)


def _cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.log import report_command

    return report_command(args, settings)


def _cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli.purge import purge_command

    return purge_command(args, settings)


def _cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from bot.demo.story import demo_command

    return demo_command(args, settings)


def _cmd_workspaces(args: argparse.Namespace, settings: Settings) -> int:
    from bot.cli import workspaces

    return getattr(workspaces, f"workspaces_{args.action}")(args, settings)


def _day_count(text: str) -> int:
    from bot.cli.rota import day_count

    return day_count(text)


def _version() -> str:
    """The installed distribution's version (pyproject.toml's, for an editable install too)."""
    from importlib import metadata

    try:
        return metadata.version("handover")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


# Commands that may meet a database that does not exist yet: `db upgrade` creates it, the demo
# brings its own.
_MAY_CREATE_THE_DATABASE = frozenset({"db", "demo"})


def _require_database_file(settings: Settings) -> None:
    """An SQLite DATABASE_URL naming a file that does not exist is a mistake (a typo, or the
    wrong working directory), not a new empty database to create silently."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        return  # not a URL at all: the engine says so
    path = url.database
    if url.get_backend_name() != "sqlite" or path in (None, "", ":memory:"):
        return
    if path.startswith("file:") or Path(path).exists():
        return
    raise ServiceUnavailable(
        f"database unavailable: the SQLite file {Path(path).absolute()} does not exist "
        "(check DATABASE_URL and the working directory, or create it with `handover db upgrade`)"
    )


class _VersionAction(argparse.Action):
    """argparse's `version` action, with the version looked up only when it is asked for (the
    lookup reads the installed distributions' metadata)."""

    def __init__(
        self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **_: Any
    ) -> None:
        super().__init__(
            option_strings,
            dest=dest,
            default=argparse.SUPPRESS,
            nargs=0,
            help="show program's version number and exit",
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        """Print `handover VERSION` and exit."""
        print(f"handover {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The `handover` command line: every subcommand and its options."""
    parser = argparse.ArgumentParser(
        prog="handover",
        description="Out-of-hours safeguarding handover: prompts daytime professionals "
        "at the start of their next working morning.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    db_sub.required = True
    db_sub.add_parser("upgrade", help="apply the migrations to DATABASE_URL").set_defaults(
        func=_cmd_db_upgrade
    )
    runtime_role = db_sub.add_parser(
        "create-runtime-role",
        help="PostgreSQL: a role for serve and dispatch that can append to the log, never alter it",
    )
    runtime_role.add_argument("name", metavar="NAME")
    runtime_role.add_argument(
        "--password-stdin", action="store_true", help="read the role's password from stdin"
    )
    runtime_role.set_defaults(func=_cmd_db_runtime_role)

    rota = sub.add_parser("rota", help="the rota store")
    rota_sub = rota.add_subparsers(dest="rota_command", metavar="ACTION")
    rota_sub.required = True
    imp = rota_sub.add_parser(
        "import",
        help="validate and import rota files: CSV files or folders, .xlsx workbooks, .ics feeds",
    )
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument(
        "--dry-run", action="store_true", help="run every check of an import; change nothing"
    )
    imp.add_argument(
        "--allow-deactivate",
        action="store_true",
        help="let an import deactivate more than 10%% (and more than 3) of the active people",
    )
    imp.add_argument(
        "--cp1252",
        action="store_true",
        help='read CSV files that are not UTF-8 as Windows-1252 (Excel\'s "CSV (Comma delimited)")',
    )
    imp.add_argument(
        "--ical-role",
        metavar="ROLE",
        help="the role of .ics events that carry no X-HANDOVER-ROLE",
    )
    imp.set_defaults(func=_cmd_rota_import)
    check = rota_sub.add_parser(
        "check", help="gaps in the on-call cover of the alert roles (exit 1 when there is one)"
    )
    check.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="ISO time, local without an offset; default now",
    )
    check.add_argument(
        "--days", type=_day_count, default=14, metavar="N", help="days to look at (default 14)"
    )
    check.set_defaults(func=_cmd_rota_check)
    ical = rota_sub.add_parser("ical", help="an iCalendar (.ics) of shifts on stdout")
    whose = ical.add_mutually_exclusive_group(required=True)
    whose.add_argument("--role", metavar="ROLE", help="the shifts of this role")
    whose.add_argument("--person", metavar="ID", help="the shifts of this person")
    ical.add_argument(
        "--from",
        dest="start",
        metavar="DATE",
        help="first day (2026-12-21 or 21/12/2026); default today",
    )
    ical.add_argument(
        "--days", type=_day_count, default=90, metavar="N", help="days to include (default 90)"
    )
    ical.set_defaults(func=_cmd_rota_ical)
    who = rota_sub.add_parser("who", help="who is at work or on shift at a time")
    who.add_argument("--at", metavar="TIME", help="ISO time; without an offset it is local")
    who.add_argument("--role", metavar="ROLE", help="only holders of shifts of this role")
    who.add_argument("--format", choices=("table", "json"), default="table")
    who.set_defaults(func=_cmd_rota_who)

    plan = sub.add_parser("plan", help="dry run: the plan a referral received at TIME would get")
    plan.add_argument("--notify", action="append", required=True, metavar="TARGET")
    plan.add_argument("--at", metavar="TIME", help="ISO time; without an offset it is local")
    plan.add_argument("--format", choices=("table", "json"), default="table")
    plan.add_argument(
        "--urgency",
        choices=("standard", "urgent"),
        help="also show when the prompt asks a response by and when each escalation step falls",
    )
    plan.set_defaults(func=_cmd_plan)

    serve = sub.add_parser("serve", help="run the bot (HTTP, or Socket Mode with SLACK_APP_TOKEN)")
    serve.add_argument(
        "--no-dispatcher", action="store_true", help="do not run the dispatcher in this process"
    )
    serve.set_defaults(func=_cmd_serve)

    dispatch = sub.add_parser("dispatch", help="run the dispatcher alone")
    dispatch.add_argument("--once", action="store_true", help="one pass over due work, then exit")
    dispatch.set_defaults(func=_cmd_dispatch)

    log = sub.add_parser("log", help="the escalation log; `log verify` checks its hash chain")
    log.add_argument(
        "action",
        nargs="?",
        choices=("verify",),
        help="verify: check the audit log's hash chain (exit 1 naming the first broken row)",
    )
    log.add_argument("--referral", metavar="ID")
    log.add_argument("--since", metavar="DATE")
    log.add_argument("--until", metavar="DATE")
    log.add_argument("--format", choices=("table", "csv", "jsonl"), default="table")
    log.set_defaults(func=_cmd_log)

    report = sub.add_parser("report", help="figures for managers")
    report.add_argument("--since", metavar="DATE")
    report.add_argument("--until", metavar="DATE")
    report.add_argument("--format", choices=("table", "csv", "json"), default="table")
    report.add_argument(
        "--html",
        metavar="FILE",
        help="write the report as one self-contained HTML page with charts to FILE",
    )
    report.set_defaults(func=_cmd_report)

    purge = sub.add_parser(
        "purge",
        help="erase the personal data of referrals closed before DATE, keeping a record",
    )
    purge.add_argument(
        "--before",
        metavar="DATE",
        help="closed before this date (local midnight) or time (default: HANDOVER_RETENTION_DAYS)",
    )
    purge.add_argument("--dry-run", action="store_true", help="list them; change nothing")
    purge.set_defaults(func=_cmd_purge)

    workspaces = sub.add_parser(
        "workspaces", help="partner workspaces the app is installed in, and their tokens"
    )
    workspaces_sub = workspaces.add_subparsers(dest="action", required=True)
    workspaces_sub.add_parser("list", help="each installed workspace").set_defaults(
        func=_cmd_workspaces
    )
    workspaces_sub.add_parser(
        "rekey", help="re-encrypt stored tokens under the first key of HANDOVER_TOKEN_KEY"
    ).set_defaults(func=_cmd_workspaces)
    remove = workspaces_sub.add_parser(
        "remove", help="uninstall the app from a partner workspace and delete its tokens"
    )
    remove.add_argument("team_id", metavar="TEAM_ID", help="the workspace's Slack team ID (T…)")
    remove.set_defaults(func=_cmd_workspaces)

    demo = sub.add_parser("demo", help="a simulated weekend against a local Slack stand-in")
    demo.add_argument("--html", metavar="FILE", default="demo-transcript.html")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `handover` and `python -m bot`."""
    # The .env of the directory the command runs in (not of wherever the package is installed);
    # the environment wins over it.
    load_dotenv(Path.cwd() / ".env", override=False)
    parser = build_parser()
    args = parser.parse_args(argv)
    from sqlalchemy.exc import OperationalError

    from bot.settings import Settings, SettingsError, log_settings

    try:
        log_level, log_format = log_settings()
    except SettingsError as exc:
        print(f"handover: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(log_level, log_format, verbose=args.verbose)
    try:
        # The demo brings its own settings: a broken environment must not stop it.
        settings = Settings() if args.command == "demo" else Settings.from_env()
        if args.command not in _MAY_CREATE_THE_DATABASE:
            _require_database_file(settings)
        return args.func(args, settings)
    except SettingsError as exc:
        print(f"handover: configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ServiceUnavailable as exc:
        print(f"handover: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    except HandoverError as exc:
        print(f"handover: {exc}", file=sys.stderr)
        return exc.exit_code
    except OperationalError as exc:
        print(f"handover: database unavailable: {exc.orig!s}".splitlines()[0], file=sys.stderr)
        return EXIT_SERVICE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `handover log | head`: the reader left; that is not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except (OverflowError, UnicodeError, ValueError) as exc:
        # Input that got past the checks: a short message, the traceback only with --verbose.
        logging.getLogger(__name__).debug("%s failed", args.command, exc_info=True)
        print(f"handover: {exc}", file=sys.stderr)
        return EXIT_INPUT

"""Prompts per second by email: one dispatcher, the local mail relay, SQLite or PostgreSQL.

    python benchmarks/bench_email.py [--prompts 300] [--postgresql]

Every prompt is due at once, to a distinct person whose `contact` is `email`; each email is one
SMTP connection to the local relay (`bot/mail_standin.py`, plain text on 127.0.0.1), rendered
in plain text and HTML with four signed links. Prints the time and the rate, and checks that
each prompt arrived exactly once with its own Message-ID.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_dispatch import NOW, TOKEN, drop_database, fresh_database, seed  # noqa: E402
from sqlalchemy import update  # noqa: E402

from bot.channels.slack import make_web_client  # noqa: E402
from bot.clock import FixedClock  # noqa: E402
from bot.db import create_db_engine, make_session_factory  # noqa: E402
from bot.delivery.dispatcher import Dispatcher  # noqa: E402
from bot.mail_standin import MailStandIn  # noqa: E402
from bot.migrate import upgrade  # noqa: E402
from bot.settings import Settings  # noqa: E402
from rota.models import Person  # noqa: E402


def bench(url: str, count: int) -> None:
    seed(url, count)
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    with factory.begin() as session:
        # Everyone on NHSmail: no Slack user, an address, contact email.
        session.execute(
            update(Person)
            .where(Person.person_id.like("p%"))
            .values(
                slack_user=None, email=Person.person_id + "@practice.nhs.example", contact="email"
            )
        )
    with MailStandIn() as relay:
        settings = Settings(
            database_url=url,
            slack_bot_token=TOKEN,
            slack_signing_secret="bench-signing-secret",
            slack_api_url="http://127.0.0.1:9/api/",  # never called: nobody is on Slack
            smtp_url=relay.url,
            mail_from="Handover <handover@wexcombe.example>",
            public_url="https://handover.wexcombe.example",
        )
        dispatcher = Dispatcher(
            settings, factory, make_web_client(settings), FixedClock(NOW), instance_id="bench"
        )
        started = time.perf_counter()
        stats = dispatcher.run_once()
        elapsed = time.perf_counter() - started
        ids = [mail.message_id for mail in relay.messages()]
    engine.dispose()
    assert stats.sent == count, stats.summary()
    assert len(ids) == len(set(ids)) == count, "an email went twice, or not at all"
    print(
        f"{count} prompts by email in {elapsed:.2f} s: {count / elapsed:.0f} prompts/s, "
        f"{1000 * elapsed / count:.1f} ms each (render, sign 4 links, SMTP, confirm)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="a fresh PostgreSQL database beside HANDOVER_TEST_PG_URL's, instead of SQLite",
    )
    args = parser.parse_args()
    if args.postgresql:
        name = f"handover_bench_email_{int(time.time())}"
        url = fresh_database(name)
        try:
            bench(url, args.prompts)
        finally:
            drop_database(name)
        return
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        bench(url, args.prompts)


if __name__ == "__main__":
    main()

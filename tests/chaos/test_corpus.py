"""Every file of the hostile corpus, correctly signed, against the real bot over HTTP: a 2xx or
a 4xx, never a 5xx, and nothing logged as an error (a listener that crashed after its ack would
hide behind a 200). Files named `bad-*` must be refused with exactly 400 before Bolt parses them.
See tests/chaos/make_corpus.py for what the corpus holds."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session, sessionmaker

from tests.chaos.make_corpus import CORPUS, RESPONSE_URL
from tests.handlers.slack_payloads import Harness, build_scenario, running_bot, sign

pytestmark = pytest.mark.chaos

CONTENT_TYPES = {
    ".form": "application/x-www-form-urlencoded",
    ".json": "application/json",
    ".txt": "text/plain",
    ".bin": "application/octet-stream",
}
FILES = sorted(CORPUS.iterdir())


class _Printable(logging.Filter):
    """Bolt logs an unhandled body as it came (lone surrogates too); the report must encode."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = message.encode("utf-8", "backslashreplace").decode("utf-8")
        record.args = ()
        return True


@contextmanager
def printable_logs() -> Iterator[None]:
    """Filter every handler of the root logger (pytest's capture ones are there during a test)."""
    printable = _Printable()
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(printable)
    yield
    for handler in handlers:
        handler.removeFilter(printable)


def _slack_refusal(record: logging.LogRecord) -> bool:
    return bool(record.exc_info) and isinstance(record.exc_info[1], SlackApiError)


@pytest.fixture
def bot(session_factory: sessionmaker[Session]) -> Iterator[Harness]:
    with running_bot(session_factory) as harness:
        build_scenario(session_factory, harness.client)
        yield harness


def test_the_corpus_is_large_and_names_its_content_types() -> None:
    assert len(FILES) >= 1000
    assert {path.suffix for path in FILES} == set(CONTENT_TYPES)
    assert sum(path.name.startswith("bad-") for path in FILES) >= 30


def test_every_hostile_request_gets_a_2xx_or_4xx_and_logs_no_error(
    bot: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with printable_logs():
        check_the_corpus(bot, caplog)


def check_the_corpus(bot: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    statuses: Counter[int] = Counter()
    wrong: list[tuple[str, int, bytes]] = []
    for path in FILES:
        body = path.read_bytes().replace(RESPONSE_URL.encode(), bot.catcher.new_url().encode())
        answer = bot.post(body, CONTENT_TYPES[path.suffix], sign(body))
        statuses[answer.status] += 1
        refused = path.name.startswith("bad-")
        if answer.status >= 500 or (refused and answer.status != 400):
            wrong.append((path.name, answer.status, answer.body[:200]))
    assert not wrong, "\n".join(f"{name}: {status} {body!r}" for name, status, body in wrong)
    # Slack's refusals (a made-up channel in a click) are logged at the edge, as they should be.
    errors = [
        f"{r.name}: {r.getMessage()[:200]} {r.exc_info[1]!r}"[:400]
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and not (r.exc_info and isinstance(r.exc_info[1], SlackApiError))
    ]
    assert not errors, "\n".join(errors)
    assert statuses[400] >= 100 and statuses[200] >= 100, statuses
    assert any("slack request refused 400" in r.getMessage() for r in caplog.records)

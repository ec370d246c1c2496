"""Repeated identical errors are written once per interval, with a count."""

from __future__ import annotations

import io
import logging

from bot.logfilter import RepeatedErrorFilter, install_repeat_filter


class Ticker:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _logger(name: str, repeat_filter: logging.Filter) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(repeat_filter)
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def _fail(logger: logging.Logger, path: str) -> None:
    try:
        raise ConnectionError("database is gone")
    except ConnectionError:
        logger.exception("api %s: database unavailable", path)


def test_an_outage_writes_one_traceback_a_minute_with_the_count() -> None:
    clock = Ticker()
    logger, out = _logger("test.repeat.outage", RepeatedErrorFilter(60, clock))
    for i in range(1205):
        clock.now += 0.1  # 1,205 failed requests in two minutes
        _fail(logger, f"/api/referrals/{i}")
    lines = out.getvalue()
    assert lines.count("Traceback") == 3  # at 0 s, 60.1 s and 120.1 s
    assert "ERROR api /api/referrals/0: database unavailable\n" in lines
    assert "ERROR api /api/referrals/601: database unavailable (600 more like this in the " in lines
    assert "(600 more like this in the last 60 s)" in lines


def test_different_errors_and_info_lines_are_not_held_back() -> None:
    clock = Ticker()
    logger, out = _logger("test.repeat.kinds", RepeatedErrorFilter(60, clock))
    for _ in range(3):
        logger.info("referral %s received", "HO-1")
        logger.error("slack refused %s", "x")
        logger.warning("slack slow")
        _fail(logger, "/healthz")
    text = out.getvalue()
    assert text.count("INFO referral HO-1 received") == 3
    assert text.count("ERROR slack refused x") == 1
    assert text.count("WARNING slack slow") == 1
    assert text.count("Traceback") == 1


def test_each_handler_counts_for_itself() -> None:
    logger = logging.getLogger("test.repeat.handlers")
    first, second = io.StringIO(), io.StringIO()
    logger.handlers = [logging.StreamHandler(first), logging.StreamHandler(second)]
    logger.propagate = False
    install_repeat_filter(logger.handlers)
    install_repeat_filter(logger.handlers)  # installing twice changes nothing
    for _ in range(5):
        logger.error("boom")
    assert first.getvalue() == second.getvalue() == "boom\n"
    assert all(len(h.filters) == 1 for h in logger.handlers)

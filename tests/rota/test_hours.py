"""Weekly hours: parsed once per text, equal values whatever text gave them."""

from __future__ import annotations

from datetime import time

import pytest

from rota.hours import NO_HOURS, HoursSyntaxError, WeeklyHours, parse_hours


def test_a_text_is_parsed_once_and_the_same_value_reused() -> None:
    assert parse_hours("Mon-Thu 08:30-16:30; Fri 08:30-16:00") is parse_hours(
        "Mon-Thu 08:30-16:30; Fri 08:30-16:00"
    )


def test_a_bad_text_is_refused_every_time_it_is_read() -> None:
    for _ in range(2):
        with pytest.raises(HoursSyntaxError, match="end before start"):
            parse_hours("Mon 17:00-09:00")


def test_equal_hours_from_different_texts_are_equal_and_hash_alike() -> None:
    default, spelled = parse_hours(""), parse_hours("mon-fri 09:00-17:00")
    assert default is not spelled
    assert default == spelled and hash(default) == hash(spelled)
    assert {default: "office"}[spelled] == "office"
    assert parse_hours("none") is NO_HOURS


def test_is_none_is_true_only_without_any_period() -> None:
    assert NO_HOURS.is_none and parse_hours("none").is_none
    assert not parse_hours("Sat 10:00-11:00").is_none
    assert WeeklyHours(days=((),) * 6 + (((time(9), time(10)),),)).periods(6) == (
        (time(9), time(10)),
    )

"""Opening hours: exact boundaries, spans past midnight, fades, and one-line errors."""

from datetime import datetime, timedelta

import pytest

from immersions.errors import ImmersionsError
from immersions.install.hours import OpeningHours

DAY = datetime(2025, 6, 14)


def at(clock: str, day: datetime = DAY) -> datetime:
    h, m, *s = (int(v) for v in clock.split(":"))
    return day.replace(hour=h, minute=m, second=s[0] if s else 0)


def test_a_gallery_day_opens_and_closes_exactly_on_time():
    hours = OpeningHours("10:00", "18:00")
    assert not hours.is_open(at("09:59:59"))
    assert hours.is_open(at("10:00"))
    assert hours.is_open(at("17:59:59"))
    assert not hours.is_open(at("18:00"))
    assert not hours.is_open(at("00:00")) and not hours.is_open(at("23:59:59"))
    assert hours.next_change(at("09:59:59")) == at("10:00")
    assert hours.next_change(at("10:00")) == at("18:00")
    assert hours.next_change(at("18:00")) == at("10:00", DAY + timedelta(days=1))


def test_a_night_span_wraps_past_midnight():
    hours = OpeningHours("22:00", "02:00")
    assert not hours.is_open(at("21:59:59"))
    assert hours.is_open(at("22:00")) and hours.is_open(at("23:59:59")) and hours.is_open(at("00:00"))
    assert hours.is_open(at("01:59:59"))
    assert not hours.is_open(at("02:00")) and not hours.is_open(at("12:00"))
    assert hours.next_change(at("23:00")) == at("02:00", DAY + timedelta(days=1))
    assert hours.next_change(at("01:00")) == at("02:00")
    assert hours.next_change(at("02:00")) == at("22:00")
    assert hours.length == 4 * 3600 and str(hours) == "22:00-02:00"


def test_always_never_closes():
    for hours in (OpeningHours.always(), OpeningHours("00:00", "24:00"), OpeningHours.from_args(None, None)):
        assert hours.is_always and str(hours) == "always"
        for clock in ("00:00", "12:00", "23:59:59"):
            assert hours.is_open(at(clock)) and hours.level(at(clock)) == 1.0
        assert hours.next_change(at("12:00")) is None


def test_sound_and_picture_fade_in_after_opening_and_out_before_closing():
    hours = OpeningHours("10:00", "18:00", fade=5.0)
    assert hours.level(at("09:59:59")) == 0.0
    assert hours.level(at("10:00")) == 0.0  # open, and the fade starts from silence
    assert hours.level(at("10:00:01")) == pytest.approx(0.2)
    assert hours.level(at("10:00") + timedelta(seconds=2.5)) == pytest.approx(0.5)
    assert hours.level(at("10:00:05")) == 1.0 and hours.level(at("14:00")) == 1.0
    assert hours.level(at("17:59:55")) == pytest.approx(1.0)
    assert hours.level(at("17:59:59")) == pytest.approx(0.2)
    assert hours.level(at("18:00")) == 0.0
    # the fade never jumps: a second at a time, through a whole day
    levels = [hours.level(at("00:00") + timedelta(seconds=s)) for s in range(0, 24 * 3600)]
    assert max(abs(a - b) for a, b in zip(levels, levels[1:])) <= 0.2 + 1e-9
    night = OpeningHours("22:00", "02:00", fade=5.0)
    assert night.level(at("00:00")) == 1.0 and night.level(at("01:59:59")) == pytest.approx(0.2)
    assert night.level(at("22:00:01")) == pytest.approx(0.2)


@pytest.mark.parametrize("open_, close, words", [
    ("25:00", "18:00", "opening time '25:00'"),
    ("10:00", "18:61", "closing time '18:61'"),
    ("ten", "18:00", "opening time 'ten'"),
    ("24:00", "18:00", "opening time '24:00'"),
    ("10:00", "10:00", "opening and closing at 10:00"),
])
def test_bad_times_are_one_line_errors(open_, close, words):
    with pytest.raises(ImmersionsError) as err:
        OpeningHours(open_, close)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_both_times_or_neither():
    with pytest.raises(ImmersionsError, match="give both --open and --close"):
        OpeningHours.from_args("10:00", None)
    assert str(OpeningHours.from_args("9:30", "17:45")) == "09:30-17:45"

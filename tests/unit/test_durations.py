"""supervisor/durations.py: docker's (Go's) durations and --since/--until times, as tables."""

from datetime import datetime, timedelta, timezone

import pytest

from supervisor.durations import InvalidDuration, parse_duration, parse_time

NOW = 1_700_000_000.0


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), ("+0", 0.0), ("-0", 0.0),
    ("5s", 5.0), ("30s", 30.0), ("1.5m", 90.0), ("1m30s", 90.0), ("1h2m3.5s", 3723.5),
    ("2h45m", 9900.0), ("300ms", 0.3), ("1.5h", 5400.0), ("10m", 600.0), ("1d", 86400.0),
    ("500us", 0.0005), ("500µs", 0.0005), ("500μs", 0.0005), ("10ns", 1e-8), ("1h0m0s", 3600.0),
    (".5s", 0.5), ("5.s", 5.0), ("-1.5h", -5400.0), ("+5s", 5.0), ("1s500ms", 1.5), ("0s", 0.0),
])
def test_go_durations(text, seconds):
    assert parse_duration(text, "--health-interval") == pytest.approx(seconds)


@pytest.mark.parametrize("text", [
    "", "10", "1.5", "s", ".s", "1 m", "1m 30s", "1H", "1x", "1m30", "--1s", "1sec", "1s\n", " 1s", "1e3s",
    "3000000h",  # past Go's ~292 years
])
def test_not_durations_name_the_flag_and_the_value(text):
    with pytest.raises(InvalidDuration) as error:
        parse_duration(text, "--health-timeout")
    assert str(error.value).startswith(f"invalid value {text!r} for --health-timeout: ")


def test_a_non_string_is_not_a_duration():
    with pytest.raises(InvalidDuration, match="for --stop-timeout"):
        parse_duration(5, "--stop-timeout")


@pytest.mark.parametrize("text, expected", [
    ("10m", NOW - 600), ("1m30s", NOW - 90), ("1.5m", NOW - 90), ("1h2m3.5s", NOW - 3723.5),
    ("-10m", NOW + 600), ("1d", NOW - 86400), ("250ms", NOW - 0.25),
    ("0", 0.0), ("1714557600", 1714557600.0), ("1714557600.25", 1714557600.25),
    ("1714557600.000000001", 1714557600.000000001),
    ("2024-05-01T10:00:00Z", 1714557600.0), ("2024-05-01T10:00:00z", 1714557600.0),
    ("2024-05-01T10:00:00.5Z", 1714557600.5), ("2024-05-01T10:00:00.123456789Z", 1714557600.123456789),
    ("2024-05-01T12:00:00+02:00", 1714557600.0), ("2024-05-01T05:30:00-04:30", 1714557600.0),
    ("2024-05-01T10:00Z", 1714557600.0), ("2024-05-01T10Z", 1714557600.0),
    ("2024-05-01Z", 1714521600.0),
])
def test_times(text, expected):
    assert parse_time(text, "--since", NOW, local=timezone.utc) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("text, expected", [
    ("2024-05-01", datetime(2024, 5, 1)), ("2024-05-01T10", datetime(2024, 5, 1, 10)),
    ("2024-05-01T10:00", datetime(2024, 5, 1, 10)), ("2024-05-01T10:00:07", datetime(2024, 5, 1, 10, 0, 7)),
])
def test_a_time_without_a_zone_is_local_time(text, expected):
    zone = timezone(timedelta(hours=3))
    assert parse_time(text, "--until", NOW, local=zone) == expected.replace(tzinfo=zone).timestamp()


@pytest.mark.parametrize("text", [
    "", "yesterday", "1x", "2024-13-01", "2024-05-01T25:00", "2024-05-01 10:00", "2024/05/01", "-5",
    "1714557600.", "1714557600.1234567890", "10m\n", "2024-05-01T10:00:00+0200",
])
def test_not_times_name_the_flag_and_the_value(text):
    with pytest.raises(InvalidDuration) as error:
        parse_time(text, "--until", NOW)
    assert str(error.value).startswith(f"invalid value {text!r} for --until: ")

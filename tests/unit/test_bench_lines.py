"""The pure parts of the line-rate benchmark (tests/bench/lines.py, issue 26): /proc/PID/stat
parsing, CPU accounting across a changing set of processes, the latency of a line, and
percentiles (tests/bench/stats.py)."""

from __future__ import annotations

import pytest

from tests.bench.lines import CpuMeter, CpuReading, line_latency, parse_stat, worker_label
from tests.bench.stats import percentile

# A real /proc/PID/stat line, with a command name holding a space and a parenthesis.
STAT = ("4242 (work (er) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 "
        "173 29 0 0 20 0 3 0 98765 123456789 4000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0")


def test_parse_stat_reads_utime_stime_and_start_time_after_the_last_parenthesis():
    assert parse_stat(STAT) == CpuReading(ticks=173 + 29, started=98765)


def test_parse_stat_of_this_process_is_consistent():
    with open("/proc/self/stat") as stat:
        reading = parse_stat(stat.read())
    assert reading.ticks >= 0 and reading.started > 0


def reading(label: str, ticks: int, started: int = 1) -> tuple[str, CpuReading]:
    return label, CpuReading(ticks, started)


def test_cpu_meter_counts_from_the_start_reading():
    meter = CpuMeter()
    meter.start({10: reading("daemon", 500), 11: reading("monitor", 40)})
    meter.read({10: reading("daemon", 520), 11: reading("monitor", 41)})
    meter.read({10: reading("daemon", 530), 11: reading("monitor", 41)})
    assert meter.per_label() == {"daemon": 30, "monitor": 1}


def test_cpu_meter_counts_a_process_started_in_the_window_whole_and_a_dead_one_to_its_last_reading():
    meter = CpuMeter()
    meter.start({10: reading("daemon", 500), 12: reading("collector", 7)})
    meter.read({10: reading("daemon", 510), 12: reading("collector", 9), 13: reading("collector", 4)})
    meter.read({10: reading("daemon", 515), 13: reading("collector", 6)})  # 12 ended
    assert meter.per_label() == {"daemon": 15, "collector": 2 + 6}


def test_cpu_meter_tells_a_reused_pid_from_the_process_that_had_it():
    meter = CpuMeter()
    meter.start({20: reading("conmon", 300, started=100)})
    meter.read({20: reading("conmon", 310, started=100)})
    meter.read({20: reading("conmon", 5, started=900)})  # another process now holds pid 20
    assert meter.per_label() == {"conmon": 10 + 5}


def test_cpu_meter_start_forgets_an_earlier_window():
    meter = CpuMeter()
    meter.start({10: reading("daemon", 100)})
    meter.read({10: reading("daemon", 200), 11: reading("monitor", 50)})
    meter.start({10: reading("daemon", 200)})
    meter.read({10: reading("daemon", 204)})
    assert meter.per_label() == {"daemon": 4}


@pytest.mark.parametrize("line", [
    b"lat 17 1796554666.487281",
    b"2026-12-06T10:57:46.487300000Z lat 17 1796554666.487281",
    b"2026-12-06T10:57:46.4873+00:00 lat 17 1796554666.487281\r",
])
def test_line_latency_is_the_receipt_minus_the_time_written_in_the_line(line):
    number, seconds = line_latency(line, received=1796554666.500281)
    assert number == 17
    assert seconds == pytest.approx(0.013, abs=1e-6)


@pytest.mark.parametrize("line", [b"", b"line 5", b"lat x 1.0", b"lat 5", b"dockyard: warning: lost output"])
def test_line_latency_ignores_other_lines(line):
    assert line_latency(line, received=1.0) is None


def test_worker_label_names_dockyards_processes():
    assert worker_label("/v/bin/python -m workers logcollector --root /r --run /d", "python") == "logcollector"
    assert worker_label("/v/bin/python -m workers monitor --root /r", "python") == "monitor"
    assert worker_label("/v/bin/python -I -S /s/supervisor/runtime/forkserver.py 5", "python") == "fork server"
    assert worker_label("/v/bin/python /s/supervisor/runtime/keeper.py", "python") == "keeper"
    assert worker_label("", "dockyard") == "dockyard"


def test_percentile_interpolates_between_ranks():
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([5.0], 99) == 5.0
    values = list(range(1, 101))  # 1..100
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 0) == 1 and percentile(values, 100) == 100


def test_percentile_refuses_no_values_and_a_bad_rank():
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)

"""The systemd protocols on real sockets: notify datagrams, socket-activation descriptors,
and the config file the daemon reloads on SIGHUP."""

from __future__ import annotations

import os
import socket

import pytest

from supervisor import configfile, systemd
from supervisor.errors import InvalidArgument


@pytest.fixture
def receiver(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify.sock"))
    sock.settimeout(5)
    yield sock
    sock.close()


def messages(sock) -> list[dict[str, str]]:
    found = []
    sock.setblocking(False)
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return found
        found.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


def test_notify_sends_one_datagram_per_message(tmp_path, receiver):
    environ = {"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "OTHER": "x"}
    notifier = systemd.Notifier.from_environment(environ)
    assert environ == {"OTHER": "x"}  # children must not inherit it
    assert notifier.ready("2 containers: 1 running, 0 restarting")
    assert notifier.watchdog() and notifier.reloading() and notifier.stopping() and notifier.status("x")
    got = messages(receiver)
    assert got[0] == {"READY": "1", "STATUS": "2 containers: 1 running, 0 restarting"}
    assert got[1] == {"WATCHDOG": "1"}
    assert got[2]["RELOADING"] == "1" and int(got[2]["MONOTONIC_USEC"]) > 0
    assert got[3:] == [{"STOPPING": "1"}, {"STATUS": "x"}]
    assert (notifier.sent, notifier.failed) == (5, 0)


def test_notify_to_an_abstract_socket_and_without_one():
    name = f"dockyard-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        assert systemd.Notifier(f"@{name}").ready()
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()
    silent = systemd.Notifier.from_environment({})
    assert not silent.enabled and not silent.ready()


def test_a_notify_socket_that_is_gone_is_counted_not_fatal(tmp_path):
    notifier = systemd.Notifier(str(tmp_path / "missing.sock"))
    assert not notifier.watchdog()
    assert notifier.failed == 1


def test_watchdog_interval_is_half_of_watchdog_usec_for_this_process():
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "3000000"}, pid=7) == 1.5
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "7"}, pid=7) == 1.5
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert systemd.watchdog_interval({}, pid=7) is None
    with pytest.raises(systemd.SystemdError, match="WATCHDOG_USEC"):
        systemd.watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=7)


def test_listen_fds_only_for_the_named_pid():
    environ = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "control:events"}
    read, write = os.pipe()  # after this, descriptors 3 and 4 exist (pytest's or these)
    try:
        assert systemd.listen_fds(dict(environ), pid=42) == [(3, "control"), (4, "events")]
        assert systemd.listen_fds({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, pid=42) == [(3, "unknown"), (4, "unknown")]
        assert systemd.listen_fds(dict(environ), pid=43) == []
        assert systemd.listen_fds({}, pid=42) == []
        leftover = dict(environ)
        systemd.listen_fds(leftover, pid=43)
        assert leftover == {}  # removed either way
    finally:
        os.close(read)
        os.close(write)


def listening(path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen()
    return sock


def test_bus_sockets_by_name_or_by_path(tmp_path):
    control, events = listening(tmp_path / "control.sock"), listening(tmp_path / "events.sock")
    try:
        by_name = systemd.bus_sockets([(control.fileno(), "control"), (events.fileno(), "events")], tmp_path)
        assert by_name == {"control": control.fileno(), "events": events.fileno()}
        by_path = systemd.bus_sockets([(events.fileno(), "unknown"), (control.fileno(), "x")], tmp_path)
        assert by_path == {"control": control.fileno(), "events": events.fileno()}
        with pytest.raises(systemd.SystemdError, match="clients of this daemon look for it at"):
            systemd.bus_sockets([(control.fileno(), "control")], tmp_path / "elsewhere")
    finally:
        control.close()
        events.close()


def test_bus_sockets_refuses_what_is_not_a_listening_unix_stream_socket(tmp_path):
    datagram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    datagram.bind(str(tmp_path / "control.sock"))
    unbound = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    read, write = os.pipe()
    try:
        with pytest.raises(systemd.SystemdError, match="listening unix stream socket"):
            systemd.bus_sockets([(datagram.fileno(), "control")], tmp_path)
        with pytest.raises(systemd.SystemdError, match="listening unix stream socket"):
            systemd.bus_sockets([(unbound.fileno(), "control")], tmp_path)
        with pytest.raises(systemd.SystemdError, match="is not a socket"):
            systemd.bus_sockets([(read, "control")], tmp_path)
    finally:
        datagram.close()
        unbound.close()
        os.close(read)
        os.close(write)


def test_config_file_is_checked_key_by_key(tmp_path):
    path = tmp_path / "daemon.toml"
    path.write_text('log-level = "debug"\nstats-interval = 0.5\nworkers = ["monitor"]\n')
    assert configfile.load(path) == {"log-level": "debug", "stats-interval": 0.5, "workers": ["monitor"]}
    for text, says in [
        ('colour = "blue"', "unknown key 'colour'"),
        ('log-level = "loud"', "log-level must be one of"),
        ("stats-interval = -1", "stats-interval must be seconds >= 0"),
        ("stats-interval = true", "stats-interval must be"),
        ("workers = [1]", "workers must be a list of worker names"),
        ('api = "tcp://127.0.0.1:2375"', "api must be a list of tcp://HOST:PORT or unix:///PATH"),
        ("log-level = ", "is not valid TOML"),
        ("default-pids-limit = 0", "default-pids-limit must be a positive number of processes, or -1"),
        ('default-pids-limit = "4096"', "default-pids-limit must be"),
    ]:
        path.write_text(text + "\n")
        with pytest.raises(InvalidArgument, match=says):
            configfile.load(path)
    with pytest.raises(InvalidArgument, match="cannot read config file"):
        configfile.load(tmp_path / "missing.toml")
    path.write_text('api = ["tcp://127.0.0.1:2375", "unix:///run/docker.sock"]\n')
    assert configfile.load(path) == {"api": ["tcp://127.0.0.1:2375", "unix:///run/docker.sock"]}
    for limit in (-1, 4096):
        path.write_text(f"default-pids-limit = {limit}\n")
        assert configfile.load(path) == {"default-pids-limit": limit}


def test_the_default_pids_limit_is_4096_and_checked():
    from supervisor.config import Config

    assert Config().default_pids_limit == 4096
    assert Config(default_pids_limit=-1).default_pids_limit == -1
    for bad in (0, -2, 1.5, "4096", True):
        with pytest.raises(ValueError, match="default pids limit must be a positive number"):
            Config(default_pids_limit=bad)


def test_reload_applies_only_the_reloadable_keys():
    old = {"log-level": "info", "root": "/a", "stats-interval": 1.0}
    new = {"log-level": "debug", "root": "/b", "shutdown-timeout": 5}
    apply, need_restart = configfile.changes(old, new)
    assert apply == {"log-level": "debug", "stats-interval": None, "shutdown-timeout": 5}
    assert need_restart == ["root"]

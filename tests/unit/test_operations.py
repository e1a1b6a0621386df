"""Every bus operation's arguments (supervisor/operations.py), checked before its handler runs.

The fuzz tests drive the daemon's real dispatch: a :class:`~bus.server.BusServer` (its
message handling, without sockets: replies are recorded) over the real handler table and a
real :class:`~supervisor.api.Supervisor` on a temporary root, with one image and one created
container. Nothing needs root: the Supervisor is never entered, the launch of a container is
replaced by a refusal, the network by a stand-in, and the registry transfers by a refusal (a
fuzzed reference never leaves the machine). For every request, well-formed or not: exactly one
reply, never ``internal``, and a refused request leaves the daemon's state (its files, its
containers, its events) as it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import secrets
import shutil
import tarfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bus import codec
from bus import server as bus_server
from bus.server import BusServer
from logs.options import LogOptions
from supervisor.api import Supervisor
from supervisor.attach import MAX_WINDOW
from supervisor.config import Config
from supervisor.errors import InvalidArgument
from supervisor.exec import ExecSpec
from supervisor.handlers import Handlers
from supervisor.journal import Journal
from supervisor import operations
from supervisor.operations import DAEMON_OPERATIONS, OPERATIONS, Argument, Operation, check_arguments
from supervisor.registry.errors import RegistryUnavailable
from supervisor.resources import Resources
from supervisor.spec import ContainerSpec
from tests.fakes import FakeCgroups, FakeLauncher, FakeNetwork, launch_error

GUARD = 30  # seconds: hang guard only
PEER = b"peer"
#: Error codes after which the daemon's state may have changed: a start that failed is
#: recorded (exit 125), as docker does.
STATE_MAY_CHANGE = {"invalid_state"}


# --- the declarations themselves ----------------------------------------------------------


def test_every_handler_is_declared_and_every_declaration_has_a_handler(tmp_path: Path) -> None:
    sup = Supervisor(_config(tmp_path))
    journal = Journal(tmp_path / "journal", 10)
    try:
        table = Handlers(sup, journal, lambda: 0, dict).table()
    finally:
        journal.close()
    assert set(table) == set(DAEMON_OPERATIONS)
    assert set(OPERATIONS) - set(DAEMON_OPERATIONS) == {"bus.ping", "bus.sync"}


def test_a_declared_operation_without_a_handler_is_a_bug() -> None:
    from supervisor.handlers import checked_table

    async def handler(request: Any, args: dict[str, Any]) -> dict[str, Any]:
        return {}

    with pytest.raises(ValueError, match="without a handler: .*container.wait"):
        checked_table({name: handler for name in DAEMON_OPERATIONS if name != "container.wait"})
    with pytest.raises(ValueError, match="without a declaration .*: bus.ping"):
        checked_table({name: handler for name in [*DAEMON_OPERATIONS, "bus.ping"]})


def test_the_window_bound_is_the_session_s() -> None:
    assert OPERATIONS["container.run"].arguments["window"].maximum == MAX_WINDOW


def test_a_missing_argument_is_named_with_what_it_must_be() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_arguments("container.stop", {})
    assert caught.value.message == "container.stop: argument 'container' is required (a string)"
    assert caught.value.details == {"op": "container.stop", "argument": "container", "expected": "a string"}


def test_a_wrong_type_is_named_with_what_it_must_be() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_arguments("container.stop", {"container": "web", "timeout": "10"})
    assert caught.value.message == "container.stop: argument 'timeout' must be an integer >= 0, not a string '10'"
    with pytest.raises(InvalidArgument, match=r"'timeout' must be an integer >= 0, not an integer -1"):
        check_arguments("container.stop", {"container": "web", "timeout": -1})
    with pytest.raises(InvalidArgument, match=r"'force' must be true or false, not an integer 1"):
        check_arguments("container.remove", {"container": "web", "force": 1})
    with pytest.raises(InvalidArgument, match=r"'stream' must be 'stdout' or 'stderr', not a string 'x'"):
        check_arguments("logs.replay", {"container": "c", "stream": "x", "from": 1})
    with pytest.raises(InvalidArgument, match=r"'path' must be an absolute path, not a string 'out.tar'"):
        check_arguments("image.save", {"images": ["a"], "path": "out.tar"})
    with pytest.raises(InvalidArgument, match=r"'since' must be a number, not a number nan"):
        check_arguments("events.replay", {"since": float("nan")})


def test_unknown_arguments_are_refused_by_name() -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_arguments("container.remove", {"container": "web", "forse": True, b"raw": 1})
    assert caught.value.message == (  # repr: whatever bytes a client sent are readable
        "container.remove: unknown arguments 'forse', b'raw' (it takes: container, force, volumes)")


def test_null_is_absent_and_absent_takes_the_default() -> None:
    assert check_arguments("container.remove", {"container": "web", "force": None}) == {
        "container": "web", "force": False, "volumes": False}
    first = check_arguments("container.stats", {})
    first["containers"].append("x")
    assert check_arguments("container.stats", {}) == {"containers": []}  # the default is not shared


def test_a_declaration_with_an_unknown_type_is_a_bug() -> None:
    with pytest.raises(ValueError):
        Operation("x.y", (Argument("a", "float"),))


# --- the daemon's dispatch, without sockets -----------------------------------------------


class FakeLog:
    """Records structlog-style calls."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))

    def debug(self, event: str, **fields: Any) -> None:
        pass

    info = warning = debug


class RecordingServer(BusServer):
    """The real BusServer's dispatch; what it sends to a peer is recorded instead."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sent: list[tuple[bytes, codec.Envelope]] = []
        self.control.send_to = self._record  # type: ignore[method-assign]

    def _record(self, peer: bytes, frame: bytes) -> bool | None:
        self.sent.append((peer, codec.decode(frame)))
        return True

    def replies(self) -> list[codec.Envelope]:
        return [envelope for _, envelope in self.sent if envelope.topic.startswith("reply.")]


class NoLaunch(Supervisor):
    """The real Supervisor, except that its cgroups are fakes and a container's launch
    (root, the kernel) is refused."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lifecycle.cgroups = FakeCgroups()
        self.lifecycle.launcher = FakeLauncher()
        self.lifecycle.launcher.error = launch_error("the unit test launches nothing")


class NoNetwork(FakeNetwork):
    """Stands in for supervisor.network.manager.Network (pyroute2, root)."""

    def info(self) -> dict[str, Any]:
        return {}


class NoRegistry(RegistryUnavailable):
    """What an unreachable registry raises (a declared error of the registry operations)."""


async def _no_registry(*args: Any, **kwargs: Any) -> Any:
    raise NoRegistry("the unit test reaches no registry")


def _config(base: Path) -> Config:
    return Config(root=base / "root", run_dir=base / "run", cgroup_root=base / "cgroup", stats_interval=0,
                  workers=())


def _image_tar(path: Path) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, content in (("etc/hostname", b"base\n"), ("bin/true", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(content))
    return path


class World:
    """A daemon's state on a temporary root: the image ``base:1``, the created container
    ``box``, files to import, load and copy; restored, in the same place (records hold absolute
    paths), before each example that follows one that changed it."""

    def __init__(self, base: Path):
        self.base = base
        self.current = base / "current"
        self.files = base / "files"
        self.files.mkdir()
        self.image_tar = _image_tar(self.files / "image.tar")
        (self.files / "garbage").write_bytes(b"\x00not a tar at all" * 10)
        (self.files / "out").mkdir()
        self.box_id = ""
        self.image_id = ""
        trio.run(self._build)
        self.pristine = base / "pristine"
        shutil.copytree(self.current, self.pristine, symlinks=True)
        self.dirty = False
        self.discarded = 0

    async def _build(self) -> None:
        sup = NoLaunch(_config(self.current), log=FakeLog())
        with open(self.image_tar, "rb") as source:
            self.image_id = (await sup.import_image(source, "base:1", ['CMD ["true"]'])).id
        with pytest.MonkeyPatch.context() as patch:  # the same id each time: an example names it
            patch.setattr(secrets, "token_hex", lambda size=32: "b0c5" * (size // 2))
            self.box_id = (await sup.create(ContainerSpec(image="base:1", name="box", cmd=("true",)))).id

    def paths(self) -> list[str]:
        """Paths a request may name: only these (a fuzzed path never reaches the host's files)."""
        return [str(self.image_tar), str(self.files / "garbage"), str(self.files / "out" / "x.tar"),
                str(self.files / "out"), str(self.files / "missing" / "x.tar"), "relative.tar", "", "/\x00"]

    def fresh(self) -> Path:
        """The root as first built. A changed one is moved aside (renaming is cheap, deleting
        is not) and the pristine copy copied back to the same place."""
        if self.dirty:
            self.discarded += 1
            os.rename(self.current, self.base / f"discarded-{self.discarded}")
            shutil.copytree(self.pristine, self.current, symlinks=True)
            self.dirty = False
        return self.current


def _state(root: Path, sup: Supervisor, events: list[Any]) -> Any:
    """What a refused request must not change: every file under the root, the containers,
    the events published."""
    tree = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        tree.append((folder, tuple(dirs)))
        for name in sorted(files):
            with open(os.path.join(folder, name), "rb") as stream:
                tree.append((name, hashlib.sha256(stream.read()).digest()))
    containers = sorted((c.id, c.name, c.status.value, repr(c.spec)) for c in sup.list(all=True))
    return tree, containers, len(events)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from supervisor.registry import transfer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transfer, "login", _no_registry)
        patch.setattr(transfer, "pull", _no_registry)
        patch.setattr(transfer, "push", _no_registry)
        patch.setattr(bus_server, "SYNC_TIMEOUT", 0.01)  # a bus.sync nobody subscribed for
        yield World(tmp_path_factory.mktemp("ops"))


def _send(world: World, frames: list[bytes]) -> tuple[RecordingServer, FakeLog, bool]:
    """One control message through the daemon's dispatch; returns the server (what it sent),
    its log, and whether the daemon's state is as it was."""
    base = world.fresh()
    events: list[Any] = []
    log = FakeLog()

    async def main() -> tuple[RecordingServer, bool]:
        sup = NoLaunch(_config(base), publish=lambda topic, data, channel, payload=None: events.append(topic), log=log)
        sup.networking = NoNetwork(base)
        await sup._load_and_reconcile()
        journal = Journal(base / "root" / "journal", 100)
        handlers = Handlers(sup, journal, lambda: 0, dict)
        server = RecordingServer(base / "run", handlers.table(), log=log)
        before = _state(base / "root", sup, events)
        with trio.fail_after(GUARD):
            async with trio.open_nursery() as nursery:
                server.control.on_message(nursery, frames)
        journal.close()
        return server, _state(base / "root", sup, events) == before

    server, unchanged = trio.run(main)
    if not unchanged:
        world.dirty = True
    return server, log, unchanged


def _request(world: World, op: str, args: Any) -> tuple[codec.Envelope, bool]:
    frame = msgpack.packb({"v": 1, "topic": f"request.{op}", "seq": 7, "ts": 1.0, "source": "fuzz", "data": args},
                          use_bin_type=True)
    server, log, unchanged = _send(world, [PEER, frame])
    replies = server.replies()
    assert len(replies) == 1, f"{op} {args!r}: {len(replies)} replies"
    reply = replies[0]
    assert (reply.topic, reply.seq) == (f"reply.{op}", 7)
    error = reply.data.get("error") or {}
    assert error.get("code") != "internal", f"{op} {args!r}: {error.get('message')}"
    assert not log.errors, f"{op} {args!r}: the daemon logged {log.errors}"
    if not reply.data["ok"] and error["code"] not in STATE_MAY_CHANGE:
        assert unchanged, f"{op} {args!r} was refused ({error['code']}) but changed the daemon's state"
    declared = OPERATIONS.get(op)
    if declared is not None and not reply.data["ok"]:
        assert error["code"] in declared.error_codes, (
            f"{op} {args!r} answered {error['code']} ({error['message']}), not declared in supervisor/operations.py")
    if declared is not None and reply.data["ok"] and declared.keys is not None:
        _assert_keys(op, reply.data["result"], declared.keys)
    return reply, unchanged


def _assert_keys(op: str, result: Any, keys: tuple[str, ...]) -> None:
    """A reply has every declared key (``name?``: it may lack it) and no other."""
    required = {key for key in keys if not key.endswith("?")}
    known = required | {key.rstrip("?") for key in keys}
    assert type(result) is dict and required <= set(result) <= known, (
        f"{op} answered the keys {sorted(result)}; supervisor/operations.py declares {list(keys)}")


def test_create_with_an_empty_spec_is_an_invalid_argument_naming_the_image(world: World) -> None:
    reply, unchanged = _request(world, "container.create", {"spec": {}})
    assert reply.data["error"]["code"] == "invalid_argument"
    assert "spec.image" in reply.data["error"]["message"] and unchanged


def test_a_malformed_argument_is_refused_before_the_handler_runs(world: World) -> None:
    reply, unchanged = _request(world, "container.remove", {"container": "box", "force": "yes"})
    assert reply.data["error"] == {
        "code": "invalid_argument",
        "message": "container.remove: argument 'force' must be true or false, not a string 'yes'",
        "details": {"op": "container.remove", "argument": "force", "expected": "true or false"},
    }
    assert unchanged


@pytest.mark.parametrize("op, args", [
    ("container.export", {"container": "box"}),
    ("container.copy_from", {"container": "box", "source": "/etc"}),
    ("image.save", {"images": ["base:1"]}),
])
@pytest.mark.parametrize("where", ["out", "missing/x.tar"])
def test_an_output_path_the_daemon_cannot_write_is_an_invalid_argument_naming_it(
    world: World, op: str, args: dict[str, Any], where: str
) -> None:
    path = str(world.files / where)  # a directory; in a directory that does not exist
    reply, unchanged = _request(world, op, {**args, "path": path})
    assert reply.data["error"]["code"] == "invalid_argument" and path in reply.data["error"]["message"]
    assert unchanged and sorted(os.listdir(world.files / "out")) == []


def test_the_world_accepts_what_is_well_formed(world: World) -> None:
    """The fuzzing below reaches the handlers' real work: a good request succeeds."""
    reply, _ = _request(world, "container.inspect", {"container": "box"})
    assert reply.data["ok"] and reply.data["result"]["Name"] == "/box"
    reply, _ = _request(world, "image.tag", {"image": "base:1", "reference": "base:2"})
    assert reply.data["ok"]
    reply, _ = _request(world, "container.start", {"container": "box"})
    assert reply.data["error"]["code"] == "invalid_state" and "launches nothing" in reply.data["error"]["message"]


# --- strategies from the declarations ----------------------------------------------------

ANY = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
TEXT = st.text(max_size=24)
SIGNALS = st.sampled_from(["KILL", "TERM", "SIGHUP", "sigusr1", "NOPE", "0", "9", "65", ""]) | st.integers(-3, 70)
NUMBERS = st.integers(min_value=-5, max_value=5000) | st.floats()


def _or_anything(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly the strategy's values, now and then anything at all."""
    return st.one_of(strategy, strategy, strategy, ANY)


@st.composite
def _some(draw: Any, values: dict[str, st.SearchStrategy], *, required: tuple[str, ...] = (),
          most: int = 4) -> dict[Any, Any]:
    """A map with the ``required`` keys (each missing, now and then), up to ``most`` of the
    others, and now and then a key nobody knows."""
    # Hypothesis starts from the simplest draw (0): that one means "as it should be".
    chosen = [name for name in required if draw(st.integers(0, 9)) != 9]
    optional = [name for name in values if name not in required]
    if optional:
        chosen += draw(st.lists(st.sampled_from(optional), max_size=most, unique=True))
    result: dict[Any, Any] = {name: draw(values[name] if draw(st.integers(0, 9)) != 9 else ANY) for name in chosen}
    if draw(st.integers(0, 9)) == 9:
        result[draw(st.sampled_from(["bogus", ""]) | TEXT)] = draw(ANY)
    return result


def _texts(world: World) -> dict[str, st.SearchStrategy]:
    """Strings an argument of this name is likely to meet (and any string)."""
    return {
        "container": st.sampled_from(["box", world.box_id, world.box_id[:12], "nope", "", "/box"]) | TEXT,
        "image": st.sampled_from(["base:1", "base", world.image_id, world.image_id[:12], "nope:1", ""]) | TEXT,
        "reference": st.sampled_from(["base:2", "new/name:tag", "127.0.0.1:1/x:1", "Bad Ref", "a:", ""]) | TEXT,
        "registry": st.sampled_from(["127.0.0.1:1", "docker.io", "", "https://x"]) | TEXT,
        "platform": st.sampled_from(["linux/amd64", "linux/arm/v7", "linux", "/", ""]) | TEXT,
        "source": st.sampled_from(["/", "/etc/hostname", "/missing", "relative", "../.."]) | TEXT,
        "dest": st.sampled_from(["/", "/etc", "/new", "relative", "../.."]) | TEXT,
    }


def _field_values(name: str, world: World) -> st.SearchStrategy:
    """Values of one ContainerSpec field: mostly of its kind, sometimes anything."""
    strings = st.lists(TEXT, max_size=3)
    kinds: dict[str, st.SearchStrategy] = {
        "image": st.sampled_from(["base:1", "nope", ""]),
        "cmd": strings, "env": st.lists(st.sampled_from(["A=1", "B", "=x", "PATH=/bin"]) | TEXT, max_size=3),
        "entrypoint": st.none() | strings, "publish": st.lists(st.sampled_from(["80", "8080:80/tcp", "x"]), max_size=2),
        "add_host": st.lists(st.sampled_from(["db:10.0.0.2", "db", "x:y"]), max_size=2),
        "dns": st.lists(st.sampled_from(["1.1.1.1", "nope"]), max_size=2),
        "stop_timeout": st.integers(-2, 100), "stop_signal": SIGNALS,
        "restart": st.sampled_from(["no", "always", "on-failure:3", "on-failure:x", "unless-stopped", "bogus"]),
        "network": st.sampled_from(["bridge", "none", "host", "container:box", "container:nope", "bogus"]),
        "resources": _resources(), "log_options": _log_options(),
        "userns_mode": st.sampled_from(["", "host", "private"]) | TEXT,
        "healthcheck": st.dictionaries(st.sampled_from(["test", "interval", "timeout", "start_period", "retries", "x"]),
                                       st.sampled_from([["CMD", "true"], ["NONE"], "30s", 3, -1, "x", None]),
                                       max_size=3),
    }
    if name in kinds:
        return kinds[name]
    default = next(item.default for item in fields(ContainerSpec) if item.name == name)
    return st.booleans() if type(default) is bool else TEXT if type(default) is str else ANY


def _resources() -> st.SearchStrategy:
    values = st.sampled_from([0, 1, 2, -1, 6 << 20, "64m", "0.5", "1g", "32q", "0-1", "", "/dev/null"])
    values = {item.name: values for item in fields(Resources)} | {"cpus": values}
    values["devices"] = st.lists(st.sampled_from(["/dev/null", "/dev/null:/dev/x:rw", "/dev/nope", "x", ""]), max_size=2)
    return _some(values, most=3)


def _log_options() -> st.SearchStrategy:
    values = st.sampled_from(["blocking", "non-blocking", "1m", "4", "0", "x", 3, -1])
    return _some({key: values for key in LogOptions().to_map()}, most=2)


def _spec(world: World) -> st.SearchStrategy:
    return _some({item.name: _field_values(item.name, world) for item in fields(ContainerSpec)}, required=("image",))


def _exec() -> st.SearchStrategy:
    values = {
        "cmd": st.lists(TEXT, max_size=3), "env": st.lists(st.sampled_from(["A=1", "B", "=x"]), max_size=2),
        "workdir": st.sampled_from(["/", "/tmp", "relative", ""]),
        "user": st.sampled_from(["0", "1000:1000", "root", "bad user", ""]),
        "tty": st.booleans(), "stdin": st.booleans(), "detach": st.booleans(), "privileged": st.booleans(),
    }
    assert set(values) == {item.name for item in fields(ExecSpec)}
    return _some(values, required=("cmd",))


def _acks(world: World) -> st.SearchStrategy:
    streams = st.dictionaries(st.sampled_from(["stdout", "stderr", "x"]) | TEXT, _or_anything(st.integers(-1, 9)),
                              max_size=2)
    return st.dictionaries(st.sampled_from([world.box_id, "nope"]) | TEXT, _or_anything(streams), max_size=2)


def _value(argument: Argument, world: World) -> st.SearchStrategy:
    """Values of the argument's declared type (near its bounds), or anything at all."""
    kind = argument.type
    if kind == "str":
        strategy = _texts(world).get(argument.name, TEXT)
        if argument.choices:
            strategy = st.sampled_from(argument.choices) | strategy
    elif kind == "int":
        strategy = st.integers(min_value=-3, max_value=300) | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    elif kind == "number":
        strategy = NUMBERS
    elif kind == "bool":
        strategy = st.booleans()
    elif kind == "map":
        strategy = {"spec": _spec(world), "exec": _exec(), "resources": _resources(),
                    "acks": _acks(world)}.get(argument.name, st.dictionaries(TEXT, ANY, max_size=3))
    elif kind == "list":
        strategy = st.lists(st.integers(-1, 5), max_size=3) | st.lists(ANY, max_size=3)
    elif kind == "strings":
        strategy = st.lists(_texts(world).get("image", TEXT) | _texts(world)["container"], max_size=3)
    elif kind == "path":
        strategy = st.sampled_from(world.paths())
    else:
        strategy = SIGNALS
    return strategy


def _arguments(op: str, world: World) -> st.SearchStrategy:
    """An argument map for ``op``: each declared argument absent, well-typed or anything; now
    and then one it does not take; now and then not a map at all."""
    declared = OPERATIONS[op].arguments.values() if op in OPERATIONS else ()
    maps = _some({argument.name: _value(argument, world) for argument in declared},
                 required=tuple(argument.name for argument in declared if argument.required), most=6)
    if op == "bus.sync":
        maps = _some({"token": st.sampled_from(["t0k3n", "a" * 64, "a" * 65, "bad token", ""])})
    return st.one_of(maps, maps, maps, maps, st.dictionaries(TEXT, ANY, max_size=3))


# Examples per operation: about 45 operations, so the whole fuzz stays within a few seconds.
# DOCKYARD_FUZZ_EXAMPLES=500 searches deeper (minutes).
EXAMPLES = int(os.environ.get("DOCKYARD_FUZZ_EXAMPLES", "5"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@pytest.mark.parametrize("op", sorted(OPERATIONS))
@FUZZ
@given(data=st.data())
def test_fuzzed_arguments_get_one_reply_never_internal_and_refusals_change_nothing(
    world: World, op: str, data: st.DataObject
) -> None:
    _request(world, op, data.draw(_arguments(op, world), label="args"))


# --- malformed envelopes -----------------------------------------------------------------

ENVELOPE_VALUES = {
    "v": st.sampled_from([1, 1, 2, "1", True, None]),
    "topic": st.sampled_from(["request.container.list", "request.daemon.info", "request.nope", "request.",
                              "request", "reply.container.list", "stream.container.run", "container.x.start",
                              "a b", ""]) | st.text(max_size=20),
    "seq": st.integers(min_value=-1, max_value=2**64 - 1) | st.floats() | st.text(max_size=3),
    "ts": st.floats() | st.integers(-1, 10) | st.text(max_size=3),
    "source": st.text(max_size=5) | st.integers(-1, 1),
    "data": st.dictionaries(st.sampled_from(["all", "x"]), ANY, max_size=2) | ANY,
}


def _envelope_frames() -> st.SearchStrategy:
    maps = st.fixed_dictionaries({}, optional=ENVELOPE_VALUES | {"extra": ANY}).map(
        lambda envelope: msgpack.packb(envelope, use_bin_type=True))
    return st.one_of(maps, maps, st.binary(max_size=64), ANY.map(lambda value: msgpack.packb(value, use_bin_type=True)))


@settings(max_examples=EXAMPLES * 12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=_envelope_frames(), parts=st.sampled_from([2, 2, 2, 1, 3]))
def test_a_fuzzed_control_message_gets_at_most_one_reply_and_never_internal(
    world: World, frame: bytes, parts: int
) -> None:
    frames = {1: [frame], 2: [PEER, frame], 3: [PEER, frame, b""]}[parts]
    server, log, unchanged = _send(world, frames)
    replies = server.replies()
    assert not log.errors
    assert all(envelope.data["error"]["code"] != "internal" for envelope in replies if not envelope.data["ok"])
    try:
        envelope = codec.decode(frame)
    except Exception:  # noqa: BLE001 - whatever the codec refuses
        envelope = None
    if parts != 2:
        assert replies == [] and server.stats.frames_bad == 1  # not [peer, frame]: counted, dropped
    elif envelope is not None and codec.is_stream(envelope):
        assert replies == [] and server.stats.stream_in_dropped == 1  # for no running request: counted
    else:
        assert len(replies) == 1  # a bad frame, an unknown op, or the op's own reply
        if envelope is None:
            assert replies[0].data["error"]["code"] == "bad_frame" and replies[0].seq == 0
        else:
            assert replies[0].seq == envelope.seq
    if not (replies and replies[0].data["ok"]):
        assert unchanged


def test_declared_errors_and_replies_are_the_bus_s_codes_and_keys() -> None:
    from bus.errors import ERROR_CODES

    for name, operation in OPERATIONS.items():
        assert operation.error_codes <= ERROR_CODES, name
        assert operation.served_by in ("daemon", "bus"), name
        if "as run" in operation.reply or operation.reply.startswith("image summary"):
            continue  # the column refers to another reply's keys
        for key in operation.keys or ():  # every declared key is shown in the reply column
            assert key.rstrip("?") in operation.reply, f"{name}: {key} is not in its reply column"


#: The code that sends or serves operations; an operation's name is written in none of them.
SENDERS = ("supervisor/cli", "supervisor/handlers.py", "supervisor/loghandlers.py", "workers")


def test_no_operation_name_is_written_out_beside_the_registry() -> None:
    """The CLI, the handlers and the workers name operations by the registry's constants
    (``ops.CONTAINER_RUN``), never as a string of their own."""
    import ast

    repo = Path(__file__).parents[2]
    found = []
    for place in SENDERS:
        paths = [repo / place] if place.endswith(".py") else sorted((repo / place).rglob("*.py"))
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in OPERATIONS:
                    found.append(f"{path.relative_to(repo)}:{node.lineno}: {node.value!r}")
    assert found == [], "operation names written out; use supervisor.operations' constants:\n" + "\n".join(found)

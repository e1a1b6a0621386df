"""Every bus operation, declared once: its name, its arguments, its reply and its errors.

Each :class:`Operation` names its arguments: a type (below), required or not, a default, and
for some a range or a set of choices. :func:`check_arguments` runs before a handler: it
refuses a missing, unknown or ill-typed argument with an ``invalid_argument`` error that
names the operation, the argument and what was expected, and gives the handler a map in
which every declared argument is present (optional ones absent from the request hold their
default). Handlers then check only what depends on the daemon's state or on the inside of a
nested map (a spec's fields are checked by :class:`~supervisor.spec.ContainerSpec`).

An argument sent as ``null`` counts as absent, as the CLI sends unset options.

The declarations are the one source of (issue 16):

* the handlers' table (supervisor/handlers.py refuses a handler without a declaration);
* the operation names the CLI and the workers send (the constants below: ``CONTAINER_RUN``);
* the operation table of docs/events.md, generated from :data:`OPERATIONS`
  (supervisor/optable.py)::

      python -m supervisor.optable --markdown          # print it
      python -m supervisor.optable --update docs/events.md

``bus.ping`` and ``bus.sync`` are declared here too, for the table and the clients; the bus
serves and checks them itself (bus/server.py). This module imports nothing heavy: the CLI
imports it.

Argument types: supervisor/arguments.py.
"""

from __future__ import annotations

from typing import Any

from supervisor.arguments import Argument, kind_of, shown  # EXPECTED, Argument: for the declarations
from supervisor.errors import InvalidArgument

#: The error codes any operation may answer, besides its own (docs/events.md explains each):
#: a request of the wrong shape, an argument refused by :meth:`Operation.check`, a bug, and
#: a client past its cap of requests in flight (bus/control.py).
COMMON_ERRORS = ("bad_request", "invalid_argument", "internal", "too_many_requests")


class Operation:
    """One bus operation, as clients and docs/events.md see it.

    Args:
        name: the operation, ``noun.verb``: the request's topic is ``request.<name>``.
        arguments: what it takes.
        reply: what it answers, for people (markdown: the table's reply column).
        keys: the keys of a successful reply's map (``name?``: present only sometimes);
            ``None`` when it is not a map of fixed keys (an inspect document).
        errors: the error codes it may answer besides :data:`COMMON_ERRORS`, each with when
            (empty: as the code's meaning says).
        served_by: ``daemon`` (supervisor/handlers.py) or ``bus`` (bus/server.py itself).
    """

    __slots__ = ("name", "arguments", "reply", "keys", "errors", "served_by")

    def __init__(self, name: str, arguments: tuple[Argument, ...] = (), reply: str = "",
                 keys: tuple[str, ...] | None = None, errors: dict[str, str] | None = None,
                 served_by: str = "daemon"):
        self.name = name
        self.arguments = {argument.name: argument for argument in arguments}
        self.reply = reply
        self.keys = keys
        self.errors = dict(errors or {})
        self.served_by = served_by

    @property
    def error_codes(self) -> frozenset[str]:
        """Every code an error reply to it may carry."""
        return frozenset(COMMON_ERRORS) | frozenset(self.errors)

    def check(self, args: Any) -> dict[str, Any]:
        """The arguments, checked; every declared one present (absent ones: their default).

        Raises:
            InvalidArgument: one is missing, unknown or not what it must be; the message
                names the operation, the argument and what was expected.
        """
        if type(args) is not dict:
            raise InvalidArgument(f"{self.name}: its arguments must be a map, not {kind_of(args)}", op=self.name)
        unknown = sorted(repr(name) for name in args if name not in self.arguments)
        if unknown:
            takes = ", ".join(self.arguments) or "no arguments"
            raise InvalidArgument(
                f"{self.name}: unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
                f"(it takes: {takes})", op=self.name, arguments=unknown,
            )
        checked: dict[str, Any] = {}
        for name, argument in self.arguments.items():
            value = args.get(name)
            if value is None:
                if argument.required:
                    raise InvalidArgument(f"{self.name}: argument {name!r} is required ({argument.expected})",
                                          op=self.name, argument=name, expected=argument.expected)
                default = argument.default
                checked[name] = list(default) if type(default) is list else default  # never shared
                continue
            if not argument.accepts(value):
                raise InvalidArgument(
                    f"{self.name}: argument {name!r} must be {argument.expected}, not {shown(value)}",
                    op=self.name, argument=name, expected=argument.expected,
                )
            checked[name] = value
        return checked


# --- the operations ----------------------------------------------------------------------
# Their names, for the code that sends them (the CLI, the workers, the clients): a name is
# written once, here.

BUS_PING = "bus.ping"
BUS_SYNC = "bus.sync"
CONTAINER_CREATE = "container.create"
CONTAINER_RUN = "container.run"
CONTAINER_START = "container.start"
CONTAINER_ATTACH = "container.attach"
CONTAINER_EXEC = "container.exec"
CONTAINER_STOP = "container.stop"
CONTAINER_KILL = "container.kill"
CONTAINER_PAUSE = "container.pause"
CONTAINER_UNPAUSE = "container.unpause"
CONTAINER_RESTART = "container.restart"
CONTAINER_WAIT = "container.wait"
CONTAINER_REMOVE = "container.remove"
CONTAINER_LIST = "container.list"
CONTAINER_INSPECT = "container.inspect"
CONTAINER_UPDATE = "container.update"
CONTAINER_RENAME = "container.rename"
CONTAINER_STATS = "container.stats"
CONTAINER_HEALTH_CHECK = "container.health_check"
CONTAINER_HEALTH_REPORT = "container.health_report"
CONTAINER_SCHEDULE_RESTART = "container.schedule_restart"
IMAGE_IMPORT = "image.import"
IMAGE_TAG = "image.tag"
IMAGE_REMOVE = "image.remove"
IMAGE_HISTORY = "image.history"
IMAGE_SAVE = "image.save"
IMAGE_LOAD = "image.load"
CONTAINER_COMMIT = "container.commit"
CONTAINER_DIFF = "container.diff"
CONTAINER_EXPORT = "container.export"
CONTAINER_COPY_FROM = "container.copy_from"
CONTAINER_COPY_TO = "container.copy_to"
IMAGE_LIST = "image.list"
IMAGE_INSPECT = "image.inspect"
IMAGE_PULL = "image.pull"
IMAGE_PUSH = "image.push"
IMAGE_BUILD = "image.build"
IMAGE_LOGIN = "image.login"
IMAGE_LOGOUT = "image.logout"
EVENTS_REPLAY = "events.replay"
EVENTS_KEYS_ADD = "events.keys_add"
EVENTS_KEYS_REMOVE = "events.keys_remove"
EVENTS_KEYS_LIST = "events.keys_list"
LOGS_READ = "logs.read"
LOGS_STATUS = "logs.status"
LOGS_ACK = "logs.ack"
LOGS_REPLAY = "logs.replay"
DAEMON_INFO = "daemon.info"
VOLUME_CREATE = "volume.create"
VOLUME_LIST = "volume.list"
VOLUME_INSPECT = "volume.inspect"
VOLUME_REMOVE = "volume.remove"
VOLUME_PRUNE = "volume.prune"
NETWORK_CREATE = "network.create"
NETWORK_LIST = "network.list"
NETWORK_INSPECT = "network.inspect"
NETWORK_REMOVE = "network.remove"
NETWORK_PRUNE = "network.prune"
NETWORK_CONNECT = "network.connect"
NETWORK_DISCONNECT = "network.disconnect"


def _op(name: str, *arguments: Argument, reply: str, keys: tuple[str, ...] | None,
        errors: dict[str, str] | None = None, served_by: str = "daemon") -> Operation:
    return Operation(name, arguments, reply, keys, errors, served_by)


def _container(doc: str = "") -> Argument:
    return Argument("container", "str", required=True, doc=doc)


def _image() -> Argument:
    return Argument("image", "str", required=True)


def _window() -> Argument:
    return Argument("window", "int", minimum=1, maximum=256, doc="output credits: flow control, 1..256")


def _session(*arguments: Argument) -> tuple[Argument, ...]:
    return (*arguments, Argument("stdin", "bool", default=False, doc="send your input to the process"), _window())


def _attach() -> Argument:
    return Argument("attach", "bool", default=False, doc="a session, below")


#: A container named by a name, an id or an id prefix.
_CONTAINER_REF = {"not_found": "no such container", "conflict": "an ambiguous id prefix"}
#: An image named by a reference, an id or an id prefix.
_IMAGE_REF = {"not_found": "no such image", "conflict": "an ambiguous id prefix"}
_START = {"invalid_state": "it could not start: `details.exit_code` 125, 126 or 127"}
_NO_HEALTH = {**_CONTAINER_REF, "invalid_state": "it is not running or has no health check"}
_REGISTRY = {
    "invalid_argument": "also a malformed reference, or credentials the registry refused: `details.reason` tells which",
    "not_found": "no such repository, manifest or tag",
    "invalid_state": "the registry is unreachable, answered what the spec does not allow, or a digest differs",
}
#: The final reply of an attached session (container.run, start, attach).
_SESSION_KEYS = ("id", "name?", "exit_code?", "dropped?", "detached?")
_SUMMARY_KEYS = ("id", "repo_tags", "created", "size")

_OPERATIONS = (
    _op(BUS_PING, reply="`{pid, source}`", keys=("pid", "source"), served_by="bus"),
    _op(BUS_SYNC, Argument("token", "str", required=True, doc="1 to 64 of `[A-Za-z0-9_-]`"),
        reply="`{token}` once the XPUB has seen your subscription to `sync.<token>`: every subscription you "
              "made before it is then in effect",
        keys=("token",), served_by="bus",
        errors={"timeout": "after 5 s", "conflict": "while another `bus.sync` with that token waits"}),
    _op(CONTAINER_CREATE, Argument("spec", "map", required=True, doc="the map below"),
        reply="`{id, name}`", keys=("id", "name"),
        errors={"not_found": "no such image", "conflict": "the name is in use"}),
    _op(CONTAINER_RUN, Argument("spec", "map", required=True, doc="the map below"), *_session(_attach()),
        reply="detached: `{id, name}`; attached: a session (below), then `{id, name, exit_code, dropped}` or "
              "`{id, name, detached: true}`",
        keys=("id", "name", "exit_code?", "dropped?", "detached?"),
        errors={"not_found": "no such image", "conflict": "the name is in use", **_START}),
    _op(CONTAINER_START, *_session(_container(), _attach()),
        reply="`{id}`; attached: a session, then as run", keys=_SESSION_KEYS,
        errors={**_CONTAINER_REF, "invalid_state": "it is running; " + _START["invalid_state"]}),
    _op(CONTAINER_ATTACH, *_session(_container()),
        reply="a session with a running container, then as run", keys=_SESSION_KEYS,
        errors={**_CONTAINER_REF, "invalid_state": "it is not running"}),
    _op(CONTAINER_EXEC, _container(),
        Argument("exec", "map", required=True, doc="`{cmd, env?, workdir?, user?, tty?, stdin?, detach?, privileged?}`"),
        _window(),
        reply="`exec.detach`: `{exec_id, pid}` once it runs; else a session, then `{exec_id, exit_code, dropped}` "
              "or `{exec_id, detached: true}`",
        keys=("exec_id", "pid?", "exit_code?", "dropped?", "detached?"),
        errors={**_CONTAINER_REF, "invalid_state": "it is not running; the command could not start "
                                                   "(`details.exit_code` 125, 126 or 127)"}),
    _op(CONTAINER_STOP, _container(), Argument("timeout", "int", minimum=0, doc="s"),
        reply="`{id}`", keys=("id",), errors=_CONTAINER_REF),
    _op(CONTAINER_KILL, _container(), Argument("signal", "signal", default="KILL", doc="name or number, default KILL"),
        reply="`{id}`", keys=("id",), errors={**_CONTAINER_REF, "invalid_state": "it is not running"}),
    _op(CONTAINER_PAUSE, _container(), reply="`{id}` once its processes are frozen", keys=("id",),
        errors={**_CONTAINER_REF, "invalid_state": "it is not running, or already paused"}),
    _op(CONTAINER_UNPAUSE, _container(), reply="`{id}` once its processes run again", keys=("id",),
        errors={**_CONTAINER_REF, "invalid_state": "it is not paused"}),
    _op(CONTAINER_RESTART, _container(), Argument("timeout", "int", minimum=0, doc="s"),
        reply="`{id}`", keys=("id",), errors={**_CONTAINER_REF, **_START}),
    _op(CONTAINER_WAIT, _container(), reply="`{exit_code}` once it is not running", keys=("exit_code",),
        errors=_CONTAINER_REF),
    _op(CONTAINER_REMOVE, _container(), Argument("force", "bool", default=False),
        Argument("volumes", "bool", default=False, doc="its anonymous volumes too (`rm -v`)"),
        reply="`{id}`", keys=("id",), errors={**_CONTAINER_REF, "invalid_state": "it is running, without `force`"}),
    _op(CONTAINER_LIST, Argument("all", "bool", default=False),
        Argument("filters", "strings", default=[], doc="[`KEY=VALUE`]: id, name, label, status, exited, ancestor, "
                                                       "before, since, volume, network, health (docs/cli.md)"),
        reply="`{containers: [{id, name, image, command, created, status, exit_code, started_at, finished_at, "
              "restart_policy, restart_count, restarting, health, ports, image_id, labels, mounts, networks}]}`; "
              "without `all`, running and restarting ones (a status, before or since filter: every one)",
        keys=("containers",), errors={"not_found": "a before= or since= container"}),
    _op(CONTAINER_INSPECT, _container(),
        reply="docker's inspect document (`HostConfig` has Memory, MemorySwap, MemoryReservation, NanoCpus, "
              "CpuShares, CpusetCpus, PidsLimit, Devices; `State.OOMKilled`)",
        keys=None, errors=_CONTAINER_REF),
    _op(CONTAINER_UPDATE, _container(),
        Argument("resources", "map", doc="the map below; 0 leaves a limit unchanged; not `devices`"),
        Argument("restart", "str", doc="a new restart policy: no, always, unless-stopped, on-failure[:N]"),
        reply="`{id, resources}`", keys=("id", "resources"), errors=_CONTAINER_REF),
    _op(CONTAINER_RENAME, _container(), Argument("name", "str", required=True, doc="the new name"),
        reply="`{id, name}`", keys=("id", "name"),
        errors={"not_found": "no such container", "conflict": "an ambiguous id prefix; the name is in use"}),
    _op(CONTAINER_STATS, Argument("containers", "strings", default=[], doc="[ref], default every running one"),
        reply="`{stats: [the stats.<id> data]}`, sampled now", keys=("stats",), errors=_CONTAINER_REF),
    _op(CONTAINER_HEALTH_CHECK, _container(),
        reply="`{id, status, failing_streak, exit_code}`: runs its health check once now (the monitor's request "
              "every interval)",
        keys=("id", "status", "failing_streak", "exit_code"), errors=_NO_HEALTH),
    _op(CONTAINER_HEALTH_REPORT, _container(), Argument("start", "number", required=True, doc="Unix s"),
        Argument("end", "number", required=True, doc="Unix s"),
        Argument("exit_code", "int", required=True, doc="-1: timed out"), Argument("output", "str", default=""),
        reply="`{id, status, failing_streak}`; the monitor's report of one health probe",
        keys=("id", "status", "failing_streak"), errors=_NO_HEALTH),
    _op(CONTAINER_SCHEDULE_RESTART, _container(),
        Argument("exit", "str", required=True, doc="its `State.FinishedAt`"),
        Argument("attempt", "int", required=True, minimum=1, doc="int >= 1"),
        Argument("delay", "number", required=True, doc="s, 0..3600"),
        reply="`{id, restart_count}`; the monitor's request for a restart policy",
        keys=("id", "restart_count"),
        errors={"not_found": "no such container",
                "conflict": "an ambiguous id prefix; that exit was already answered or is not the last, the user "
                            "stopped it, or the daemon is stopping",
                "invalid_state": "it is not exited or its policy is `no`"}),
    _op(IMAGE_IMPORT, Argument("path", "path", required=True, doc="absolute, read by the daemon"),
        Argument("reference", "str", required=True),
        Argument("changes", "strings", default=[], doc="[Dockerfile instruction]"),
        Argument("message", "str", default="", doc="the history comment"),
        reply="`{id, repo_tags, created, size}`", keys=_SUMMARY_KEYS,
        errors={"invalid_argument": "also a file that is not a tar the daemon can import safely"}),
    _op(IMAGE_TAG, _image(), Argument("reference", "str", required=True),
        reply="image summary", keys=_SUMMARY_KEYS, errors=_IMAGE_REF),
    _op(IMAGE_REMOVE, _image(), Argument("force", "bool", default=False),
        Argument("no_prune", "bool", default=False, doc="keep the untagged parents (`rmi --no-prune`)"),
        reply='`{report: [{"Untagged": ref} \\| {"Deleted": "sha256:<id>"}]}`', keys=("report",),
        errors={**_IMAGE_REF, "conflict": "an ambiguous id prefix; without `force`: a container uses it, or an id "
                                          "names an image with several tags"}),
    _op(IMAGE_HISTORY, _image(), reply="`{history: [{id, created, created_by, size, comment}]}`, newest first",
        keys=("history",), errors=_IMAGE_REF),
    _op(IMAGE_SAVE, Argument("images", "strings", required=True, doc="[ref]"),
        Argument("path", "path", required=True, doc="absolute, written by the daemon"),
        reply="`{saved: [ref]}`", keys=("saved",), errors=_IMAGE_REF),
    _op(IMAGE_LOAD, Argument("path", "path", required=True, doc="absolute, read by the daemon"),
        reply="`{images: [summary + loaded_tags]}` (`loaded_tags`: the tags the archive named; `repo_tags` has "
              "all of the image's)",
        keys=("images",)),
    _op(CONTAINER_COMMIT, _container(), Argument("reference", "str"), Argument("comment", "str", default=""),
        Argument("author", "str", default=""), Argument("changes", "strings", default=[]),
        reply="image summary, `warnings`?", keys=(*_SUMMARY_KEYS, "warnings?"), errors=_CONTAINER_REF),
    _op(CONTAINER_DIFF, _container(), reply='`{changes: [["A"\\|"C"\\|"D", path]], warnings?}`, sorted by path',
        keys=("changes", "warnings?"), errors=_CONTAINER_REF),
    _op(CONTAINER_EXPORT, _container(), Argument("path", "path", required=True, doc="absolute"),
        reply="`{path, warnings?}`", keys=("path", "warnings?"), errors=_CONTAINER_REF),
    _op(CONTAINER_COPY_FROM, _container(), Argument("source", "str", required=True, doc="container path"),
        Argument("path", "path", required=True, doc="absolute: the daemon writes a tar of it there"),
        reply="`{name, warnings?}` (the tar's top member)", keys=("name", "warnings?"), errors=_CONTAINER_REF),
    _op(CONTAINER_COPY_TO, _container(), Argument("source", "path", required=True, doc="absolute host path"),
        Argument("dest", "str", required=True, doc="container path"),
        reply="`{path, warnings?}` (written)", keys=("path", "warnings?"), errors=_CONTAINER_REF),
    _op(IMAGE_LIST, Argument("filters", "strings", default=[],
                             doc="[`KEY=VALUE`]: reference, label, dangling, before, since (docs/cli.md)"),
        Argument("all", "bool", default=False, doc="a build's intermediate images too (`images -a`)"),
        reply="`{images: [{id, repo_tags, created, size, labels, repo_digests}]}`, newest first (`reference=`: the tags that "
              "match)", keys=("images",), errors={"not_found": "a before= or since= image"}),
    _op(IMAGE_INSPECT, _image(), reply="docker's image inspect document", keys=None, errors=_IMAGE_REF),
    _op(IMAGE_PULL, Argument("reference", "str", required=True), Argument("platform", "str", doc="`OS/ARCH[/VARIANT]`"),
        reply="streams `{progress: {operation, reference, digest, kind, status, current, total}}`; then "
              "`{reference, digest, image: {id, repo_tags, created, size}, fetched, skipped, bytes}`",
        keys=("reference", "digest", "image", "fetched", "skipped", "bytes"), errors=_REGISTRY),
    _op(IMAGE_PUSH, Argument("reference", "str", required=True),
        Argument("compression", "str", choices=("gzip", "zstd"),
                 doc="`gzip` or `zstd`, the layers' compression; absent: gzip, and a blob the registry "
                 "has in the other is named as it is"),
        reply="streams `{progress}` as pull; then `{reference, digest, size, uploaded, existed, mounted, bytes}`",
        keys=("reference", "digest", "size", "uploaded", "existed", "mounted", "bytes"),
        errors={**_REGISTRY, "not_found": "no such image here; no such repository at the registry"}),
    _op(IMAGE_BUILD, Argument("context", "path", required=True, doc="absolute: a tar of the build context"),
        Argument("dockerfile", "str", required=True, doc="the Dockerfile's text"),
        Argument("dockerfile_path", "str", doc="the Dockerfile's path in the context: removed from it, as "
                 "`.dockerignore`, when `.dockerignore` excludes it (docker's daemon does)"),
        Argument("tags", "list", default=[], doc="`NAME[:TAG]` each"), Argument("build_args", "map", default={}),
        Argument("target", "str"), Argument("labels", "map", default={}), Argument("no_cache", "bool", default=False),
        Argument("network", "str", default="bridge", doc="none, host or bridge: RUN's network"),
        Argument("pull", "bool", default=False, doc="pull every base image from its registry first"),
        Argument("platform", "str", doc="`linux/ARCH[/VARIANT]` the image is for (default: the base's)"),
        reply="streams `{stream: text}` (docker's lines: `Step N/M : ...`, RUN's output); then "
              "`{id, tags, steps, cached}`",
        keys=("id", "tags", "steps", "cached"),
        errors={**_REGISTRY, "invalid_argument": "a bad Dockerfile, source, step or platform (the message names "
                "the line); with `pull`, what a pull refuses", "not_found": "no such base image"}),
    _op(IMAGE_LOGIN, Argument("registry", "str", doc="default docker.io"), Argument("username", "str", required=True),
        Argument("password", "str", required=True),
        reply="`{registry, status}`; credentials checked by the registry, then saved (0600)",
        keys=("registry", "status"), errors=_REGISTRY),
    _op(IMAGE_LOGOUT, Argument("registry", "str"), reply="`{registry, removed}`", keys=("registry", "removed")),
    _op(VOLUME_CREATE, Argument("name", "str", required=True), Argument("labels", "map", default={}, doc="{key: value}"),
        Argument("options", "map", default={}, doc="the local driver's `type`, `device`, `o` (docs/volumes.md)"),
        reply="`{name}`; an existing volume of that name is returned as it is", keys=("name",),
        errors={"conflict": "it exists with other labels"}),
    _op(VOLUME_LIST, Argument("filters", "strings", default=[], doc="[`dangling=true`\\|`name=`\\|`label=`]"),
        reply="`{volumes: [volume inspect documents]}`", keys=("volumes",)),
    _op(VOLUME_INSPECT, Argument("name", "str", required=True), reply="docker's volume inspect document", keys=None,
        errors={"not_found": "no such volume"}),
    _op(VOLUME_REMOVE, Argument("name", "str", required=True),
        Argument("force", "bool", default=False, doc="a missing volume is no error"),
        reply="`{name}`", keys=("name",),
        errors={"not_found": "no such volume", "conflict": "containers use it (named in the message)"}),
    _op(VOLUME_PRUNE, Argument("all", "bool", default=False, doc="unused named volumes too"),
        reply="`{removed: [name]}`: the unused anonymous volumes", keys=("removed",)),
    _op(NETWORK_CREATE, Argument("name", "str", required=True), Argument("subnet", "str", default="", doc="IPv4 CIDR"),
        Argument("gateway", "str", default=""), Argument("ip_range", "str", default="", doc="CIDR inside the subnet"),
        Argument("internal", "bool", default=False, doc="no way out"),
        Argument("ipv6", "bool", default=False), Argument("subnet6", "str", default="", doc="IPv6 CIDR"),
        Argument("gateway6", "str", default=""),
        Argument("labels", "map", default={}, doc="{key: value}"),
        Argument("options", "map", default={}, doc="`com.docker.network.bridge.name`: its bridge"),
        Argument("aux_addresses", "map", default={}, doc="{name: address} kept out of the pools (docker's "
                 "AuxiliaryAddresses)"),
        reply="`{id, name}`", keys=("id", "name"),
        errors={"conflict": "the name is taken"}),
    _op(NETWORK_LIST, Argument("filters", "strings", default=[],
                               doc="[`name=`\\|`id=`\\|`label=`\\|`driver=`\\|`type=custom\\|builtin`\\|`dangling=`]"),
        reply="`{networks: [network inspect documents]}`", keys=("networks",)),
    _op(NETWORK_INSPECT, Argument("network", "str", required=True, doc="name, id or id prefix"),
        reply="docker's network inspect document", keys=None, errors={"not_found": "no such network"}),
    _op(NETWORK_REMOVE, Argument("network", "str", required=True), reply="`{name}`", keys=("name",),
        errors={"not_found": "no such network", "conflict": "running containers are on it (named)"}),
    _op(NETWORK_PRUNE, reply="`{removed: [name]}`: the user networks no running container is on", keys=("removed",)),
    _op(NETWORK_CONNECT, Argument("network", "str", required=True), _container(),
        Argument("aliases", "strings", default=[], doc="its names on that network besides its own"),
        Argument("ipv4", "str", default=""), Argument("ipv6", "str", default=""),
        reply="`{}`: connected now if it runs, and at its next starts", keys=(),
        errors={"not_found": "no such network or container", "conflict": "already connected; the address is taken"}),
    _op(NETWORK_DISCONNECT, Argument("network", "str", required=True), _container(),
        Argument("force", "bool", default=False, doc="not connected is no error"),
        reply="`{}`", keys=(), errors={"not_found": "no such network or container, or not connected"}),
    _op(EVENTS_REPLAY, Argument("since", "number", doc="Unix s"), Argument("until", "number", doc="Unix s"),
        Argument("after_seq", "int", minimum=0, doc="only events with a greater seq (a cursor)"),
        Argument("filters", "map", doc="docker's event filters, `{key: [values]}` (bus/filters.py)"),
        reply="`{events: [envelope maps], last_seq, lost}`; `lost`: events after `after_seq` the journal no "
              "longer holds", keys=("events", "last_seq", "lost")),
    _op(EVENTS_KEYS_ADD, Argument("name", "str", required=True, doc="1-64 of [A-Za-z0-9_.-]"),
        Argument("key", "str", required=True, doc="a CURVE public key (Z85) or a ZeroMQ certificate's text"),
        reply="`{name, key}`: that client may subscribe over `--events-listen` from its next handshake",
        keys=("name", "key")),
    _op(EVENTS_KEYS_REMOVE, Argument("name", "str", required=True),
        reply="`{name}`", keys=("name",), errors={"not_found": "no allowed client of that name"}),
    _op(EVENTS_KEYS_LIST, reply="`{listen, server_key, clients: [{name, key}]}`; makes the daemon's key pair "
        "if missing", keys=("listen", "server_key", "clients")),
    _op(LOGS_READ, _container(), Argument("since", "number"), Argument("until", "number"),
        Argument("tail", "int", minimum=0), Argument("follow", "bool", default=False), Argument("cursor", "list"),
        Argument("wait", "number", minimum=0),
        reply="`{records: [[stream, ts, data, flags]], cursor, done, unstored}`; ask again with `cursor` until "
              "`done`; `unstored`: output no log collector has stored (docs/logs.md)",
        keys=("records", "cursor", "done", "unstored"),
        errors={**_CONTAINER_REF, "invalid_state": "its stored log cannot be read"}),
    _op(LOGS_STATUS, Argument("container", "str"),
        reply="`{containers: [{id, name, running, options, streams: {stdout: {last, acked, buffered}, stderr}, "
              "blocked}]}`",
        keys=("containers",), errors=_CONTAINER_REF),
    _op(LOGS_ACK, Argument("acks", "map", required=True, doc="`{id: {stdout?, stderr?}}`"),
        reply="`{}` (the log collector's: stored through these seqs)", keys=()),
    _op(LOGS_REPLAY, _container("an id"),
        Argument("stream", "str", required=True, choices=("stdout", "stderr")),
        Argument("from", "int", required=True, minimum=1),
        Argument("max_bytes", "int", default=4 << 20, minimum=1, maximum=4 << 20),
        reply="`{records: [[seq, ts, data, partial]], lost, last}` (the log collector's)",
        keys=("records", "lost", "last"), errors=_CONTAINER_REF),
    _op(DAEMON_INFO,
        reply="`{version, pid, root, run_dir, cgroup_parent, cgroup_path, default_pids_limit, containers, running, "
              "paused, images, events_channel, bus, workers, network, SecurityOptions, userns, logs, warnings}`: `workers` "
              "`{name: {pid (null while no process runs), running, restarts, last_exit}}`; `SecurityOptions` "
              "[str] as docker's (`name=seccomp,profile=default`, `name=cgroupns`, `name=userns`); `userns` null "
              "or `{user, group, uid_map, gid_map, root, layers, idmap_unavailable}` (--userns-remap; `layers`: "
              "`idmapped mounts` or `chowned copies`); `logs` `{collector: {present, last_seen}, "
              "unstored: [{id, name, records, bytes, since, blocked}]}`; `warnings` [str] for people (no log "
              "collector, containers blocked on one)",
        keys=("version", "pid", "root", "run_dir", "cgroup_parent", "cgroup_path", "default_pids_limit",
              "containers", "running", "paused", "images", "events_channel", "bus", "workers", "network", "SecurityOptions",
              "userns", "logs", "warnings")),
)

#: Every operation by name, in the order of docs/events.md's table.
OPERATIONS: dict[str, Operation] = {operation.name: operation for operation in _OPERATIONS}
#: The ones the daemon's handlers serve (the others, ``bus.*``, the bus serves itself).
DAEMON_OPERATIONS: dict[str, Operation] = {
    name: operation for name, operation in OPERATIONS.items() if operation.served_by == "daemon"}


def check_arguments(op: str, args: Any) -> dict[str, Any]:
    """``OPERATIONS[op].check(args)``."""
    return OPERATIONS[op].check(args)


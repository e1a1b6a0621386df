"""The init stage's protocol, without I/O: the launch config and the messages of the handshake.

Sans-IO, as h11: no trio, no syscalls. The supervisor's launcher (``spawn.py``) moves bytes
between pipes and sockets and asks this module what they mean; the lean side (the fork
server and the stage, ``forkserver.py`` and ``init_stage.py``, run by ``python -I -S`` with
the standard library's C modules only) writes them with its own few lines of formatting
(``init_stage.status_pid``, ``init_stage.status_error``; the fork server's replies in
``forkserver.py``). The stage imports nothing from here: this module needs
``dataclasses`` and ``re`` and our package (``dataclasses`` alone takes ~15 ms to import
under ``python -I -S``, more than a forked stage's own work). A unit test decodes what the
stage writes with the decoders below, so the two sides cannot drift apart.

Theory of operation
-------------------

The fork server (``forkserver.py``: why, and its own messages) forks stage 0 per launch
and puts the launch's fds on 0-4. File descriptors of the stage: 0/1/2 are the
container's stdin/stdout/stderr (with ``"terminal": true``, fd 0 is a console socket and 1, 2
are /dev/null: pid 1 makes the terminal, ``console.py``), 3 is the config pipe (read to EOF), 4 is the status pipe
(write; FD_CLOEXEC is set at once, so a successful execve closes it and the supervisor
reads EOF). Any other fd is closed.

::

    supervisor (trio)                 stage 0 (host pid ns)             pid 1 (new namespaces)
    -----------------                 ---------------------             ----------------------
    fork server: fork stage 0 ------> fd 3 = config, fd 4 = status
    write config JSON, close fd 3 --> read fd 3 to EOF
                                      write own pid to cgroup_procs
                                      unshare(NS|UTS|IPC|NET|PID|CGROUP)
                                      fork -------------------------->  wait on the sync pipe
    <-- {"pid": <host pid>}\\n ------- report the child's pid
                                      send 1 byte on the sync pipe,
                                      _exit(0) ------------------------>  mount overlay, /proc,
    stage 0 reaped (the server says                                      /sys, /dev; pivot_root;
    {"exit": 0}), pidfd_open(pid)                                        mask, read-only paths;
    (pid 1 is re-parented to us:                                         hostname, lo up; user;
     we are a child subreaper)                                           capabilities,
                                                                         no_new_privs; cwd
    <-- EOF (execve closed fd 4) --------------------------------------  execve(argv)
    <-- {"error": "...", "exit_code": N}\\n --------------------------  or report and _exit(N)

Under ``--userns-remap`` (``"uid_map"`` set) stage 0 does more before its unshare, while it
is still the host's root: it makes the container's user namespace and writes its maps from
outside, mounts the overlay over idmapped image layers in a mount namespace of its own, then
enters the user namespace as its root; the namespaces it unshares next belong to it
(``userns.py`` has that part's diagram). The supervisor's side of the handshake is unchanged.

With ``"network_sync": true`` the supervisor keeps fd 3 open after the config (which then
ends with a newline), configures pid 1's network namespace once it has the pid (the veth,
eth0, the route: ``supervisor/network``), and writes one byte on fd 3; pid 1 reads it last,
right before execve, so its own set-up overlaps the supervisor's. EOF instead of the byte
(the supervisor gave up) makes pid 1 report an error and exit 125.

The pid line always comes first: pid 1 does not start until stage 0 has written it and
sent one byte on the sync pipe. EOF without that byte means stage 0 died before telling
anyone the pid, and the child exits at once. No per-container helper process stays
around: stage 0 exits, and the supervisor (a child subreaper) adopts pid 1.

An error before execve is one JSON line, ``{"error": message, "exit_code": N}``, and the
process exits with N: 127 when the command is not found, 126 when it cannot be invoked,
125 for everything else (cgroups, mounts, pivot_root, user lookup, ...), as docker does.
An exec (``supervisor/exec.py``, ``nsenter.py``) speaks the same status protocol.

Config (one JSON document on fd 3, :class:`LaunchConfig`)::

    {"id": "<64 hex>",                 the container id; its first 12 chars are the
                                       hostname when "hostname" is empty
     "lower": ["/dir/top", ...],       overlay lower dirs, top first
     "upper": "/dir/upper",            overlay upper and work dirs, on one filesystem
     "work": "/dir/work",
     "rootfs": "/dir/merged",          where the overlay is mounted: inside the container's
                                       mount namespace only, so it vanishes with it
     "volatile": false,                mount the overlay volatile: never synced (--rm)
     "argv": ["sh", "-c", "..."],      argv[0] without a slash is looked up in env's PATH
     "env": ["PATH=...", ...],         the whole environment; HOME is added from passwd
     "cwd": "/",                       created if missing
     "user": "" | "uid" | "uid:gid" | "name" | "name:group",
                                       "" is root; names come from the container's
                                       /etc/passwd and /etc/group
     "hostname": "abc123",
     "cgroup_procs": ["/sys/fs/cgroup/pids/dockyard/<id>/cgroup.procs", ...],
     "capabilities": ["CAP_CHOWN", ...],   kept in the bounding set (and for root in the
                                           effective and permitted sets); the rest dropped
     "masked_paths": [...],            /dev/null or an empty read-only tmpfs over them
     "readonly_paths": [...],          bind-mounted read-only
     "network_namespace": "" | "host" | "/proc/PID/ns/net",
                                       a new one, the host's, or another container's (setns)
     "etc_dir": "/dir",                hosts, hostname, resolv.conf bind-mounted into /etc
     "network_sync": false,            wait on fd 3 for the network before execve (above)
     "seccomp": "<hex>",               the compiled BPF program ("" none), loaded last
                                       (security.drop_privileges: runc's order)
     "no_new_privileges": false,       set no_new_privs (--security-opt no-new-privileges)
     "group_add": ["audio", "1000"],   more supplementary groups (--group-add)
     "sysctls": ["net.ipv4.ip_forward=1"],  written under /proc/sys (--sysctl)
     "writable_sysfs": false,         /sys read-write (--privileged)
     "mounts": ["TYPE\tSOURCE\tTARGET\tFLAGS\tDATA", ...],
                                       volumes, binds and tmpfs mounts, in order, over the
                                       overlay before pivot_root (rootfs.mount_volumes):
                                       TYPE bind|volume|tmpfs, FLAGS ro,nocopy,<propagation>,
                                       DATA a tmpfs's mount options
     "readonly_rootfs": false,         --read-only: / remounted read-only after pivot_root
     "rlimits": ["nofile 1024 2048"],  setrlimit before execve (NAME SOFT HARD, -1 unlimited)
     "shm_size": "",                   /dev/shm's size in bytes ("": 64m)
     "terminal": false,                -t: fd 0 is the console socket; a pty of the
                                       container's devpts is made and its master sent
                                       back on it; /dev/console bound to it (console.py)
     "cgroupfs": ["memory\t/sys/fs/cgroup/memory/dockyard/<id>", ...] | ["cgroup2"],
                                       what /sys/fs/cgroup shows (cgroupfs.py): v1, each
                                       hierarchy's own cgroup bound read-only at its name;
                                       v2, a cgroup2 mount in the cgroup namespace
     "uid_map": ["0 100000 65536"],    --userns-remap: a user namespace with these maps
     "gid_map": ["0 100000 65536"],    (INSIDE OUTSIDE COUNT), made by stage 0 (userns.py);
                                       [] for none (the host's)
     "idmap_layers": false}            idmapped mounts of the lower dirs (else the daemon
                                       gave copies chowned for the mapping)
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields

from supervisor.errors import InvalidArgument, StartError
from supervisor.runtime.security import CAPABILITIES
from supervisor.spec import HOSTNAME, USER

CONTAINER_ID = re.compile(r"^[0-9a-f]{64}\Z")
DEVICE_ENTRY = re.compile(r"^[cb] \d{1,10} \d{1,10} [0-7]{1,4} /dev/[^\x00\s]+\Z")
MAX_STATUS_BYTES = 65536  # more than any honest status report

# Docker's defaults (moby oci/defaults.go and caps/defaults.go). The OCI runtime's
# ``spec`` has runc's masked and read-only paths instead (supervisor/ociruntime/template.py):
# a deliberate copy, since they already differ in order and entries and each follows its
# own upstream.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)



class LaunchError(StartError):
    """The container could not be started; ``exit_code`` is 125, 126 or 127 as with docker."""


@dataclass(frozen=True)
class LaunchConfig:
    """What the init stage needs, validated on construction; the config JSON above
    (``container_id`` is ``"id"`` there). Lists are accepted and stored as tuples."""

    container_id: str
    lower: tuple[str, ...]
    upper: str
    work: str
    rootfs: str
    argv: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str = "/"
    user: str = ""
    hostname: str = ""
    cgroup_procs: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    devices: tuple[str, ...] = ()  # "c|b MAJOR MINOR MODE(octal) /dev/PATH", made in /dev
    # "" a new network namespace, "host" the host's, or a /proc/PID/ns/net path to join.
    network_namespace: str = ""
    # "" a new UTS namespace (its hostname set to ``hostname``), "host" the host's (untouched).
    uts_namespace: str = ""
    etc_dir: str = ""  # where hosts, hostname and resolv.conf are, bind-mounted into /etc
    # pid 1 waits, before its execve, for the supervisor's go (the network is configured,
    # its mount namespace held: ForkServer.launch(hold_mounts=True)); launch(prepare=...)
    # runs between the pid report and that go.
    network_sync: bool = False
    # The writable layer is thrown away at exit (--rm): mount it volatile (never synced).
    volatile: bool = False
    # Security (issue 18, docs/security.md): the compiled seccomp program in hex ("" none),
    # no_new_privs, --group-add entries, --sysctl KEY=VALUE entries, /sys writable (--privileged).
    seccomp: str = ""
    no_new_privileges: bool = False
    group_add: tuple[str, ...] = ()
    sysctls: tuple[str, ...] = ()
    writable_sysfs: bool = False
    # Volumes, binds and tmpfs mounts (supervisor/lifecycle/mounts.py stage_entries) and --read-only.
    mounts: tuple[str, ...] = ()
    readonly_rootfs: bool = False
    # --ulimit (with docker's default nofile) and --shm-size (supervisor/ulimits.py).
    rlimits: tuple[str, ...] = ()
    shm_size: str = ""
    # -t: the terminal is made inside the container and sent back on fd 0 (runtime/console.py);
    # ForkServer.launch sets it from the stdio plan.
    terminal: bool = False
    # /sys/fs/cgroup in the container (runtime/cgroupfs.py): "HIERARCHY\tHOST_DIR" per v1
    # hierarchy, or ("cgroup2",); () leaves sysfs's empty directory.
    cgroupfs: tuple[str, ...] = ()
    # --userns-remap (supervisor/userns.py, runtime/userns.py): the maps, and whether the
    # stage idmaps the image layers (else they are the daemon's chowned copies).
    uid_map: tuple[str, ...] = ()
    gid_map: tuple[str, ...] = ()
    idmap_layers: bool = False

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type == "bool":
                if type(value) is not bool:
                    raise InvalidArgument(f"launch config.{item.name}: must be true or false")
                continue
            if item.type == "str":
                if not isinstance(value, str):
                    raise InvalidArgument(f"launch config.{item.name}: must be a string")
                values: tuple = (value,)
            else:
                if not isinstance(value, (list, tuple)):
                    raise InvalidArgument(f"launch config.{item.name}: must be a list of strings")
                values = tuple(value)
                object.__setattr__(self, item.name, values)
            if not all(isinstance(text, str) for text in values):
                raise InvalidArgument(f"launch config.{item.name}: must be a list of strings")
            if any("\x00" in text for text in values):
                raise InvalidArgument(f"launch config.{item.name}: contains a NUL byte")
        if not CONTAINER_ID.match(self.container_id):
            raise InvalidArgument(
                f"launch config.container_id: {self.container_id!r} is not 64 lowercase hex digits"
            )
        if not self.lower:
            raise InvalidArgument("launch config.lower: at least one lower dir is needed")
        for name in ("lower", "upper", "work"):  # overlay mount options: ',' and ':' are syntax
            for path in _as_tuple(getattr(self, name)):
                _check_path(name, path)
                if "," in path or ":" in path:
                    raise InvalidArgument(
                        f"launch config.{name}: {path!r} contains ',' or ':' (overlayfs option syntax)"
                    )
        if self.network_namespace not in ("", "host"):
            _check_path("network_namespace", self.network_namespace)
        if self.etc_dir:
            _check_path("etc_dir", self.etc_dir)
        for name in ("rootfs", "cwd", "cgroup_procs", "masked_paths", "readonly_paths"):
            for path in _as_tuple(getattr(self, name)):
                _check_path(name, path)
        if not self.argv or not self.argv[0]:
            raise InvalidArgument("launch config.argv: a command is needed")
        for entry in self.env:
            if not entry.partition("=")[0] or "=" not in entry:
                raise InvalidArgument(f"launch config.env: {entry!r} is not KEY=VALUE")
        if self.user and not USER.match(self.user):
            raise InvalidArgument(f"launch config.user: {self.user!r} is not USER[:GROUP] or UID[:GID]")
        if self.hostname and not HOSTNAME.match(self.hostname):
            raise InvalidArgument(f"launch config.hostname: {self.hostname!r} is not a valid hostname")
        if self.uts_namespace not in ("", "host"):
            raise InvalidArgument(f"launch config.uts_namespace: {self.uts_namespace!r} is not '' or 'host'")
        for entry in self.devices:
            if not DEVICE_ENTRY.match(entry) or "/../" in entry + "/":
                raise InvalidArgument(f"launch config.devices: {entry!r} is not 'c|b MAJOR MINOR MODE /dev/PATH'")
        _check_mounts(self.mounts)
        _check_limits(self.rlimits, self.shm_size)
        _check_cgroupfs(self.cgroupfs)
        unknown = [name for name in self.capabilities if name not in CAPABILITIES]
        if unknown:
            raise InvalidArgument(f"launch config.capabilities: unknown {', '.join(unknown)}")
        _check_security(self)
        _check_id_maps(self)

    def to_map(self) -> dict:
        data = {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}
        data["id"] = data.pop("container_id")
        return data

    def to_json(self) -> bytes:
        return json.dumps(self.to_map(), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> LaunchConfig:
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise InvalidArgument(f"launch config: invalid JSON: {exc}") from None
        if not isinstance(document, dict) or "id" not in document:
            raise InvalidArgument("launch config: not a JSON object with an id")
        document["container_id"] = document.pop("id")
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(document) - known)
        if unknown:
            raise InvalidArgument(f"launch config: unknown field(s) {', '.join(unknown)}")
        return cls(**document)


ID_MAP_ENTRY = re.compile(r"^[0-9]{1,10} [0-9]{1,10} [1-9][0-9]{0,9}\Z")


def _check_id_maps(config: LaunchConfig) -> None:
    for name in ("uid_map", "gid_map"):
        entries = getattr(config, name)
        if len(entries) > 340 or not all(ID_MAP_ENTRY.match(entry) for entry in entries):
            raise InvalidArgument(f"launch config.{name}: not at most 340 'INSIDE OUTSIDE COUNT' entries")
    if bool(config.uid_map) != bool(config.gid_map):
        raise InvalidArgument("launch config: uid_map and gid_map go together")
    if config.idmap_layers and not config.uid_map:
        raise InvalidArgument("launch config.idmap_layers: needs uid_map and gid_map")


SECCOMP_PROGRAM = re.compile(r"^(?:[0-9a-f]{16})*\Z")  # struct sock_filter: 8 bytes each
SYSCTL_ENTRY = re.compile(r"^[a-z0-9_]+(?:[./][a-zA-Z0-9_-]+)+=[^\n]*\Z")


def _check_security(config: LaunchConfig) -> None:
    """The fields of issue 18 (the daemon checked their meaning; here only their shape)."""
    if not SECCOMP_PROGRAM.match(config.seccomp):
        raise InvalidArgument("launch config.seccomp: not a BPF program in hex")
    for entry in config.group_add:
        if not USER.match(entry) or ":" in entry:
            raise InvalidArgument(f"launch config.group_add: {entry!r} is not a group name or id")
    for entry in config.sysctls:
        if not SYSCTL_ENTRY.match(entry) or ".." in entry.partition("=")[0]:
            raise InvalidArgument(f"launch config.sysctls: {entry!r} is not KEY=VALUE")


MOUNT_TYPES = ("bind", "volume", "tmpfs")
MOUNT_FLAGS = ("ro", "nocopy", "private", "rprivate", "shared", "rshared", "slave", "rslave")


def _check_mounts(entries: tuple[str, ...]) -> None:
    """Each ``TYPE\tSOURCE\tTARGET\tFLAGS\tDATA`` (the config's ``mounts``)."""
    for entry in entries:
        parts = entry.split("\t")
        if len(parts) != 5 or parts[0] not in MOUNT_TYPES or not parts[2].startswith("/"):
            raise InvalidArgument(f"launch config.mounts: {entry!r} is not TYPE<TAB>SOURCE<TAB>TARGET<TAB>FLAGS<TAB>DATA")
        if parts[0] != "tmpfs" and not parts[1].startswith("/"):
            raise InvalidArgument(f"launch config.mounts: {parts[1]!r} is not an absolute path")
        unknown = [flag for flag in parts[3].split(",") if flag and flag not in MOUNT_FLAGS]
        if unknown:
            raise InvalidArgument(f"launch config.mounts: unknown flag(s) {', '.join(unknown)} in {entry!r}")


CGROUP_HIERARCHY = re.compile(r"^[a-z0-9_=,]+\Z")  # memory, cpu,cpuacct, name=systemd


def _check_cgroupfs(entries: tuple[str, ...]) -> None:
    """``("cgroup2",)``, or ``HIERARCHY<TAB>HOST_DIR`` entries (the config's ``cgroupfs``)."""
    if entries == ("cgroup2",):
        return
    for entry in entries:
        hierarchy, tab, directory = entry.partition("\t")
        if not tab or not CGROUP_HIERARCHY.match(hierarchy) or hierarchy in (".", "..") or not directory.startswith("/"):
            raise InvalidArgument(f"launch config.cgroupfs: {entry!r} is not HIERARCHY<TAB>/HOST/DIR or 'cgroup2'")


RLIMIT_ENTRY = re.compile(r"^[a-z]{3,10} -?[0-9]{1,19} -?[0-9]{1,19}\Z")


def _check_limits(rlimits: tuple[str, ...], shm_size: str) -> None:
    for entry in rlimits:
        if not RLIMIT_ENTRY.match(entry):
            raise InvalidArgument(f"launch config.rlimits: {entry!r} is not 'NAME SOFT HARD'")
    if shm_size and not shm_size.isdigit():
        raise InvalidArgument(f"launch config.shm_size: {shm_size!r} is not a number of bytes")


def _as_tuple(value: str | tuple[str, ...]) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else (value,)


def _check_path(name: str, path: str) -> None:
    if not path.startswith("/"):
        raise InvalidArgument(f"launch config.{name}: {path!r} is not an absolute path")


# --- the status pipe: JSON lines from the stage ------------------------------------------------


class NeedData:
    """What :meth:`StatusDecoder.next_message` returns when it needs more bytes."""


NEED_DATA = NeedData()


class StatusDecoder:
    """The messages of the status pipe, from the bytes read off it.

    Feed what was read (``b""`` at EOF) and take messages with :meth:`next_message`: a
    JSON object per line (``{"pid": N}`` first, then ``{"error": ..., "exit_code": N}`` or
    EOF), None at EOF, :data:`NEED_DATA` while a line is incomplete.
    """

    def __init__(self, name: str):
        self.name = name  # the container's short id, for error messages
        self._buffer = bytearray()
        self._eof = False

    def feed(self, data: bytes) -> None:
        """Raises:
            LaunchError: more than MAX_STATUS_BYTES without the end of a line."""
        self._eof = self._eof or not data
        self._buffer += data
        if len(self._buffer) > MAX_STATUS_BYTES:
            raise LaunchError(
                f"cannot start container {self.name}: the init stage sent more than {MAX_STATUS_BYTES} bytes of status"
            )

    def next_message(self) -> dict | None | NeedData:
        """The next message, None at EOF, NEED_DATA before the end of its line.

        Raises:
            LaunchError: the line is not a JSON object.
        """
        if b"\n" not in self._buffer and not self._eof:
            return NEED_DATA
        if not self._buffer:
            return None
        line, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise LaunchError(f"cannot start container {self.name}: malformed status from the init stage: {line[:200]!r}")
        return message

    def pending_pid(self, data: bytes) -> object:
        """The pid of a pid line already received, with ``data`` (what the pipe still held:
        the launch is being cleaned up); None if there is none. Never raises."""
        self._buffer += data
        line = bytes(self._buffer).partition(b"\n")[0]
        try:
            return json.loads(line).get("pid")
        except (ValueError, AttributeError):
            return None


def launch_error(name: str, container_id: str, message: dict) -> LaunchError:
    """The LaunchError of an ``{"error": ..., "exit_code": N}`` status (N not 125, 126 or
    127 is taken as 125)."""
    reason = str(message.get("error"))
    exit_code = message.get("exit_code")
    if exit_code not in (125, 126, 127):
        exit_code = 125
    return LaunchError(f"cannot start container {name}: {reason}", exit_code, container=container_id, reason=reason)


# --- the fork server's replies on a launch's reply socket --------------------------------------


@dataclass(frozen=True)
class ServerReply:
    """One message of the fork server about a launch's stage 0 (``forkserver.py``):
    ``{"pid": N}``, sent by stage 0 with its pidfd, or ``{"exit": status}`` once the server
    has reaped it. ``pid`` is None for a pid that is not an integer (then nothing is held)."""

    pid: int | None = None
    exit: int | None = None


def decode_server_reply(name: str, data: bytes) -> ServerReply:
    """Raises:
        LaunchError: not a reply of our fork server."""
    try:
        message = json.loads(data)
    except ValueError:
        message = None
    if isinstance(message, dict):
        if type(message.get("exit")) is int:
            return ServerReply(exit=message["exit"])
        if "pid" in message:
            return ServerReply(pid=message["pid"] if type(message["pid"]) is int else None)
    raise LaunchError(f"cannot start container {name}: malformed reply from the fork server: {data[:200]!r}")

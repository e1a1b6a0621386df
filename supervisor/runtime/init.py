"""The lean init stage: turns a freshly exec'd Python into a container's pid 1.

The supervisor's fork server (``forkserver.py``) forks this stage from a warm process and
runs ``linux.run_init_stage`` with the same fds; ``spawn.launch()`` still runs this file
directly. Below, "posix_spawn(python init.py)" stands for either.

Run directly as ``python -I -S init.py``, it is a new, single-threaded process
(trio and pyzmq start threads, and a forked copy of a threaded process may only exec)
that imports only the standard library and ``linux.py`` beside it, by path.

This file holds the protocol (below) and docker's defaults; the code of the stage is
``linux.run_init_stage``. Python compiles a ``__main__`` script on every run and caches
bytecode only for imported modules, and compiling the stage here cost ~10 ms of a `true`
container's ~30 ms start-to-exit; imported from ``linux.py`` it costs nothing.

Theory of operation
-------------------

File descriptors on entry: 0/1/2 are the container's stdin/stdout/stderr, 3 is the
config pipe (read to EOF), 4 is the status pipe (write; FD_CLOEXEC is set at once, so a
successful execve closes it and the supervisor reads EOF). Any other fd is closed.

::

    supervisor (trio)                 stage 0 (host pid ns)             pid 1 (new namespaces)
    -----------------                 ---------------------             ----------------------
    posix_spawn(python init.py) ----> fd 3 = config, fd 4 = status
    write config JSON, close fd 3 --> read fd 3 to EOF
                                      write own pid to cgroup_procs
                                      unshare(NS|UTS|IPC|NET|PID|CGROUP)
                                      fork -------------------------->  wait on the sync pipe
    <-- {"pid": <host pid>}\\n ------- report the child's pid
                                      send 1 byte on the sync pipe,
                                      _exit(0) ------------------------>  mount overlay, /proc,
    reap stage 0, pidfd_open(pid)                                        /sys, /dev; pivot_root;
    (pid 1 is re-parented to us:                                         mask, read-only paths;
     we are a child subreaper)                                           hostname, lo up; user;
                                                                         capabilities,
                                                                         no_new_privs; cwd
    <-- EOF (execve closed fd 4) --------------------------------------  execve(argv)
    <-- {"error": "...", "exit_code": N}\\n --------------------------  or report and _exit(N)

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

Config (one JSON document on fd 3)::

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
     "network_sync": false}            wait on fd 3 for the network before execve (above)
"""

import sys

if __package__:  # imported by the supervisor, for the constants below
    from supervisor.runtime import linux
else:  # run as a script: -I keeps the script's directory off sys.path
    sys.path.insert(0, __file__.rpartition("/")[0] or ".")
    import linux

# Docker's defaults (moby oci/defaults.go and caps/defaults.go).
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


if __name__ == "__main__":
    linux.run_init_stage()

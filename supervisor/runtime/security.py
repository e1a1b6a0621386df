"""Who the payload runs as and with which privileges: the user and groups from the
container's /etc/passwd and /etc/group, the capability sets, no_new_privs.

Why a module of its own (youki's and crun's security code apart from the mounts): it is
the last thing the stage and an exec do before execve, in the same order for both, and
what a security profile changes; the seccomp filter (compiled by the daemon,
``seccomp_bpf.py``) is loaded here, in runc's order (:func:`drop_privileges`).

Imported by the init stage under ``python -I -S``: the standard library's C modules only
(see ``libc.py``).
"""

import os

if __package__:  # imported as supervisor.runtime.security
    from supervisor.runtime import libc
else:  # in the fork server: a top-level module beside forkserver.py
    import libc

# Bit numbers from linux/capability.h. supervisor/capabilities.py's CAPABILITY_NAMES is the same
# list, a deliberate copy: this module runs in the init stage without our package, and the
# daemon's model layer may not import the mechanics (tests/unit/test_privileges.py keeps them equal).
CAPABILITIES = {
    "CAP_" + name: number
    for number, name in enumerate(
        "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
        "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
        "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
        "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
        "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
        "CHECKPOINT_RESTORE".split()
    )
}


def capability_mask(names: list[str] | tuple[str, ...]) -> int:
    """Capability names (``CAP_CHOWN``) to a bit mask; InitError(125) for an unknown name."""
    mask = 0
    for name in names:
        try:
            mask |= 1 << CAPABILITIES[name]
        except KeyError:
            raise libc.InitError(f"unknown capability {name!r}") from None
    return mask



def last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as file:
            return int(file.read())
    except (OSError, ValueError):
        return max(CAPABILITIES.values())


def limit_bounding_set(keep: int) -> None:
    """Drop every capability not in ``keep`` from the bounding set; clear the ambient set."""
    for cap in range(last_capability() + 1):
        if not keep >> cap & 1:
            libc.prctl(libc.PR_CAPBSET_DROP, cap, what=f"drop capability {cap} from the bounding set")
    libc.prctl(libc.PR_CAP_AMBIENT, libc.PR_CAP_AMBIENT_CLEAR_ALL, what="clear the ambient capabilities")


def switch_user(uid: int, gid: int, groups: tuple[int, ...]) -> None:
    """setgroups, setgid, setuid. A non-zero uid loses its effective and permitted
    capabilities at setuid (no PR_SET_KEEPCAPS), as under docker."""
    try:
        os.setgroups(list(groups))
        os.setgid(gid)
        os.setuid(uid)
    except OSError as exc:
        raise libc.InitError(f"switch to user {uid}:{gid}: {libc.strerror(exc.errno)}") from None


def _table(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        row = line.split(":")
        if len(row) >= fields and not line.startswith("#"):
            rows.append(row)
    return rows


def resolve_user(spec: str, passwd: str, group: str) -> tuple[int, int, tuple[int, ...], str]:
    """``user[:group]`` to ``(uid, gid, groups, home)`` from the texts of the container's
    /etc/passwd and /etc/group, as runc does: a numeric id needs no entry, a name must have
    one. Without an explicit group the primary group comes from passwd (0 without an entry)
    and the groups that list the user as a member are added. ``home`` is "/" without an entry.

    Raises:
        InitError(125): an unknown user or group name.
    """
    user_part, _, group_part = spec.partition(":")
    user_part = user_part or "0"
    users = _table(passwd, 7)
    if user_part.isdigit():
        uid = int(user_part)
        entry = next((row for row in users if row[2] == str(uid)), None)
    else:
        entry = next((row for row in users if row[0] == user_part), None)
        if entry is None or not entry[2].isdigit():
            raise libc.InitError(f"unable to find user {user_part}: no matching entries in passwd file")
        uid = int(entry[2])
    gid = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    home = entry[5] if entry is not None and entry[5] else "/"
    groups = _table(group, 4)
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            match = next((row for row in groups if row[0] == group_part and row[2].isdigit()), None)
            if match is None:
                raise libc.InitError(f"unable to find group {group_part}: no matching entries in group file")
            gid = int(match[2])
        return uid, gid, (gid,), home
    member_of = [gid]
    if entry is not None:
        for row in groups:
            if entry[0] in row[3].split(",") and row[2].isdigit() and int(row[2]) not in member_of:
                member_of.append(int(row[2]))
    return uid, gid, tuple(member_of), home




def drop_privileges(capabilities: "list[str] | tuple[str, ...]", uid: int, gid: int, groups: "tuple[int, ...]",
                    no_new_privileges: bool = False, seccomp: str = "") -> None:
    """Keep only ``capabilities`` in the bounding set, become ``uid``:``gid`` with
    ``groups``, give root exactly ``capabilities`` (a non-zero uid has none left after
    setuid), set no_new_privs if asked, and load the ``seccomp`` filter (the BPF program in
    hex; "" for none). The same for a container's pid 1 and an exec.

    The filter is loaded as runc does: without no_new_privs the kernel wants CAP_SYS_ADMIN
    for it, so it goes first, while we still hold every capability (the profile allows what
    the rest of this function and execve need); with no_new_privs it goes last.

    Raises:
        InitError(125): an unknown capability name, or a step the kernel refused.
    """
    keep = capability_mask(capabilities)
    program = bytes.fromhex(seccomp) if seccomp else b""
    if program and not no_new_privileges:
        libc.set_seccomp_filter(program)
    limit_bounding_set(keep)
    switch_user(uid, gid, groups)
    if no_new_privileges:
        libc.prctl(libc.PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")
    if uid == 0:
        libc.capset(effective=keep, permitted=keep, inheritable=0)
    if program and no_new_privileges:
        libc.set_seccomp_filter(program)


# --- --group-add and --sysctl (issue 18) ---------------------------------------------------


def additional_groups(names: "list[str] | tuple[str, ...]", group: str) -> "tuple[int, ...]":
    """``--group-add`` entries (numbers, or names from the text of the container's
    /etc/group) to gids, as docker.

    Raises:
        InitError(125): a name the group file does not have.
    """
    gids = []
    rows = _table(group, 4)
    for name in names:
        if name.isdigit():
            gids.append(int(name))
            continue
        match = next((row for row in rows if row[0] == name and row[2].isdigit()), None)
        if match is None:
            raise libc.InitError(f"unable to find group {name}: no matching entries in group file")
        gids.append(int(match[2]))
    return tuple(gids)


def write_sysctls(entries: "list[str] | tuple[str, ...]") -> None:
    """``KEY=VALUE`` entries (checked namespaced by the daemon) into /proc/sys, in the
    container's own namespaces, before /proc/sys is made read-only."""
    for entry in entries:
        key, _, value = entry.partition("=")
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as file:
                file.write(value)
        except OSError as exc:
            raise libc.InitError(f"set sysctl {key}={value}: {libc.strerror(exc.errno)}") from None

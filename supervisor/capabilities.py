"""The capability names of linux/capability.h, in bit order: the one list that the daemon's
checks (privileges.py) and dockyard-runtime's bundle reader (ociruntime/bundle.py) share. A
module of its own, importing nothing: ``dockyard-runtime create`` reads it without
privileges.py's imports. The init stage keeps its own table (runtime/security.py's
CAPABILITIES: it runs without our package); tests/unit/test_privileges.py keeps the two
equal.
"""

CAPABILITY_NAMES = tuple(
    "CAP_" + name for name in
    "CHOWN DAC_OVERRIDE DAC_READ_SEARCH FOWNER FSETID KILL SETGID SETUID SETPCAP "
    "LINUX_IMMUTABLE NET_BIND_SERVICE NET_BROADCAST NET_ADMIN NET_RAW IPC_LOCK IPC_OWNER "
    "SYS_MODULE SYS_RAWIO SYS_CHROOT SYS_PTRACE SYS_PACCT SYS_ADMIN SYS_BOOT SYS_NICE "
    "SYS_RESOURCE SYS_TIME SYS_TTY_CONFIG MKNOD LEASE AUDIT_WRITE AUDIT_CONTROL SETFCAP "
    "MAC_OVERRIDE MAC_ADMIN SYSLOG WAKE_ALARM BLOCK_SUSPEND AUDIT_READ PERFMON BPF "
    "CHECKPOINT_RESTORE".split()
)

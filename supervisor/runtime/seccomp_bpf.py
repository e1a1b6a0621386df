"""A resolved seccomp profile (``supervisor/seccomp.py``) compiled to a BPF program by libseccomp.

libseccomp (Debian's libseccomp2, through ctypes) does what runc and crun use it for: syscall
names to numbers for every architecture of the filter, the argument comparisons, and the
program, exported with ``seccomp_export_bpf``. The daemon compiles once per profile and
capability set (:func:`compiled`, cached) and gives the bytes to the init stage, whose only
work is then one ``prctl(PR_SET_SECCOMP)`` (``runtime/security.py``); the stage itself never
loads libseccomp.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os

from supervisor import seccomp
from supervisor.errors import InvalidArgument

LIBRARY = "libseccomp.so.2"
_NR_SCMP_ERROR = -1


class _ArgumentComparison(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = (("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64))


@functools.cache
def _library() -> ctypes.CDLL:
    try:
        library = ctypes.CDLL(LIBRARY, use_errno=True)
    except OSError as exc:
        raise InvalidArgument(f"seccomp: cannot load {LIBRARY} (install libseccomp2): {exc}") from None
    library.seccomp_init.argtypes = (ctypes.c_uint32,)
    library.seccomp_init.restype = ctypes.c_void_p
    library.seccomp_release.argtypes = (ctypes.c_void_p,)
    library.seccomp_release.restype = None
    library.seccomp_arch_resolve_name.argtypes = (ctypes.c_char_p,)
    library.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    library.seccomp_arch_native.restype = ctypes.c_uint32
    library.seccomp_arch_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
    library.seccomp_syscall_resolve_name.argtypes = (ctypes.c_char_p,)
    library.seccomp_rule_add_array.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                               ctypes.POINTER(_ArgumentComparison))
    library.seccomp_export_bpf.argtypes = (ctypes.c_void_p, ctypes.c_int)
    return library


def available() -> bool:
    """Whether libseccomp can be loaded on this host."""
    try:
        _library()
    except InvalidArgument:
        return False
    return True


def compile_filter(resolved: seccomp.Filter) -> bytes:
    """The BPF program (an array of struct sock_filter, native byte order) of ``resolved``.

    Syscalls libseccomp does not know (newer than it, or of another architecture) are
    skipped, as runc does.

    Raises:
        InvalidArgument: libseccomp refused an architecture or a rule (named in the message).
    """
    library = _library()
    context = library.seccomp_init(resolved.default_action)
    if not context:
        raise InvalidArgument("seccomp: seccomp_init failed (an invalid default action?)")
    try:
        native = library.seccomp_arch_native()
        for name in resolved.architectures:
            token = library.seccomp_arch_resolve_name(name.encode())
            if token == 0:
                raise InvalidArgument(f"seccomp: libseccomp does not know the architecture {name}")
            if token != native:
                _check(library.seccomp_arch_add(context, token), f"add the architecture {name}", allow=(errno.EEXIST,))
        for rule in resolved.rules:
            number = library.seccomp_syscall_resolve_name(rule.name.encode())
            if number == _NR_SCMP_ERROR:
                continue
            comparisons = (_ArgumentComparison * max(len(rule.conditions), 1))(*(
                _ArgumentComparison(c.index, c.operator, c.value, c.value_two) for c in rule.conditions))
            result = library.seccomp_rule_add_array(context, rule.action, number, len(rule.conditions), comparisons)
            _check(result, f"add the rule for {rule.name}", allow=(errno.EEXIST,))
        descriptor = os.memfd_create("dockyard-seccomp", os.MFD_CLOEXEC)
        try:
            _check(library.seccomp_export_bpf(context, descriptor), "export the BPF program")
            size = os.lseek(descriptor, 0, os.SEEK_END)
            return os.pread(descriptor, size, 0)
        finally:
            os.close(descriptor)
    finally:
        library.seccomp_release(context)


@functools.lru_cache(maxsize=32)
def compiled(profile_text: str, capabilities: frozenset[str]) -> bytes:
    """The BPF program of a profile (its JSON text) for a capability set, compiled once."""
    profile = seccomp.parse_profile(profile_text)
    return compile_filter(seccomp.resolve(profile, capabilities))


def _check(result: int, what: str, allow: tuple[int, ...] = ()) -> None:
    if result < 0 and -result not in allow:
        raise InvalidArgument(f"seccomp: cannot {what}: {os.strerror(-result)}")

"""The few pieces of ctypes that the init stage's syscall wrappers use (``libc.py``,
``userns.py``), built on the ``_ctypes`` C module itself.

Why not ``import ctypes``: the package imports ``struct``, ``types`` and ``ctypes._endian``
and defines some forty classes, ~2 ms of CPU before the first syscall. Every
``dockyard-runtime run`` pays it on its critical path (stage 0 cannot unshare before libc
is bound) and every forked container stage pays the copy-on-write of its objects; this
module is ~0.5 ms, most of it the loading of ``_ctypes`` and libffi. The types here are the
same C types as ctypes' (``_SimpleCData`` with the same type codes), so a ctypes object may
be passed where an argument has no declared type (``syscall``'s), as ctypes allows.

Like every module the stage imports, this one runs as a top-level module beside
``forkserver.py`` in the daemon's fork server too (C modules only).
"""

import _ctypes
from _ctypes import Structure, addressof, byref, get_errno, sizeof  # noqa: F401 - re-exported


def _simple(name: str, code: str) -> type:
    """A C scalar type: ``_SimpleCData`` with struct's type ``code``, as ctypes defines its own."""
    return type(name, (_ctypes._SimpleCData,), {"_type_": code})


c_int = _simple("c_int", "i")
c_uint = _simple("c_uint", "I")
c_long = _simple("c_long", "l")
c_ulong = _simple("c_ulong", "L")
c_ushort = _simple("c_ushort", "H")
c_char = _simple("c_char", "c")
c_char_p = _simple("c_char_p", "z")
c_void_p = _simple("c_void_p", "P")
c_uint32 = c_uint
c_uint64 = c_ulong  # LP64: the only data model dockyard runs on (x86_64, aarch64)
c_size_t = c_ulong
assert sizeof(c_ulong) == 8 and sizeof(c_uint) == 4, "ctypes_lite assumes an LP64 platform"


class _Function(_ctypes.CFuncPtr):
    """A function of the C library that sets errno (ctypes' ``CDLL(None, use_errno=True)``)."""

    _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
    _restype_ = c_int


class _Program:
    """The symbols of this program and the libraries it loaded (``dlopen(NULL)``): libc's."""

    _handle = _ctypes.dlopen(None, _ctypes.RTLD_LOCAL)


def function(name: str, argtypes: tuple = (), restype=c_int):
    """libc's ``name``, called with ``argtypes`` (none: any C values, as ctypes' default)
    and returning ``restype``; errno is kept for :func:`get_errno` after each call."""
    func = _Function((name, _Program))
    if argtypes:
        func.argtypes = argtypes
    func.restype = restype
    return func


def create_string_buffer(init, size: int = -1):
    """A zeroed ``char[init]`` for an int, else a ``char[size]`` (default: one more than
    ``init``'s length) that starts with the bytes ``init``, as ctypes' function."""
    if isinstance(init, int):
        return (c_char * init)()
    buffer = (c_char * (len(init) + 1 if size < 0 else size))()
    buffer[:len(init)] = init
    return buffer

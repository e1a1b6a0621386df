"""supervisor/runtime/ctypes_lite.py: the init stage's libc binding without the ctypes
package. It must behave as ctypes does for what libc.py and userns.py use."""

import ctypes
import os
import subprocess
import sys

import pytest

from supervisor.runtime import ctypes_lite, libc

RUNTIME_DIR = os.path.dirname(os.path.abspath(ctypes_lite.__file__))


def test_the_types_have_ctypes_sizes_and_values():
    pairs = [(ctypes_lite.c_int, ctypes.c_int), (ctypes_lite.c_uint, ctypes.c_uint), (ctypes_lite.c_long, ctypes.c_long),
             (ctypes_lite.c_ulong, ctypes.c_ulong), (ctypes_lite.c_ushort, ctypes.c_ushort),
             (ctypes_lite.c_uint64, ctypes.c_uint64), (ctypes_lite.c_uint32, ctypes.c_uint32),
             (ctypes_lite.c_size_t, ctypes.c_size_t), (ctypes_lite.c_void_p, ctypes.c_void_p)]
    for ours, theirs in pairs:
        assert ctypes_lite.sizeof(ours) == ctypes.sizeof(theirs), ours
    assert ctypes_lite.c_uint(-1).value == ctypes.c_uint(-1).value
    assert ctypes_lite.c_char_p(b"abc").value == b"abc"


def test_a_structure_of_its_types_has_the_c_layout():
    class Ours(ctypes_lite.Structure):
        _fields_ = (("a", ctypes_lite.c_ushort), ("b", ctypes_lite.c_void_p), ("c", ctypes_lite.c_uint32))

    class Theirs(ctypes.Structure):
        _fields_ = (("a", ctypes.c_ushort), ("b", ctypes.c_void_p), ("c", ctypes.c_uint32))

    assert ctypes_lite.sizeof(Ours) == ctypes.sizeof(Theirs) == 24
    value = Ours(7, 0x1000, 9)
    assert bytes(value) == bytes(Theirs(7, 0x1000, 9))


def test_a_function_returns_its_restype_and_keeps_errno():
    getpid = ctypes_lite.function("getpid")
    assert getpid() == os.getpid()
    umount2 = ctypes_lite.function("umount2", (ctypes_lite.c_char_p, ctypes_lite.c_int))
    assert umount2(b"/nonexistent-dockyard-path", 0) == -1
    assert ctypes_lite.get_errno() in (2, 1)  # ENOENT (EPERM without CAP_SYS_ADMIN)
    syscall = ctypes_lite.function("syscall", restype=ctypes_lite.c_long)
    assert syscall(ctypes_lite.c_long(39)) == os.getpid()  # SYS_getpid (x86_64), untyped arguments
    with pytest.raises(ctypes.ArgumentError):
        umount2("not bytes", 0)


def test_string_buffers_are_ctypes_ones():
    for args in ((b"abc",), (b"abc", 8), (4,)):
        assert ctypes_lite.create_string_buffer(*args).raw == ctypes.create_string_buffer(*args).raw, args
    buffer = ctypes_lite.create_string_buffer(b"\x01\x02", 2)
    assert ctypes_lite.addressof(buffer) != 0 and ctypes_lite.sizeof(buffer) == 2


def test_libc_wrappers_raise_init_error_naming_the_step():
    with pytest.raises(libc.InitError) as caught:
        libc.umount2("/nonexistent-dockyard-path", 0)
    assert 'umount "/nonexistent-dockyard-path"' in caught.value.message


def test_prctl_with_a_pointer_argument_reads_back_what_was_set():
    code = (f"import sys; sys.path.insert(0, {RUNTIME_DIR!r}); import libc\n"
            "before = libc.is_child_subreaper(); libc.set_child_subreaper(True); print(before, libc.is_child_subreaper())")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]


def test_the_binding_does_not_import_the_ctypes_package():
    code = f"import sys; sys.path.insert(0, {RUNTIME_DIR!r}); import libc, userns; libc.preload(); print('ctypes' in sys.modules)"
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"

"""A container stream's output spool: what the daemon has read from the pipe and the log
collector has not stored yet, in a memfd the keeper holds too, so that a daemon killed
(SIGKILL, a crash) loses none of it (docs/logs.md, "Across a daemon restart").

Theory of operation
-------------------
::

    pipe ──splice──▶ memfd [header | ... released (stored) ... | unstored ]
                            │                                   └─ pread into the pump's buffer
                            └─ header: released seq and stream offset, updated on ack

* A read moves the output from the pipe into the spool in one syscall (``splice``: the
  kernel copies it into the memfd's pages), and then reads it into the pump's buffer. There
  is no moment at which the output is only in the daemon's memory: a SIGKILL before the
  splice leaves it in the pipe, after it in the spool. (A pty master cannot be spliced: it
  is read, then written into the spool; a SIGKILL between the two loses that one read.)
* The spool is addressed by the stream's byte offset (``HEADER`` + offset): what the log
  collector acknowledged (or, non-blocking, what was evicted) is *released*; the header
  holds the last released seq and the offset where it ends, and the released pages are
  given back (``fallocate(PUNCH_HOLE)``), so a spool holds about what the log buffer holds
  (``max-buffer-size``, 4 MiB by default), and an idle one a page.
* At the next daemon start (:func:`unstored`): the store's last seq of the stream is at
  least the released seq; the records after the released one that the store has are
  counted byte by byte (their payloads are the stream's bytes in order), and what the
  spool holds after them was read and not stored: it is read again, as if from the pipe,
  before the pipe itself. Nothing is stored twice, nothing is lost.
"""

from __future__ import annotations

import ctypes
import os
import struct

HEADER = 4096
MAGIC = b"DYSPOOL1"
_LAYOUT = struct.Struct("<8sQQ")  # magic, released seq, released offset
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
PUNCH_STEP = 64 << 10  # pages are given back in steps of this many bytes
SPLICE_F_NONBLOCK = 0x02

_fallocate = None


def _punch(fd: int, offset: int, length: int) -> None:
    global _fallocate
    if _fallocate is None:
        libc = ctypes.CDLL(None, use_errno=True)
        _fallocate = libc.fallocate
        _fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
    _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)  # best effort


class Spool:
    """One stream's spool (the memfd ``fd``, not owned: the container's process closes it)."""

    def __init__(self, fd: int):
        self.fd = fd
        self.end = max(os.fstat(fd).st_size - HEADER, 0)  # the stream offset of the next byte read
        self.released_seq, self.released = self._read_header()
        self.punched = self.released - self.released % PUNCH_STEP
        self.splice = True  # False once the source turned out not to be a pipe (a pty)

    def _read_header(self) -> tuple[int, int]:
        data = os.pread(self.fd, _LAYOUT.size, 0)
        if len(data) == _LAYOUT.size:
            magic, seq, offset = _LAYOUT.unpack(data)
            if magic == MAGIC:
                return seq, offset
        return 0, 0

    def read_from(self, source: int, view: memoryview) -> int:
        """Read up to ``len(view)`` bytes of ``source`` (a pipe, or a pty master) into the
        spool and ``view``; 0 at the end. Raises BlockingIOError when there is nothing."""
        if self.splice:
            try:
                count = os.splice(source, self.fd, len(view), offset_dst=HEADER + self.end, flags=SPLICE_F_NONBLOCK)
            except OSError as exc:
                if isinstance(exc, BlockingIOError) or exc.errno != 22:  # EINVAL: not a pipe
                    raise
                self.splice = False
            else:
                if count:
                    got = os.preadv(self.fd, [view[:count]], HEADER + self.end)
                    assert got == count
                    self.end += count
                return count
        count = os.readv(source, [view])
        if count:
            os.pwrite(self.fd, view[:count], HEADER + self.end)
            self.end += count
        return count

    def release(self, seq: int, offset: int) -> None:
        """Records through ``seq``, ending at stream ``offset``, are stored (or let go)."""
        if offset < self.released or seq < self.released_seq:
            return
        self.released_seq, self.released = seq, offset
        os.pwrite(self.fd, _LAYOUT.pack(MAGIC, seq, offset), 0)
        upto = offset - offset % PUNCH_STEP
        if upto > self.punched:
            _punch(self.fd, HEADER + self.punched, upto - self.punched)
            self.punched = upto

    def read_back(self, start: int) -> bytes:
        """What the spool holds from stream offset ``start`` to its end."""
        if start >= self.end:
            return b""
        return os.pread(self.fd, self.end - start, HEADER + start)


def unstored(spool: Spool, stored_last: int, stored_payloads) -> tuple[int, int]:
    """Where the stream's unstored output starts: ``(seq, offset)`` of the last record the
    store has. ``stored_payloads(after_seq)`` yields the payload sizes of the stored records
    after ``after_seq``, in order (the store's)."""
    if stored_last <= spool.released_seq:
        return spool.released_seq, spool.released
    offset = spool.released
    for size in stored_payloads(spool.released_seq):
        offset += size
    return stored_last, min(offset, spool.end)

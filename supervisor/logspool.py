"""A container stream's output spool: what the daemon has read from the pipe and the log
collector has not stored yet, in a memfd the keeper holds too, so that a daemon killed
(SIGKILL, a crash) loses none of it (docs/logs.md, "Across a daemon restart").

Theory of operation
-------------------
::

    pipe ──splice──▶ memfd [header | ring: ... released (stored) ... | unstored | free ... ]
                            │  └─ write position: the kernel's    └─ copied (from the mapping) into the pump's buffer
                            │     splice(off_out) stores it here
                            └─ header: released seq and stream offset, updated on ack

* A read moves the output from the pipe into the spool in one syscall (``splice``: the
  kernel copies it into the memfd's pages), and then copies it into the pump's buffer out
  of the daemon's mapping of the ring (mapped while the stream is busy, with the header: a
  memcpy, where a ``pread`` of every read cost a syscall and a page-cache lookup per page;
  issue 21's throughput: docs/architecture.md "Live restore"). There is no moment at which
  the output is only in the daemon's memory: a SIGKILL before the splice leaves it in the
  pipe, after it in the spool. (A pty master cannot be spliced: it
  is read, then written into the spool; a SIGKILL between the two loses that one read.)
* The spool is a **ring** of ``capacity`` bytes after the header: stream offset ``o`` is
  at ``HEADER + o % capacity``, so a busy stream writes into the same pages again instead
  of the kernel allocating (and, once released, freeing) a page for every 4 KiB of output,
  which cost more than the copies themselves. What was read and not released (stored, or
  evicted by a non-blocking log) never exceeds ``capacity - 1`` bytes: a read that would
  overwrite it raises :class:`SpoolFull` (the pump waits for the collector's next
  acknowledgement, as a blocking log waits for room). The capacity is the log buffer's size
  and two records (:func:`capacity_for`), so that this only happens when the log itself
  would make the container wait.
* **Where the unstored output ends** must change in the same syscall as the output itself
  (a daemon killed between the splice and a write of the end would lose that read, or
  read it twice). While the stream is busy the header page is mapped (``MAP_SHARED``; an
  idle spool is not, so it costs the daemon no page) and ``splice`` is given the
  *address of the header's write position* as its ``off_out``: the kernel reads the
  position there, writes the output, and stores the new position there before it returns
  (fs/splice.c ``__do_splice``), so the memfd holds either the old position and the output
  still in the pipe, or the new position and the output in the ring. A new daemon derives
  the end from it and the released offset (at most ``capacity - 1`` apart).
* What the log collector acknowledged (or, non-blocking, what was evicted) is *released*:
  the header holds the last released seq and the offset where it ends (one ``pwrite``:
  both change together). Released pages are kept while the stream is busy (they are
  written again at the next lap) and given back (``fallocate(PUNCH_HOLE)``) once it has
  been idle for a while (:meth:`Spool.trim`, called by the pump; and when the container
  ends): an idle spool holds its header page and what is unstored.
* At the next daemon start (:func:`unstored`): the store's last seq of the stream is at
  least the released seq; the records after the released one that the store has are
  counted byte by byte (their payloads are the stream's bytes in order), and what the
  spool holds after them was read and not stored: it is read again, as if from the pipe,
  before the pipe itself. Nothing is stored twice, nothing is lost.
* A spool written by the daemon before the ring (magic ``DYSPOOL1``: linear, the end is
  the memfd's size) is read and continued the way it was written, so containers started
  by that daemon keep their output across an upgrade.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from logs.format import MAX_RECORD

HEADER = 4096
MAGIC = b"DYSPOOL1"  # linear: stream offset o at HEADER + o; the end is the memfd's size
RING_MAGIC = b"DYSPOOL2"  # a ring of CAPACITY bytes; the end from the write position
_LAYOUT = struct.Struct("<8sQQ")  # magic, released seq, released offset
_RING = struct.Struct("<Q")  # the ring's capacity, at RING_AT
RING_AT = 64
POSITION_AT = 128  # the write position (a file offset), 8-byte aligned: splice's off_out
PAGE = 4096
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
PUNCH_STEP = 64 << 10  # linear spools give released pages back in steps of this many bytes
SPLICE_F_NONBLOCK = 0x02

_libc = None


class SpoolFull(BlockingIOError):
    """The ring holds ``capacity - 1`` bytes that are not released yet: reading more would
    overwrite output that is not stored."""


def capacity_for(max_buffer_size: int) -> int:
    """The ring's size for a log buffer of ``max_buffer_size`` bytes: the buffer, a record
    the pump is cutting and one more (whole pages)."""
    size = max_buffer_size + 2 * MAX_RECORD + PAGE
    return size - size % PAGE


def _c():
    global _libc
    if _libc is None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
        libc.splice.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t,
                                ctypes.c_uint)
        libc.splice.restype = ctypes.c_ssize_t
        _libc = libc
    return _libc


def _punch(fd: int, offset: int, length: int) -> None:
    if length > 0:
        _c().fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)  # best effort


class Spool:
    """One stream's spool (the memfd ``fd``, not owned: the container's process closes it;
    :meth:`close` lets go of the spool's mapping first). A new (empty) memfd becomes a ring
    of ``capacity`` bytes; an existing spool keeps the layout it was written with."""

    def __init__(self, fd: int, capacity: int = capacity_for(4 << 20)):
        self.fd = fd
        self.splice = True  # False once the source turned out not to be a pipe (a pty)
        self.idle = False  # trimmed: released pages are given back as they are released
        self._map: mmap.mmap | None = None
        self._position = None  # the ctypes view of the write position in the mapping
        self._ring: memoryview | None = None  # the mapping, while busy: what splice wrote is read from it
        size = os.fstat(fd).st_size
        header = os.pread(fd, HEADER, 0)
        magic = header[:8]
        if size == 0:  # a new spool: a ring
            magic = RING_MAGIC
            os.pwrite(fd, _LAYOUT.pack(RING_MAGIC, 0, 0) + bytes(RING_AT - _LAYOUT.size) + _RING.pack(capacity)
                      + bytes(POSITION_AT - RING_AT - _RING.size) + _RING.pack(HEADER), 0)
            os.ftruncate(fd, HEADER + capacity)
            header = os.pread(fd, HEADER, 0)
        self.ring = magic == RING_MAGIC
        self.released_seq, self.released = self._read_header(header)
        if self.ring:
            self.capacity = _RING.unpack_from(header, RING_AT)[0]
            written = (_RING.unpack_from(header, POSITION_AT)[0] - HEADER - self.released) % self.capacity
            self.end = self.released + written  # the stream offset of the next byte read
        else:
            self.capacity = 0
            self.end = max(size - HEADER, 0)
            self.punched = self.released - self.released % PUNCH_STEP

    @staticmethod
    def _read_header(header: bytes) -> tuple[int, int]:
        if len(header) >= _LAYOUT.size:
            magic, seq, offset = _LAYOUT.unpack_from(header)
            if magic in (MAGIC, RING_MAGIC):
                return seq, offset
        return 0, 0

    def read_from(self, source: int, view: memoryview) -> int:
        """Read up to ``len(view)`` bytes of ``source`` (a pipe, or a pty master) into the
        spool and ``view``; 0 at the end. Raises BlockingIOError when there is nothing,
        :class:`SpoolFull` when the ring has no room for more."""
        if not self.ring:
            return self._read_linear(source, view)
        self.idle = False
        room = self.capacity - 1 - (self.end - self.released)
        if room <= 0:
            raise SpoolFull(11, "the output spool is full of unstored output")
        total = 0
        want = min(len(view), room)
        while total < want:  # twice at most: up to the ring's end, then from its start
            at = self.end % self.capacity
            count = min(want - total, self.capacity - at)
            if self.splice:
                try:
                    count = self._splice(source, count, HEADER + at)
                except OSError as exc:
                    if total and isinstance(exc, BlockingIOError):
                        break
                    if isinstance(exc, BlockingIOError) or exc.errno != 22:  # EINVAL: not a pipe
                        raise
                    self.splice = False
                    continue
                if count:
                    view[total:total + count] = self._ring[HEADER + at:HEADER + at + count]
            else:
                try:
                    count = os.readv(source, [view[total:total + count]])
                except BlockingIOError:
                    if total:
                        break
                    raise
                if count:
                    os.pwrite(self.fd, view[total:total + count], HEADER + at)
                    os.pwrite(self.fd, _RING.pack(HEADER + at + count), POSITION_AT)
            if not count:
                break
            self.end += count
            total += count
            if at + count < self.capacity:  # the source had no more than this
                break
        return total

    def _splice(self, source: int, count: int, position: int) -> int:
        """splice ``count`` bytes of ``source`` to the ring at file offset ``position``, with
        the write position in the mapped header as off_out (see the module's doc). The header
        and the ring are mapped while the stream is busy (not while it is idle: no page in the
        daemon's memory for an idle container); :meth:`read_from` copies the output out of
        that mapping."""
        if self._position is None:
            # Never past the memfd's end (a page there would be SIGBUS, not an error).
            size = min(HEADER + self.capacity, os.fstat(self.fd).st_size)
            self._map = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
            self._position = ctypes.c_int64.from_buffer(self._map, POSITION_AT)
            self._ring = memoryview(self._map)
        if self._position.value != position:  # only at a lap's start: after the last splice it is
            os.pwrite(self.fd, _RING.pack(position), POSITION_AT)  # one write of the 8 bytes
        splice = _c().splice
        address = ctypes.addressof(self._position)
        while True:
            result = splice(source, None, self.fd, address, count, SPLICE_F_NONBLOCK)
            if result >= 0:
                return result
            error = ctypes.get_errno()
            if error != 4:  # EINTR: again
                raise OSError(error, os.strerror(error))

    def _read_linear(self, source: int, view: memoryview) -> int:
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
        previous = self.released
        self.released_seq, self.released = seq, offset
        header = _LAYOUT.pack(RING_MAGIC if self.ring else MAGIC, seq, offset)
        os.pwrite(self.fd, header, 0)
        if self.ring:
            if self.idle:
                self._punch_ring(previous, offset)
            return
        upto = offset - offset % PUNCH_STEP
        if upto > self.punched:
            _punch(self.fd, HEADER + self.punched, upto - self.punched)
            self.punched = upto

    def _punch_ring(self, start: int, stop: int) -> None:
        """Give back the ring's whole pages that hold only stream offsets [start, stop), or
        all of them once nothing is unstored."""
        if self.released >= self.end:
            _punch(self.fd, HEADER, self.capacity)
            return
        stop = min(stop, start + self.capacity)
        while start < stop:
            at = start % self.capacity
            length = min(stop - start, self.capacity - at)
            first = -(-at // PAGE) * PAGE
            last = (at + length) // PAGE * PAGE
            _punch(self.fd, HEADER + first, last - first)
            start += length

    def trim(self) -> None:
        """The stream is idle: give back the ring's pages that hold nothing unstored, and
        from now on each page as it is released (until the next read)."""
        if self.ring and not self.idle:
            self.idle = True
            self._unmap()
            self._punch_ring(self.end, self.released + self.capacity)

    def _unmap(self) -> None:
        if self._map is not None:
            self._position = None  # the mapping cannot close while it is exported
            self._ring.release()
            self._ring = None
            self._map.close()
            self._map = None

    def close(self) -> None:
        """Done with the spool (the container ended): trim it and unmap its header."""
        try:
            self.trim()
        except OSError:
            pass
        self._unmap()

    def read_back(self, start: int) -> bytes:
        """What the spool holds from stream offset ``start`` to its end."""
        if start >= self.end:
            return b""
        if not self.ring:
            return os.pread(self.fd, self.end - start, HEADER + start)
        parts = []
        while start < self.end:
            at = start % self.capacity
            length = min(self.end - start, self.capacity - at)
            parts.append(os.pread(self.fd, length, HEADER + at))
            start += length
        return b"".join(parts)


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

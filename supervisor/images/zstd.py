"""zstd for image layers (OCI ``application/vnd.oci.image.layer.v1.tar+zstd``): reading a
stream with its end checked, and a compressor whose output is a function of its input.

Python 3.11 has no zstd in the standard library: the codec is the ``zstandard`` package
(libzstd's bindings, the C extension), imported only when a zstd stream is met or a zstd
push is asked for, never when the CLI or a container starts (:func:`zstandard_module`).

Theory of operation
-------------------
``zstandard``'s stream reader decompresses with a bounded output per ``read`` (a frame of
zeros cannot blow up memory; the ratio check stays with
:class:`~supervisor.images.tarstream.ArchiveReader`), reads across frames (podman's and
skopeo's layers may have several, and skippable ones), and limits the window a frame may
ask for (:data:`MAX_WINDOW`, libzstd's own default). But it ends quietly when its source
ends inside a frame, so a truncated layer would read as a shorter one. :class:`FrameWalker`,
a sans-IO walk over the frame format (RFC 8878: frame headers, block headers and sizes,
checksums, skippable frames; no decoding), sees every compressed byte on its way to the
decompressor and tells at the end whether the stream stopped at a frame's end.
"""

from __future__ import annotations

from typing import Any, BinaryIO

#: The magic of a zstd frame, and of a skippable frame (its low nibble is free).
MAGIC = b"\x28\xb5\x2f\xfd"
SKIPPABLE_MAGIC = 0x184D2A50
#: The largest window a frame may ask for, as libzstd's decoders accept by default (a frame
#: made with ``zstd --long=31`` asks 2 GiB: refused, naming the cause).
MAX_WINDOW = 1 << 27
#: The largest block (RFC 8878: Block_Maximum_Size).
MAX_BLOCK = 128 << 10
#: The level of a pushed layer: zstd's default, as podman's and containerd's.
LEVEL = 3
#: Input bytes fed to the compressor at a time (so its output does not depend on how the
#: input is read); the compressed digest of a layer depends on this, on :data:`LEVEL` and
#: on the checksum flag: :data:`FORMAT` names the three for the push records.
BLOCK = 1 << 20
FORMAT = "level3-checksum-blocks-1m-v1"


class ZstdStreamError(OSError):
    """A zstd stream that is corrupt, truncated, asks too big a window, or cannot be read
    because ``zstandard`` is missing. An OSError, as the other decompressors' read
    errors, so :class:`~supervisor.images.tarstream.ArchiveReader` reports it as one."""


def zstandard_module() -> Any:
    """The ``zstandard`` package, imported now (it costs ~10 ms: only a zstd layer pays)."""
    try:
        import zstandard
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise ZstdStreamError("zstd needs the Python package zstandard (pip install zstandard)") from exc
    return zstandard


class FrameWalker:
    """Follows the frame structure of a zstd stream fed in pieces, without decoding it.

    :meth:`feed` raises :class:`ZstdStreamError` at a byte that cannot start or continue a
    frame; :attr:`complete` is true when at least one frame was seen and the bytes so far
    end exactly at a frame's end.
    """

    def __init__(self) -> None:
        self.frames = 0
        self._state = "magic"
        self._field = bytearray()
        self._want = 4  # bytes of the field being read
        self._skip = 0  # content bytes still to pass over
        self._after_skip = "magic"  # the state once they are passed
        self._checksum = False
        self.offset = 0  # bytes fed so far (for messages)

    @property
    def complete(self) -> bool:
        return self.frames > 0 and self._state == "magic" and not self._field and not self._skip

    def feed(self, data: bytes) -> None:
        view = memoryview(data)
        position = 0
        while position < len(view):
            if self._skip:
                step = min(self._skip, len(view) - position)
                self._skip -= step
                position += step
                if not self._skip:
                    self._go(self._after_skip)
                continue
            step = min(self._want - len(self._field), len(view) - position)
            self._field += view[position:position + step]
            position += step
            if len(self._field) == self._want:
                field = bytes(self._field)
                self._field.clear()
                self._step(field, self.offset + position - self._want)
        self.offset += len(view)

    def _pass(self, count: int, then: str) -> None:
        """Pass over ``count`` content bytes, then go to the state ``then``."""
        if count:
            self._skip, self._after_skip, self._state = count, then, "skip"
        else:
            self._go(then)

    def _go(self, state: str) -> None:
        if state == "checksum":
            self._pass(4, "end")
        elif state == "end":
            self.frames += 1
            self._state, self._want = "magic", 4
        else:
            self._state, self._want = state, 3 if state == "block" else 4

    def _step(self, field: bytes, at: int) -> None:
        if self._state == "magic":
            if field == MAGIC:
                self._state, self._want = "descriptor", 1
            elif int.from_bytes(field, "little") & 0xFFFFFFF0 == SKIPPABLE_MAGIC:
                self._state, self._want = "skippable", 4
            elif self.frames:
                raise ZstdStreamError(f"data after the last zstd frame, at byte {at}, is not a zstd frame")
            else:
                raise ZstdStreamError(f"not a zstd frame at byte {at} (magic {field.hex()})")
        elif self._state == "descriptor":
            descriptor = field[0]
            if descriptor & 0x08:
                raise ZstdStreamError(f"corrupt zstd frame header at byte {at} (a reserved bit is set)")
            single_segment = bool(descriptor & 0x20)
            self._checksum = bool(descriptor & 0x04)
            header = (0 if single_segment else 1) + (0, 1, 2, 4)[descriptor & 0x03] \
                + ((1 if single_segment else 0), 2, 4, 8)[descriptor >> 6]
            if header:
                self._state, self._want = "header", header
            else:
                self._state, self._want = "block", 3
        elif self._state == "header":
            self._state, self._want = "block", 3
        elif self._state == "block":
            value = int.from_bytes(field, "little")
            last, kind, size = value & 1, (value >> 1) & 3, value >> 3
            if kind == 3:
                raise ZstdStreamError(f"corrupt zstd block at byte {at} (reserved block type)")
            if size > MAX_BLOCK:
                raise ZstdStreamError(f"corrupt zstd block at byte {at} ({size} bytes, more than {MAX_BLOCK})")
            then = "block" if not last else ("checksum" if self._checksum else "end")
            self._pass(1 if kind == 1 else size, then)
        elif self._state == "skippable":
            self._pass(int.from_bytes(field, "little"), "end")


class _Walked:
    """The compressed source as the decompressor reads it, each byte shown to the walker."""

    def __init__(self, source: BinaryIO, walker: FrameWalker):
        self.source = source
        self.walker = walker

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.walker.feed(data)
        return data


class ZstdReader:
    """The decompressed bytes of the zstd stream ``source`` (one or more frames).

    Raises ZstdStreamError on read: corrupt data, a frame asking a window over
    :data:`MAX_WINDOW`, or a stream that ends inside a frame.
    """

    def __init__(self, source: BinaryIO, *, max_window: int = MAX_WINDOW):
        zstandard = zstandard_module()
        self._error = zstandard.ZstdError
        self._source = _Walked(source, FrameWalker())
        decompressor = zstandard.ZstdDecompressor(max_window_size=max_window)
        self._reader = decompressor.stream_reader(self._source, read_across_frames=True, closefd=False)
        self._done = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._done or size == 0:
            return b""
        try:
            data = self._reader.read(size)
        except self._error as exc:
            if "too much memory" in str(exc):
                raise ZstdStreamError(f"a zstd frame asks for a window larger than {MAX_WINDOW >> 20} MiB "
                                      "(refused, as by libzstd's own default)") from exc
            raise ZstdStreamError(f"corrupt zstd stream: {exc}") from exc
        if not data:
            while self._source.read(1 << 16):  # whatever the decompressor left unread
                pass
            if not self._source.walker.complete:
                raise ZstdStreamError(f"truncated zstd stream (it ends inside a frame, after "
                                      f"{self._source.walker.offset} bytes)")
            self._done = True
        return data

    def close(self) -> None:
        self._reader.close()


class ZstdCompressor:
    """One zstd frame (level :data:`LEVEL`, with its content checksum, no content size: the
    length is not known in advance), fed in :data:`BLOCK`-byte pieces whatever the reads,
    so the same input always gives the same bytes with the same libzstd: a layer's
    compressed digest is stable, as :class:`~supervisor.registry.pushlayout.Deflater`'s.
    The same ``feed``/``finish`` interface as Deflater."""

    def __init__(self) -> None:
        zstandard = zstandard_module()
        self._compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True,
                                                    write_content_size=False).compressobj()
        self._pending = bytearray()

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        out = []
        while len(self._pending) >= BLOCK:
            out.append(self._compressor.compress(bytes(self._pending[:BLOCK])))
            del self._pending[:BLOCK]
        return b"".join(out)

    def finish(self) -> bytes:
        out = self._compressor.compress(bytes(self._pending)) if self._pending else b""
        self._pending.clear()
        return out + self._compressor.flush()

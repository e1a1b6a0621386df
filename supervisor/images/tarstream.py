"""The uncompressed bytes of an archive stream: compression sniffed and undone, the bytes
hashed and counted as they are read, decompression bombs refused.

Apart from :mod:`~supervisor.images.tarsafe` because it knows nothing of tar members or of
the filesystem: it turns a readable stream (a pipe works) into another one, which the
extractor hands to ``tarfile`` and :mod:`~supervisor.images.archive` reads ``docker load``
archives through (:func:`decompressed`).

The compression (gzip, bzip2, xz, zstd or none) is sniffed from the first bytes, as docker
does (a layer's media type is not trusted for it); zstd is :mod:`~supervisor.images.zstd`'s. We decompress
ourselves rather than let tarfile do it (``"r|*"``) because only then do we see the
uncompressed bytes to hash: their sha256 is a layer's diff id (OCI ``rootfs.diff_ids``),
taken over the whole stream, trailing padding included (:meth:`ArchiveReader.drain`).

Decompression bombs: a compressed stream that inflates more than :data:`BOMB_RATIO` times
once past :data:`BOMB_FLOOR` bytes is refused (gzip cannot exceed about 1032:1 by design;
only a stream of almost nothing but zeros comes near it: a real layer is far below). zstd
and bzip2 go far beyond (zstd about 32000:1 on zeros), so the same ratio is what stops
them; and zstd's reader returns at most what is asked of each read, so memory stays
bounded until then.
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import lzma
import zlib
from typing import Any, BinaryIO

from supervisor.errors import ImageError

CHUNK = 1 << 20
#: A compressed stream inflating more than BOMB_RATIO times, past BOMB_FLOOR bytes, is refused.
BOMB_RATIO = 1000
BOMB_FLOOR = 16 << 20

_MAGIC_GZIP = b"\x1f\x8b"
_MAGIC_BZIP2 = b"BZh"
_MAGIC_XZ = b"\xfd7zXZ\x00"
_MAGIC_ZSTD = b"\x28\xb5\x2f\xfd"


class _Replay:
    """A read-only stream that returns ``prefix`` before the rest of ``fileobj``."""

    def __init__(self, prefix: bytes, fileobj: BinaryIO):
        self._prefix = prefix
        self._fileobj = fileobj

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._prefix:
            if size is None or size < 0:
                data, self._prefix = self._prefix + self._fileobj.read(), b""
                return data
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            return data
        return self._fileobj.read(size)


class _Counter:
    """Counts the compressed bytes read from the source (for the bomb check)."""

    def __init__(self, fileobj: BinaryIO):
        self._fileobj = fileobj
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._fileobj.read(size)
        self.count += len(data)
        return data


class ArchiveReader:
    """The uncompressed stream, hashed (``sha256``) and counted (``size``) as it is read;
    ``copy_to`` receives it too."""

    def __init__(
        self, fileobj: BinaryIO, *, copy_to: BinaryIO | None = None, bomb_ratio: int = BOMB_RATIO,
        bomb_floor: int = BOMB_FLOOR,
    ):
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._copy_to = copy_to
        self._bomb_ratio = bomb_ratio
        self._bomb_floor = bomb_floor
        self._compressed: _Counter | None = None
        prefix = b""
        while len(prefix) < len(_MAGIC_XZ):
            chunk = self._guarded(fileobj.read, len(_MAGIC_XZ) - len(prefix))
            if not chunk:
                break
            prefix += chunk
        raw: Any = _Replay(prefix, fileobj)
        if prefix.startswith((_MAGIC_GZIP, _MAGIC_BZIP2, _MAGIC_XZ, _MAGIC_ZSTD)):
            raw = self._compressed = _Counter(raw)
        self._stream: BinaryIO
        if prefix.startswith(_MAGIC_GZIP):
            self._stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
        elif prefix.startswith(_MAGIC_BZIP2):
            self._stream = bz2.BZ2File(raw)  # type: ignore[arg-type]
        elif prefix.startswith(_MAGIC_XZ):
            self._stream = lzma.LZMAFile(raw)  # type: ignore[arg-type]
        elif prefix.startswith(_MAGIC_ZSTD):
            from supervisor.images.zstd import ZstdReader

            try:
                self._stream = ZstdReader(raw)  # type: ignore[assignment]
            except OSError as exc:  # zstandard missing
                raise ImageError(f"cannot read the archive: {exc}", reason=str(exc)) from exc
        else:
            self._stream = raw  # type: ignore[assignment]

    def read(self, size: int = -1) -> bytes:
        data = self._guarded(self._stream.read, size)
        self.sha256.update(data)
        self.size += len(data)
        if self._copy_to is not None and data:
            self._copy_to.write(data)
        compressed = self._compressed
        if (
            compressed is not None
            and self.size > self._bomb_floor
            and self.size > self._bomb_ratio * max(compressed.count, 1)
        ):
            reason = (
                f"decompression bomb: {self.size} bytes inflated from {compressed.count} "
                f"(more than {self._bomb_ratio}:1)"
            )
            raise ImageError(f"cannot import the archive: {reason}", reason=reason)
        return data

    def drain(self) -> None:
        """Read to the end so that the diff id covers the whole stream."""
        while self.read(CHUNK):
            pass

    @staticmethod
    def _guarded(read, size: int) -> bytes:  # type: ignore[no-untyped-def]
        try:
            return read(size)
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            reason = str(exc) or type(exc).__name__
            raise ImageError(f"cannot read the archive: {reason}", reason=reason) from exc


def decompressed(fileobj: BinaryIO, *, bomb_ratio: int = BOMB_RATIO, bomb_floor: int = BOMB_FLOOR) -> Any:
    """A readable stream of ``fileobj`` with its gzip, bzip2, xz or zstd compression undone (or
    as it is), refusing a decompression bomb; read errors are ImageErrors."""
    return ArchiveReader(fileobj, bomb_ratio=bomb_ratio, bomb_floor=bomb_floor)

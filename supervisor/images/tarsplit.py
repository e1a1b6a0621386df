"""Tar-split: a layer's tar stream kept as its unpacked files plus the bytes around them.

Theory of operation
-------------------
The store keeps each layer once, unpacked (the overlay lower dir). The layer's tar stream
is needed again only for ``save`` and ``push``, and it must come back byte for byte: its
sha256 is the layer's diff id, named by every image config that uses it. What
containers/storage calls tar-split does this, and so does this module:

* while a layer is unpacked, :class:`TarSplitWriter` receives the uncompressed stream
  (``write``) and is told, for each regular file whose content went to disk as it is,
  where that content lies in the stream (``content``). Everything else (header blocks,
  PAX and GNU long-name headers, padding, the end-of-archive blocks and any bytes after
  them, the data of members that are not unpacked as regular files, such as sparse files)
  is recorded raw. Content is never buffered: the writer only holds the bytes it has not
  yet classified, at most the stream's read-ahead.
* :func:`regenerate` reads the records back and yields the stream: the raw bytes as they
  are, each file's content read from the unpacked file (through ``open_file``), checking
  each file's length against the record and the sha256 of the whole against the diff id,
  while it streams. A changed file is an error naming the layer, never a silent new digest.

A file that a later member of the same layer replaces (tar semantics: the last one wins)
would lose the content the first reference points at. The extractor tells the writer
before it removes such a path (:meth:`TarSplitWriter.keep`), and the writer moves the
file aside into ``kept/<ordinal>`` of the layer (a rename: no copy); the reader opens
kept ordinals there.

The records file (``tar-split.gz``, gzip of a small binary format)::

    MAGIC
    0x01 RAW   varint length, bytes
    0x02 FILE  varint size, varint path length, path (relative to diff/, bytes)
    0x03 END   varint total length of the stream

Varints are unsigned LEB128. FILE records are numbered from 0 in order (their ordinal).
The module does no I/O of its own beyond the file objects it is given (sans-IO apart from
``kept``'s rename, which :class:`TarSplitWriter` does through fds it is given).
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from supervisor.errors import ImageError

MAGIC = b"dockyard-tar-split 1\n"
RAW, FILE, END = 1, 2, 3
CHUNK = 1 << 20
FLUSH_AT = 1 << 20  # raw bytes held before they are written as a record


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class TarSplitWriter:
    """Records a tar stream as raw bytes and references to unpacked files.

    Args:
        output: receives the gzip-compressed records.
        kept_dir_fd: a directory (the layer's ``kept/``) where :meth:`keep` moves files a
            later member replaces; None refuses such archives' replacements (tests).
    """

    def __init__(self, output: BinaryIO, *, kept_dir_fd: int | None = None):
        self._output = output
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        self._kept_dir_fd = kept_dir_fd
        self.received = 0           # bytes of the stream seen so far
        self._pending = bytearray()  # raw bytes not yet written, from _pending_start
        self._pending_start = 0
        self._skip_until = 0         # bytes before this offset are file content, not kept
        self.files = 0               # FILE records written
        self.references: dict[tuple[str, ...], int] = {}  # unpacked path -> ordinal of its content
        self.kept: list[int] = []    # ordinals moved to kept/
        self.closed = False
        self._emit(MAGIC)

    # --- the stream -------------------------------------------------------------------

    def write(self, data: bytes) -> int:
        """The next bytes of the uncompressed stream (the extractor's ``copy_to``)."""
        start = self.received
        self.received += len(data)
        if start < self._skip_until:
            data = data[self._skip_until - start:]
        self._pending += data
        if len(self._pending) >= FLUSH_AT:
            self._flush_raw(len(self._pending))
        return len(data)

    def content(self, offset: int, size: int, path: tuple[str, ...]) -> int:
        """The bytes ``[offset, offset + size)`` of the stream are the content of the
        unpacked regular file ``path``: not recorded, referenced. Returns its ordinal.
        Call it before the content is read from the stream (the writer holds only what was
        read ahead)."""
        if size <= 0:
            raise ValueError("tar-split: a file reference needs content")
        if offset < self._pending_start or offset > self.received:
            raise ValueError(f"tar-split: content at {offset} is not in the unclassified bytes "
                             f"[{self._pending_start}, {self.received}]")
        self._flush_raw(offset - self._pending_start)
        end = offset + size
        have = min(self.received, end) - offset
        del self._pending[:have]
        self._pending_start = end
        self._skip_until = end
        encoded = "/".join(path).encode("utf-8", "surrogateescape")
        self._emit(bytes([FILE]) + _varint(size) + _varint(len(encoded)) + encoded)
        ordinal = self.files
        self.files += 1
        self.references[path] = ordinal
        return ordinal

    def skipped(self, length: int) -> None:
        """``length`` bytes of a referenced file's content passed without :meth:`write`
        (a seekable source skipped them)."""
        if self.received + length > self._skip_until:
            raise ValueError("tar-split: only a file's content may be skipped")
        self.received += length

    def close(self) -> None:
        """Write the remaining raw bytes and the END record, and flush the compressor."""
        if self.closed:
            return
        if self._skip_until > self.received:
            raise ValueError("tar-split: the stream ended inside a file's content")
        self._flush_raw(len(self._pending))
        self._emit(bytes([END]) + _varint(self.received))
        self._output.write(self._compressor.flush())
        self.closed = True

    # --- replaced files ---------------------------------------------------------------

    def referenced_under(self, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Referenced paths equal to ``path`` or below it."""
        if path in self.references:
            return [path]
        depth = len(path)
        return [ref for ref in self.references if ref[:depth] == path and len(ref) > depth]

    def keep(self, parent_fd: int, name: str, path: tuple[str, ...]) -> None:
        """The referenced file ``path`` (``name`` in ``parent_fd``) is about to be removed or
        replaced: move it to ``kept/<ordinal>``, where :func:`regenerate` finds it."""
        ordinal = self.references.pop(path)
        if self._kept_dir_fd is None:
            raise ValueError(f"tar-split: {'/'.join(path)} is replaced and there is no kept/ directory")
        os.rename(name, str(ordinal), src_dir_fd=parent_fd, dst_dir_fd=self._kept_dir_fd)
        self.kept.append(ordinal)

    # --- internals --------------------------------------------------------------------

    def _flush_raw(self, length: int) -> None:
        if length <= 0:
            return
        self._emit(bytes([RAW]) + _varint(length))
        self._emit(bytes(self._pending[:length]))
        del self._pending[:length]
        self._pending_start += length

    def _emit(self, data: bytes) -> None:
        self._output.write(self._compressor.compress(data))


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    data: bytes


@dataclass(frozen=True)
class FileReference:
    ordinal: int
    path: bytes  # relative to the layer's diff/
    size: int


@dataclass(frozen=True)
class End:
    size: int


class _Buffered:
    """Reads exact lengths and varints out of a decompressed stream."""

    def __init__(self, fileobj: BinaryIO, what: str):
        self._decompressor = zlib.decompressobj(31)
        self._fileobj = fileobj
        self._buffer = bytearray()
        self._what = what

    def _fill(self, need: int) -> None:
        while len(self._buffer) < need:
            chunk = self._fileobj.read(CHUNK)
            if not chunk:
                tail = self._decompressor.flush()
                if not tail:
                    raise _corrupt(self._what, "it ends early")
                self._buffer += tail
                continue
            try:
                self._buffer += self._decompressor.decompress(chunk)
            except zlib.error as exc:
                raise _corrupt(self._what, str(exc)) from None

    def take(self, length: int) -> bytes:
        self._fill(length)
        data = bytes(self._buffer[:length])
        del self._buffer[:length]
        return data

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise _corrupt(self._what, "a length is too long")


def read_records(fileobj: BinaryIO, what: str = "tar-split") -> Iterator[Raw | FileReference | End]:
    """The records of a tar-split file, in order, ending with :class:`End`.

    Raises:
        ImageError: the file is not a tar-split file or is truncated (``reason="tar-split"``).
    """
    source = _Buffered(fileobj, what)
    if source.take(len(MAGIC)) != MAGIC:
        raise _corrupt(what, "it is not a dockyard tar-split file")
    ordinal = 0
    while True:
        kind = source.take(1)[0]
        if kind == RAW:
            remaining = source.varint()
            while remaining:  # in pieces: a raw record may be as large as FLUSH_AT or more
                piece = source.take(min(remaining, CHUNK))
                remaining -= len(piece)
                yield Raw(piece)
        elif kind == FILE:
            size = source.varint()
            path = source.take(source.varint())
            yield FileReference(ordinal, path, size)
            ordinal += 1
        elif kind == END:
            yield End(source.varint())
            return
        else:
            raise _corrupt(what, f"unknown record type {kind}")


def regenerate(fileobj: BinaryIO, open_file: Callable[[FileReference], BinaryIO], *, diff_id: str, size: int,
               what: str) -> Iterator[bytes]:
    """The tar stream recorded in ``fileobj``, in chunks, checked while it streams.

    Args:
        open_file: the unpacked file of a reference (opened for reading).
        diff_id, size: what the stream must hash to and measure (the layer's record).
        what: names the layer in errors (``layer sha256:... of the image store``).

    Raises:
        ImageError: a file is missing, longer or shorter than recorded, or the whole does
            not hash to ``diff_id`` (``reason="layer_changed"``); or the records are corrupt.
    """
    sha256 = hashlib.sha256()
    produced = 0
    for record in read_records(fileobj, f"the tar-split records of {what}"):
        if isinstance(record, Raw):
            sha256.update(record.data)
            produced += len(record.data)
            yield record.data
        elif isinstance(record, FileReference):
            shown = record.path.decode("utf-8", "surrogateescape")
            try:
                source = open_file(record)
            except OSError as exc:
                raise _changed(what, f"its file /{shown} cannot be opened ({exc.strerror or exc})") from None
            with source:
                remaining = record.size
                while remaining:
                    chunk = source.read(min(remaining, CHUNK))
                    if not chunk:
                        raise _changed(what, f"its file /{shown} is shorter than the {record.size} bytes recorded")
                    remaining -= len(chunk)
                    sha256.update(chunk)
                    produced += len(chunk)
                    yield chunk
                if source.read(1):
                    raise _changed(what, f"its file /{shown} is longer than the {record.size} bytes recorded")
        else:
            if record.size != produced or produced != size:
                raise _corrupt(f"the tar-split records of {what}",
                               f"they give {produced} bytes, not the {size} recorded")
            actual = f"sha256:{sha256.hexdigest()}"
            if actual != diff_id:
                raise _changed(what, f"its files give a stream of digest {actual}, not its diff id {diff_id}")


class StreamReader:
    """A read-only file object over an iterator of chunks (for tarfile and compressors)."""

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._buffer = b""
        self._offset = 0  # into _buffer: slicing from an offset copies only what is returned

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            data = self._buffer[self._offset:] + b"".join(self._chunks)
            self._buffer, self._offset = b"", 0
            return data
        pieces, wanted = [], size
        while wanted > 0:  # a full read unless at the end: tarfile takes a short one for one
            if self._offset >= len(self._buffer):
                self._buffer, self._offset = next(self._chunks, b""), 0
                if not self._buffer:
                    break
            piece = self._buffer[self._offset:self._offset + wanted]
            self._offset += len(piece)
            wanted -= len(piece)
            pieces.append(piece)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _changed(what: str, reason: str) -> ImageError:
    return ImageError(f"cannot read {what}: {reason}; the unpacked layer was changed since it was stored "
                      "(remove the images that use it and pull or load them again)", reason="layer_changed")


def _corrupt(what: str, reason: str) -> ImageError:
    return ImageError(f"cannot read {what}: {reason}", reason="tar-split")

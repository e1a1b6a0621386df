"""One registry's distribution API: the calls that pull and push need (manifests, blobs,
login), each checking what comes back (digests, sizes, limits).

The connection and the auth they go through are :mod:`supervisor.registry.session`'s (its
docstring tells the scheme and auth rules); only :mod:`supervisor.registry.transfer`
imports this module, so httpx stays off every other path.

Every error names the registry and the object (``blob sha256:... of REPO``,
``manifest REPO:TAG``) and the cause.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import trio

from supervisor.registry.errors import NotFoundError, ProtocolError, RegistryUnavailable, VerificationError
from supervisor.registry.layout import blob_path, partial_path
from supervisor.registry.manifest import ACCEPT, Descriptor
from supervisor.registry.progress import Meter
from supervisor.registry.session import RegistrySession

READ_CHUNK = 1 << 20
#: The PATCH size of a streamed upload (``Options.chunk_size`` when set).
STREAM_CHUNK = 8 << 20


class RegistryClient(RegistrySession):
    """Talks to one registry for one set of repository scopes.

    Use as ``async with RegistryClient(...) as client:``; the HTTP connections are pooled
    for the client's life.
    """

    # --- manifests -----------------------------------------------------------------------

    async def get_manifest(self, repository: str, reference: str, expect: Descriptor | None = None) -> tuple[bytes, str, str]:
        """GET a manifest or index by tag or digest -> (bytes, media type, digest).

        The body is read up to ``options.manifest_limit``. The digest is checked against
        ``reference`` when it is one, against ``expect`` (digest and size) when given, and
        against the registry's Docker-Content-Digest header when it sends one.
        """
        separator = "@" if ":" in reference else ":"
        what = f"manifest {repository}{separator}{reference}"
        limit = self.options.manifest_limit
        async with self.request("GET", f"/v2/{repository}/manifests/{reference}", what, {"Accept": ACCEPT}) as response:
            if response.status_code != 200:
                raise await self.failure(response, what)
            declared = response.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise ProtocolError(f"registry {self.registry}: {what} is {declared} bytes, over the {limit}-byte manifest limit",
                                    registry=self.registry, object=what)
            body = bytearray()
            try:
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise ProtocolError(f"registry {self.registry}: {what} is over the {limit}-byte manifest limit",
                                            registry=self.registry, object=what)
            except httpx.TransportError as exc:
                raise self.unavailable(exc, what) from None
            media_type = response.headers.get("content-type", "").split(";")[0].strip()
            header_digest = response.headers.get("docker-content-digest")
        data = bytes(body)
        want = expect.digest if expect else (reference if separator == "@" else None)
        algorithm = want.partition(":")[0] if want else "sha256"
        digest = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
        if want and digest != want:
            raise VerificationError(f"registry {self.registry}: {what} has digest {digest}, not {want}",
                                    registry=self.registry, object=what)
        if expect and len(data) != expect.size:
            raise VerificationError(f"registry {self.registry}: {what} is {len(data)} bytes, not {expect.size}",
                                    registry=self.registry, object=what)
        if header_digest and header_digest.startswith(f"{algorithm}:") and header_digest != digest:
            raise VerificationError(f"registry {self.registry}: {what} has digest {digest}, but the registry "
                                    f"says {header_digest}", registry=self.registry, object=what)
        return data, media_type, digest

    async def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> str:
        """PUT a manifest under a tag or digest; returns its digest (checked against the
        registry's Docker-Content-Digest when sent)."""
        separator = "@" if ":" in reference else ":"
        what = f"manifest {repository}{separator}{reference}"
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        async with self.request("PUT", f"/v2/{repository}/manifests/{reference}", what,
                                {"Content-Type": media_type}, content=lambda: data) as response:
            if response.status_code not in (200, 201):
                raise await self.failure(response, what)
            header_digest = response.headers.get("docker-content-digest")
        if header_digest and header_digest != digest:
            raise VerificationError(f"registry {self.registry} stored {what} as {header_digest}, not {digest}",
                                    registry=self.registry, object=what)
        return digest

    # --- blobs ---------------------------------------------------------------------------

    async def blob_exists(self, repository: str, descriptor: Descriptor) -> bool:
        what = f"blob {descriptor.digest} of {repository}"
        async with self.request("HEAD", f"/v2/{repository}/blobs/{descriptor.digest}", what) as response:
            if response.status_code == 404:
                return False
            if response.status_code != 200:
                raise await self.failure(response, what)
            return True

    async def fetch_blob(self, repository: str, descriptor: Descriptor, root: Path, meter: Meter) -> Path:
        """Download a blob into the OCI layout at ``root``: streamed to a temporary file,
        checked against the descriptor's size (never more is read) and digest, then renamed
        to ``blobs/<alg>/<hex>``. On any failure the temporary file is removed."""
        digest, size = descriptor.digest, descriptor.size
        what = f"blob {digest} of {repository}"
        partial = partial_path(root, digest)
        algorithm = digest.partition(":")[0]
        hasher = hashlib.new(algorithm)
        received = 0
        try:
            async with self.request("GET", f"/v2/{repository}/blobs/{digest}", what,
                                    {"Accept-Encoding": "identity"}) as response:
                if response.status_code != 200:
                    raise await self.failure(response, what)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) != size:
                    raise VerificationError(f"registry {self.registry}: {what} is {declared} bytes, "
                                            f"but the manifest says {size}", registry=self.registry, object=what)
                meter.emit("downloading")
                with open(partial, "wb") as out:
                    # Hashing and writing run in a worker thread (both release the GIL), so
                    # the blobs downloaded at the same time use more than one core.
                    sink = _Sink(out, hasher)
                    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
                    try:
                        async for chunk in (response.aiter_bytes() if encoded else response.aiter_raw()):
                            received += len(chunk)
                            if received > size:
                                raise VerificationError(f"registry {self.registry}: {what} is longer than the "
                                                        f"{size} bytes the manifest says", registry=self.registry, object=what)
                            await sink.put(chunk)
                            meter.advance(len(chunk))
                        await sink.drain()
                    except httpx.TransportError as exc:
                        raise RegistryUnavailable(
                            f"registry {self.registry}: the connection dropped after {received} of {size} bytes of "
                            f"{what} ({type(exc).__name__}: {exc})", registry=self.registry, object=what) from None
            if received != size:
                raise VerificationError(f"registry {self.registry}: {what} ended after {received} of {size} bytes",
                                        registry=self.registry, object=what)
            actual = f"{algorithm}:{hasher.hexdigest()}"
            if actual != digest:
                raise VerificationError(f"registry {self.registry}: {what} has digest {actual}: it is not the blob asked for",
                                        registry=self.registry, object=what)
            meter.emit("verifying")
            os.chmod(partial, 0o644)
            final = blob_path(root, digest)
            os.replace(partial, final)
            return final
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    async def _start_upload(self, repository: str, descriptor: Descriptor, mount_from: tuple[str, ...]) -> str | None:
        """POST an upload (trying a cross-repository mount from each source first). Returns
        the upload URL, or None when a mount made the blob present."""
        what = f"blob {descriptor.digest} of {repository}"
        for source in mount_from:
            query = urlencode({"mount": descriptor.digest, "from": source})
            async with self.request("POST", f"/v2/{repository}/blobs/uploads/?{query}", what) as response:
                if response.status_code == 201:
                    return None
                if response.status_code == 202:
                    # The registry could not mount (no access to the source) and opened an
                    # ordinary upload instead.
                    return self._location(response, what)
        async with self.request("POST", f"/v2/{repository}/blobs/uploads/", what) as response:
            if response.status_code != 202:
                raise await self.failure(response, what)
            return self._location(response, what)

    def _location(self, response: httpx.Response, what: str) -> str:
        location = response.headers.get("location")
        if not location:
            raise ProtocolError(f"registry {self.registry} opened an upload for {what} without a Location",
                                registry=self.registry, object=what)
        return str(response.url.join(location))

    async def push_blob(self, repository: str, descriptor: Descriptor, path: Path, meter: Meter,
                        mount_from: tuple[str, ...] = (), prepare: Callable[[], Awaitable[object]] | None = None,
                        stream: Callable[[], Awaitable[Any]] | None = None) -> str:
        """Make the blob present in ``repository``; returns ``exists``, ``mounted`` or
        ``uploaded``: a HEAD first, then a mount from each of ``mount_from``, and only then
        the upload: of what ``stream()`` opens (compressed as it is sent,
        :meth:`upload_stream`) if it opens something, else of ``path`` after ``prepare()``
        (which writes it, if given). Uploads
        monolithically (one PUT), or in PATCH chunks of ``options.chunk_size`` then a
        closing PUT."""
        digest, size = descriptor.digest, descriptor.size
        what = f"blob {digest} of {repository}"
        if await self.blob_exists(repository, descriptor):
            return "exists"
        location = await self._start_upload(repository, descriptor, tuple(mount_from))
        if location is None:
            return "mounted"
        opened = await stream() if stream is not None else None
        if opened is not None:
            await self.upload_stream(repository, digest, opened, meter, location, expect=digest)
            return "uploaded"
        if prepare is not None:
            try:
                await prepare()
            except OSError as exc:
                raise NotFoundError(f"cannot push {what} to {self.registry}: {exc}", registry=self.registry,
                                    object=what) from None
        try:
            actual_size = os.stat(path).st_size
        except OSError as exc:
            raise NotFoundError(f"cannot push {what} to {self.registry}: {exc}", registry=self.registry, object=what) from None
        if actual_size != size:
            raise VerificationError(f"cannot push {what} to {self.registry}: the local file {path} is {actual_size} bytes, "
                                    f"not {size}", registry=self.registry, object=what)
        meter.emit("uploading")
        chunk_size = self.options.chunk_size
        if chunk_size is not None and size > 0:
            offset = 0
            while offset < size:
                length = min(chunk_size, size - offset)
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                           "Content-Range": f"{offset}-{offset + length - 1}"}
                async with self.request("PATCH", location, what, headers,
                                        content=lambda o=offset, n=length: _file_chunks(path, o, n, meter)) as response:
                    if response.status_code != 202:
                        raise await self.failure(response, f"{what} (chunk at byte {offset})")
                    location = self._location(response, what)
                offset += length
            final = _with_query(location, digest=digest)
            async with self.request("PUT", final, what, {"Content-Length": "0"}) as response:
                if response.status_code != 201:
                    raise await self.failure(response, what)
                stored = response.headers.get("docker-content-digest")
        else:
            final = _with_query(location, digest=digest)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            async with self.request("PUT", final, what, headers,
                                    content=lambda: _file_chunks(path, 0, size, meter)) as response:
                if response.status_code != 201:
                    raise await self.failure(response, what)
                stored = response.headers.get("docker-content-digest")
        if stored and stored != digest:
            raise VerificationError(f"registry {self.registry} stored {what} as {stored}", registry=self.registry, object=what)
        return "uploaded"

    async def upload_stream(self, repository: str, name: str, stream: Any, meter: Meter, location: str | None = None,
                            expect: str | None = None) -> tuple[str, int]:
        """Upload a blob made while it is sent (a layer compressed now): POST an upload
        (unless ``location`` is one already open), PATCH its pieces as ``stream.read()``
        (in a thread, one piece ahead of the upload) gives them, each with its
        Content-Range, then PUT with the digest computed meanwhile (the OCI distribution
        spec's chunked upload). ``expect``: the digest it must have (a recorded one).
        Returns (digest, size)."""
        what = f"layer {name} of {repository}"
        chunk_size = self.options.chunk_size or STREAM_CHUNK
        if location is None:
            async with self.request("POST", f"/v2/{repository}/blobs/uploads/", what) as response:
                if response.status_code != 202:
                    raise await self.failure(response, what)
                location = self._location(response, what)
        meter.emit("uploading")
        send, receive = trio.open_memory_channel[bytes](1)

        async def produce() -> None:
            async with send:
                try:
                    while piece := await trio.to_thread.run_sync(stream.read, chunk_size):
                        await send.send(piece)
                except OSError as exc:
                    raise NotFoundError(f"cannot push {what} to {self.registry}: {exc}", registry=self.registry,
                                        object=what) from None

        offset = 0
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(produce)
                async with receive:
                    async for piece in receive:
                        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(piece)),
                                   "Content-Range": f"{offset}-{offset + len(piece) - 1}"}
                        async with self.request("PATCH", location, what, headers, content=lambda p=piece: p) as response:
                            if response.status_code != 202:
                                raise await self.failure(response, f"{what} (chunk at byte {offset})")
                            location = self._location(response, what)
                        offset += len(piece)
                        meter.advance(len(piece))
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            stream.close()
        digest = stream.digest
        if expect is not None and digest != expect:
            raise VerificationError(f"cannot push {what} to {self.registry}: it compresses to {digest} now, not to the "
                                    f"recorded {expect} (the record is updated: push again)", registry=self.registry,
                                    object=what)
        what = f"layer {name} (blob {digest}) of {repository}"
        async with self.request("PUT", _with_query(location, digest=digest), what, {"Content-Length": "0"}) as response:
            if response.status_code != 201:
                raise await self.failure(response, what)
            stored = response.headers.get("docker-content-digest")
        if stored and stored != digest:
            raise VerificationError(f"registry {self.registry} stored {what} as {stored}", registry=self.registry, object=what)
        return digest, offset

    # --- login ---------------------------------------------------------------------------

    async def check_login(self) -> bool:
        """Check ``self.credentials`` against the registry. Returns False when the registry
        asks for no authentication at all. Raises AuthError when it refuses them."""
        what = "a login"
        await self.ping()
        if self.challenge is None:
            return False
        if self.challenge.scheme == "bearer":
            return True  # ping fetched a token with these credentials: they are good
        async with self.request("GET", "/v2/", what) as response:
            if response.status_code != 200:
                raise await self.failure(response, what)
        return True


class _Sink:
    """Hashes and writes a blob's chunks in a worker thread, batched to about
    :data:`READ_CHUNK` bytes per hand-off; one batch in flight at a time."""

    def __init__(self, out: Any, hasher: Any):
        self.out = out
        self.hasher = hasher
        self.batch: list[bytes] = []
        self.batched = 0

    def _consume(self, chunks: list[bytes]) -> None:
        data = b"".join(chunks)
        self.hasher.update(data)
        self.out.write(data)

    async def put(self, chunk: bytes) -> None:
        self.batch.append(chunk)
        self.batched += len(chunk)
        if self.batched >= READ_CHUNK:
            await self.drain()

    async def drain(self) -> None:
        if self.batch:
            chunks, self.batch, self.batched = self.batch, [], 0
            await trio.to_thread.run_sync(self._consume, chunks)


def _with_query(url: str, **params: str) -> str:
    return url + ("&" if "?" in url else "?") + urlencode(params)


async def _file_chunks(path: Path, offset: int, length: int, meter: Meter) -> AsyncIterator[bytes]:
    with open(path, "rb") as source:
        source.seek(offset)
        remaining = length
        while remaining:
            chunk = await trio.to_thread.run_sync(source.read, min(READ_CHUNK, remaining))
            if not chunk:
                raise VerificationError(f"{path} ended {remaining} bytes early while it was being pushed", object=str(path))
            remaining -= len(chunk)
            meter.advance(len(chunk))
            yield chunk

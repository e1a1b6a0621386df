"""One registry over HTTP: the distribution API calls that pull and push need, with auth.

httpx (on trio through anyio) does the HTTP; this module decides what to send and checks
what comes back. It is the only module of the package that imports httpx, and only
:mod:`supervisor.registry.transfer` imports it.

Scheme
    A registry is reached over HTTPS with certificates verified. A loopback registry or one
    listed as insecure is tried over HTTPS without verification first, then over plain HTTP
    (docker's rule), once per client, in :meth:`RegistryClient.ping`.

Auth
    ``ping`` (GET /v2/) learns the registry's challenge. Before the first request for a set
    of scopes, a bearer token is fetched from the challenge's realm (with the saved
    credentials, if any); with a basic challenge the credentials go on every request. A
    401 later (a token expired) fetches one new token and retries once; a 401 without a
    challenge, or a second 401, is an :class:`AuthError`.

Every error names the registry and the object (``blob sha256:... of REPO``,
``manifest REPO:TAG``) and the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import trio

from supervisor.registry.auth import Challenge, Credentials, parse_challenges
from supervisor.registry.errors import (
    AuthError,
    NotFoundError,
    ProtocolError,
    RegistryError,
    RegistryUnavailable,
    VerificationError,
)
from supervisor.registry.layout import blob_path, partial_path
from supervisor.registry.manifest import ACCEPT, Descriptor
from supervisor.registry.options import Options
from supervisor.registry.progress import Meter

READ_CHUNK = 1 << 20


def _distribution_errors(body: bytes) -> str:
    """The ``errors`` of a distribution error body, as ``CODE: message`` text."""
    try:
        document = json.loads(body)
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in document["errors"]]
        return "; ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body[:200].decode("utf-8", "replace").strip()
        return text


class RegistryClient:
    """Talks to one registry for one set of repository scopes.

    Use as ``async with RegistryClient(...) as client:``; the HTTP connections are pooled
    for the client's life.
    """

    def __init__(self, registry: str, api_host: str | None = None, *, scopes: tuple[str, ...] = (),
                 credentials: Credentials | None = None, options: Options | None = None):
        self.registry = registry
        self.api_host = api_host or registry
        self.scopes = tuple(scopes)
        self.credentials = credentials
        self.options = options or Options()
        self.base_url: str | None = None
        self.challenge: Challenge | None = None
        self.token: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._ping_lock = trio.Lock()  # concurrent blob tasks share one ping and one pool

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- connection and auth -------------------------------------------------------------

    def _new_http(self, verify: bool) -> httpx.AsyncClient:
        options = self.options
        return httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(options.read_timeout, connect=options.connect_timeout),
            follow_redirects=True,
            max_redirects=options.max_redirects,
            headers={"User-Agent": options.user_agent},
            # No proxy, netrc or certificate settings from the environment: the daemon talks
            # to the host in the reference and nothing else.
            trust_env=False,
        )

    def _unavailable(self, exc: Exception, what: str) -> RegistryUnavailable:
        return RegistryUnavailable(f"cannot reach registry {self.registry} for {what}: {type(exc).__name__}: {exc}",
                                   registry=self.registry, object=what)

    async def ping(self) -> None:
        """Choose the scheme, learn the challenge, and authenticate for ``self.scopes``."""
        async with self._ping_lock:
            if self.base_url is None:
                await self._ping()

    async def _ping(self) -> None:
        insecure = self.options.is_insecure(self.api_host)
        attempts = [("https", not insecure)] + ([("http", False)] if insecure else [])
        last: Exception | None = None
        for scheme, verify in attempts:
            http = self._new_http(verify)
            try:
                response = await http.get(f"{scheme}://{self.api_host}/v2/")
            except httpx.TooManyRedirects as exc:
                await http.aclose()
                raise self._redirect_loop(exc, "the API version check (GET /v2/)") from None
            except httpx.TransportError as exc:
                await http.aclose()
                last = exc
                continue
            self._http, self.base_url = http, f"{scheme}://{self.api_host}"
            break
        else:
            assert last is not None
            raise self._unavailable(last, "the API version check (GET /v2/)") from None
        if response.status_code == 401:
            self.challenge = self._challenge_of(response, "the API version check (GET /v2/)")
            if self.challenge.scheme == "bearer":
                await self._fetch_token("the API version check (GET /v2/)")
        elif response.status_code >= 400 and response.status_code != 404:
            # 404: some registries (and proxies) serve the API without /v2/ itself.
            raise ProtocolError(
                f"registry {self.registry} answered GET /v2/ with {response.status_code} "
                f"({_distribution_errors(response.content) or response.reason_phrase})",
                registry=self.registry, object="/v2/")

    def _challenge_of(self, response: httpx.Response, what: str) -> Challenge:
        header = response.headers.get("www-authenticate", "")
        for challenge in parse_challenges(header):
            if challenge.scheme == "bearer" and challenge.realm:
                return challenge
        for challenge in parse_challenges(header):
            if challenge.scheme == "basic":
                return challenge
        if header:
            raise AuthError(f"registry {self.registry} asks for unsupported authentication for {what}: {header!r}",
                            registry=self.registry, object=what)
        raise AuthError(f"registry {self.registry} refused {what} with 401 Unauthorized and no WWW-Authenticate "
                        "challenge: there is no way to authenticate", registry=self.registry, object=what)

    async def _fetch_token(self, what: str, scopes: tuple[str, ...] | None = None) -> None:
        assert self.challenge is not None and self._http is not None
        realm = self.challenge.realm
        if not realm or not realm.startswith(("https://", "http://")):
            raise AuthError(f"registry {self.registry} gave a bearer challenge without a valid realm ({realm!r})",
                            registry=self.registry, object=what)
        query: list[tuple[str, str]] = []
        if self.challenge.params.get("service"):
            query.append(("service", self.challenge.params["service"]))
        for scope in self.scopes if scopes is None else scopes:
            query.append(("scope", scope))
        headers = {}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.basic_header()
            query.append(("account", self.credentials.username))
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        try:
            response = await self._http.get(url, headers=headers)
        except httpx.TooManyRedirects as exc:
            raise self._redirect_loop(exc, f"a token from {realm}") from None
        except httpx.TransportError as exc:
            raise AuthError(f"cannot get a token for registry {self.registry} from {realm}: {type(exc).__name__}: {exc}",
                            registry=self.registry, object=what) from None
        if response.status_code in (401, 403):
            who = f"as {self.credentials.username}" if self.credentials else "anonymously (no saved credentials: `dockyard login`)"
            raise AuthError(f"the token server of registry {self.registry} refused {what} {who}: "
                            f"{response.status_code} {_distribution_errors(response.content) or response.reason_phrase}",
                            registry=self.registry, object=what)
        try:
            document = response.json()
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise AuthError(f"the token server of registry {self.registry} ({realm}) gave no token for {what} "
                            f"(status {response.status_code})", registry=self.registry, object=what)
        self.token = token

    def _auth_headers(self) -> dict[str, str]:
        if self.challenge is None:
            return {}
        if self.challenge.scheme == "bearer" and self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.challenge.scheme == "basic" and self.credentials is not None:
            return {"Authorization": self.credentials.basic_header()}
        return {}

    def _redirect_loop(self, exc: Exception, what: str) -> ProtocolError:
        return ProtocolError(f"registry {self.registry}: redirect loop for {what} (more than "
                             f"{self.options.max_redirects} redirects)", registry=self.registry, object=what)

    @asynccontextmanager
    async def _stream(self, method: str, url: str, what: str, headers: dict[str, str] | None = None,
                      content: Callable[[], Any] | None = None) -> AsyncIterator[httpx.Response]:
        """Send a request (``url`` relative to the API root, or absolute) and yield the
        streaming response, after answering one 401 with fresh credentials."""
        await self.ping()
        assert self._http is not None and self.base_url is not None
        if not url.startswith(("http://", "https://")):
            url = self.base_url + url
        for attempt in (1, 2):
            request_headers = {**(headers or {}), **self._auth_headers()}
            request = self._http.build_request(method, url, headers=request_headers,
                                               content=content() if content else None)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TooManyRedirects as exc:
                raise self._redirect_loop(exc, what) from None
            except httpx.TransportError as exc:
                raise self._unavailable(exc, what) from None
            try:
                if response.status_code == 401:
                    challenge = self._challenge_of(response, what)
                    if attempt == 2 or (challenge.scheme == "basic" and (self.credentials is None or self.challenge == challenge)):
                        who = f"as {self.credentials.username}" if self.credentials else \
                            "anonymously (no saved credentials: `dockyard login " + self.registry + "`)"
                        raise AuthError(f"registry {self.registry} refused {what} {who}: 401 "
                                        f"{_distribution_errors(await response.aread()) or 'Unauthorized'}",
                                        registry=self.registry, object=what)
                    self.challenge = challenge
                    if challenge.scheme == "bearer":
                        await self._fetch_token(what)
                    continue
                yield response
                return
            finally:
                await response.aclose()

    async def _fail(self, response: httpx.Response, what: str) -> RegistryError:
        """The error for an unexpected status (the body is read for the registry's reason)."""
        try:
            detail = _distribution_errors(await response.aread())
        except httpx.HTTPError:
            detail = ""
        detail = detail or response.reason_phrase
        if response.status_code == 404:
            return NotFoundError(f"registry {self.registry}: {what} not found ({detail})", registry=self.registry, object=what)
        if response.status_code == 403:
            return AuthError(f"registry {self.registry} denied {what}: 403 {detail}", registry=self.registry, object=what)
        return ProtocolError(f"registry {self.registry} answered {response.status_code} for {what}: {detail}",
                             registry=self.registry, object=what, status=response.status_code)

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
        async with self._stream("GET", f"/v2/{repository}/manifests/{reference}", what, {"Accept": ACCEPT}) as response:
            if response.status_code != 200:
                raise await self._fail(response, what)
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
                raise self._unavailable(exc, what) from None
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
        async with self._stream("PUT", f"/v2/{repository}/manifests/{reference}", what,
                                {"Content-Type": media_type}, content=lambda: data) as response:
            if response.status_code not in (200, 201):
                raise await self._fail(response, what)
            header_digest = response.headers.get("docker-content-digest")
        if header_digest and header_digest != digest:
            raise VerificationError(f"registry {self.registry} stored {what} as {header_digest}, not {digest}",
                                    registry=self.registry, object=what)
        return digest

    # --- blobs ---------------------------------------------------------------------------

    async def blob_exists(self, repository: str, descriptor: Descriptor) -> bool:
        what = f"blob {descriptor.digest} of {repository}"
        async with self._stream("HEAD", f"/v2/{repository}/blobs/{descriptor.digest}", what) as response:
            if response.status_code == 404:
                return False
            if response.status_code != 200:
                raise await self._fail(response, what)
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
            async with self._stream("GET", f"/v2/{repository}/blobs/{digest}", what,
                                    {"Accept-Encoding": "identity"}) as response:
                if response.status_code != 200:
                    raise await self._fail(response, what)
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
            async with self._stream("POST", f"/v2/{repository}/blobs/uploads/?{query}", what) as response:
                if response.status_code == 201:
                    return None
                if response.status_code == 202:
                    # The registry could not mount (no access to the source) and opened an
                    # ordinary upload instead.
                    return self._location(response, what)
        async with self._stream("POST", f"/v2/{repository}/blobs/uploads/", what) as response:
            if response.status_code != 202:
                raise await self._fail(response, what)
            return self._location(response, what)

    def _location(self, response: httpx.Response, what: str) -> str:
        location = response.headers.get("location")
        if not location:
            raise ProtocolError(f"registry {self.registry} opened an upload for {what} without a Location",
                                registry=self.registry, object=what)
        return str(response.url.join(location))

    async def push_blob(self, repository: str, descriptor: Descriptor, path: Path, meter: Meter,
                        mount_from: tuple[str, ...] = ()) -> str:
        """Make the blob present in ``repository``; returns ``exists``, ``mounted`` or
        ``uploaded``. Uploads monolithically (one PUT), or in PATCH chunks of
        ``options.chunk_size`` then a closing PUT."""
        digest, size = descriptor.digest, descriptor.size
        what = f"blob {digest} of {repository}"
        if await self.blob_exists(repository, descriptor):
            return "exists"
        try:
            actual_size = os.stat(path).st_size
        except OSError as exc:
            raise NotFoundError(f"cannot push {what} to {self.registry}: {exc}", registry=self.registry, object=what) from None
        if actual_size != size:
            raise VerificationError(f"cannot push {what} to {self.registry}: the local file {path} is {actual_size} bytes, "
                                    f"not {size}", registry=self.registry, object=what)
        location = await self._start_upload(repository, descriptor, tuple(mount_from))
        if location is None:
            return "mounted"
        meter.emit("uploading")
        chunk_size = self.options.chunk_size
        if chunk_size is not None and size > 0:
            offset = 0
            while offset < size:
                length = min(chunk_size, size - offset)
                headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
                           "Content-Range": f"{offset}-{offset + length - 1}"}
                async with self._stream("PATCH", location, what, headers,
                                        content=lambda o=offset, n=length: _file_chunks(path, o, n, meter)) as response:
                    if response.status_code != 202:
                        raise await self._fail(response, f"{what} (chunk at byte {offset})")
                    location = self._location(response, what)
                offset += length
            final = _with_query(location, digest=digest)
            async with self._stream("PUT", final, what, {"Content-Length": "0"}) as response:
                if response.status_code != 201:
                    raise await self._fail(response, what)
                stored = response.headers.get("docker-content-digest")
        else:
            final = _with_query(location, digest=digest)
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            async with self._stream("PUT", final, what, headers,
                                    content=lambda: _file_chunks(path, 0, size, meter)) as response:
                if response.status_code != 201:
                    raise await self._fail(response, what)
                stored = response.headers.get("docker-content-digest")
        if stored and stored != digest:
            raise VerificationError(f"registry {self.registry} stored {what} as {stored}", registry=self.registry, object=what)
        return "uploaded"

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
        async with self._stream("GET", "/v2/", what) as response:
            if response.status_code != 200:
                raise await self._fail(response, what)
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

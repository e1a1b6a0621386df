"""The daemon's side of pull, push, login and logout: argument checks, the credentials
file and options from the daemon's config, progress forwarded to the client that asked,
and one ``image.<ref>.pull`` / ``image.<ref>.push`` event when a transfer is done.

The image store is reached through :class:`RegistryStore`, four calls wide, so this module
does not depend on the store's internals (see docs/registry.md for the adapter over
:class:`supervisor.images.store.ImageStore`). httpx is imported only when a transfer or a
login runs, never when the daemon starts.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ContextManager, Protocol

from supervisor.errors import InvalidArgument
from supervisor.registry.auth import Credentials, CredentialStore
from supervisor.registry.layout import LayoutImage, StreamedImage
from supervisor.registry.options import Options
from supervisor.registry.progress import Progress
from supervisor.registry.pushlayout import COMPRESSIONS, RECORDS_FILE, BlobRecords
from supervisor.registry.reference import DEFAULT_REGISTRY, Reference, normalise_registry
from supervisor.registry.reference import parse as parse_reference

CREDENTIALS_FILE = "auth.json"

#: ``emit(kind, action, actor, attributes)``: Supervisor.emit.
Emit = Callable[[str, str, str, dict[str, str]], None]
#: sends one progress payload to the requesting client (``Request.stream``).
Stream = Callable[[dict[str, Any]], Awaitable[Any]]


class Receiver(Protocol):
    """A place in the store for one pull: ``dir`` is filled by the pull, then ``ingest``."""

    dir: Path

    def ingest(self, result: Any) -> dict[str, Any]:
        """Take a :class:`~supervisor.registry.transfer.PullResult`'s layout into the store,
        all or nothing, tagged ``result.reference.familiar()``; returns the image summary."""


class RegistryStore(Protocol):
    """What pull and push need of the image store
    (:class:`supervisor.registry.store_adapter.ImageStoreAdapter` over dockyard's)."""

    def has_layer(self, chain_id: str) -> bool:
        """True when the store holds the layer with this chain id."""

    def receive(self) -> ContextManager[Receiver]:
        """A receiver whose directory and leftovers are removed when the block ends."""

    def layout_image(self, reference: str) -> LayoutImage:
        """The image ``reference`` as an entry of an OCI layout (its layers as the store
        keeps them); NotFound if absent."""

    def push_layout(self, reference: str, records: BlobRecords,
                    compression: str | None = None) -> LayoutImage | StreamedImage:
        """The image ``reference`` as a push sends it (layers compressed, in a layout of its
        own: :mod:`~supervisor.registry.pushlayout`): with ``compression`` (``gzip`` or
        ``zstd``) when it is given, and then only so; by default gzip, and a blob a
        registry already has in another compression is named as it is. NotFound if absent."""

    def release(self, source: LayoutImage | StreamedImage) -> None:
        """Remove what :meth:`push_layout` made."""

    def add_repo_digest(self, reference: str, repo_digest: str) -> None:
        """Record ``repo_digest`` (``name@sha256:<hex>``) as a RepoDigest of the image
        ``reference`` (a local reference or id)."""


def repo_digest(ref: Reference, digest: str) -> str:
    """``name@digest`` as docker shows a RepoDigest: the familiar name, no tag."""
    return f"{Reference(ref.registry, ref.repository).familiar()}@{digest}"


def credentials_path(root: Path) -> Path:
    """The credentials file: beside the daemon's state, since the daemon pulls and pushes."""
    return Path(root) / CREDENTIALS_FILE


def options_for(insecure_registries: tuple[str, ...] | frozenset[str] = ()) -> Options:
    return Options(insecure_registries=frozenset(insecure_registries))


def _string(args: dict[str, Any], name: str, default: str | None = None) -> str:
    value = args.get(name, default)
    if not isinstance(value, str) or (not value and default is None):
        raise InvalidArgument(f"argument {name!r} must be a non-empty string")
    return value


async def login(args: dict[str, Any], *, root: Path, options: Options) -> dict[str, Any]:
    """{registry (default docker.io), username, password} -> {registry, status}

    The credentials are checked against the registry first; refused ones are not saved.
    """
    from supervisor.registry import transfer

    registry = normalise_registry(_string(args, "registry", DEFAULT_REGISTRY) or DEFAULT_REGISTRY)
    credentials = Credentials(_string(args, "username"), _string(args, "password"))
    await transfer.login(registry, credentials, CredentialStore(credentials_path(root)), options=options)
    return {"registry": registry, "status": "Login Succeeded"}


async def logout(args: dict[str, Any], *, root: Path) -> dict[str, Any]:
    """{registry (default docker.io)} -> {registry, removed: bool}"""
    registry = normalise_registry(_string(args, "registry", DEFAULT_REGISTRY) or DEFAULT_REGISTRY)
    removed = CredentialStore(credentials_path(root)).remove(registry)
    return {"registry": registry, "removed": removed}


async def pull(args: dict[str, Any], *, store: RegistryStore, root: Path, options: Options,
               stream: Stream | None = None, emit: Emit | None = None) -> dict[str, Any]:
    """{reference, platform (optional, OS/ARCH[/VARIANT])} -> {reference, digest, image,
    fetched, skipped, bytes}; streams ``{"progress": Progress}`` payloads while it runs."""
    import trio

    from supervisor.registry import transfer
    from supervisor.registry.manifest import Platform

    ref = parse_reference(_string(args, "reference"))
    platform = None
    if args.get("platform"):
        try:
            platform = Platform.parse(_string(args, "platform"))
        except ValueError as exc:
            raise InvalidArgument(str(exc)) from None
    with store.receive() as receiver:
        async def pull_and_store(on_progress: Callable[[Progress], None]) -> tuple[Any, dict[str, Any]]:
            pulled = await transfer.pull(ref, receiver.dir, has_layer=store.has_layer, platform=platform,
                                         credentials=CredentialStore(credentials_path(root)), options=options,
                                         on_progress=on_progress)
            layers = [layer for layer in pulled.layers if layer.digest in pulled.fetched]
            for layer in layers:  # the store unpacks them now: say so, it takes a while
                on_progress(Progress("pull", str(ref), layer.digest, "layer", "extracting", layer.size, layer.size))
            stored = await trio.to_thread.run_sync(receiver.ingest, pulled)
            for layer in layers:
                on_progress(Progress("pull", str(ref), layer.digest, "layer", "complete", layer.size, layer.size))
            return pulled, stored

        result, image = await _with_progress(stream, pull_and_store)
    await trio.to_thread.run_sync(store.add_repo_digest, image["id"], repo_digest(ref, result.repo_digest))
    # Where each layer's blob is: a later push to this registry names it and mounts it.
    await trio.to_thread.run_sync(BlobRecords(Path(root) / RECORDS_FILE).add_sources, ref.registry, ref.repository,
                                  [result.config.digest, *(layer.digest for layer in result.layers)])
    if emit is not None:
        emit("image", "pull", ref.familiar(), {"name": ref.familiar(), "digest": result.repo_digest})
    return {"reference": ref.familiar(), "digest": result.repo_digest, "image": image,
            "fetched": len([d for d in result.fetched if d != result.config.digest]),
            "skipped": len(result.skipped), "bytes": result.bytes_fetched}


async def push(args: dict[str, Any], *, store: RegistryStore, root: Path, options: Options,
               stream: Stream | None = None, emit: Emit | None = None) -> dict[str, Any]:
    """{reference, compression?: gzip|zstd} -> {reference, digest, size, uploaded, existed,
    mounted, bytes}; streams ``{"progress": Progress}`` payloads while it runs."""
    import trio

    from supervisor.registry import transfer

    ref = parse_reference(_string(args, "reference"))
    compression = args.get("compression")
    if compression is not None and compression not in COMPRESSIONS:
        raise InvalidArgument(f"cannot push {ref.familiar()}: unknown compression format {compression!r} "
                              f"(it is {' or '.join(COMPRESSIONS)})")
    records = BlobRecords(Path(root) / RECORDS_FILE)
    source = await trio.to_thread.run_sync(store.push_layout, _string(args, "reference"), records, compression)
    try:
        result = await _with_progress(stream, lambda on_progress: transfer.push(
            source, ref, credentials=CredentialStore(credentials_path(root)), options=options,
            mount_from=lambda digest: records.sources(ref.registry, digest), on_progress=on_progress))
    finally:
        await trio.to_thread.run_sync(store.release, source)
    present = [*result.uploaded, *result.existed, *result.mounted]
    await trio.to_thread.run_sync(records.add_sources, ref.registry, ref.repository, present)
    await trio.to_thread.run_sync(store.add_repo_digest, _string(args, "reference"), repo_digest(ref, result.digest))
    if emit is not None:
        emit("image", "push", ref.familiar(), {"name": ref.familiar(), "digest": result.digest})
    return {"reference": ref.familiar(), "digest": result.digest, "size": result.size,
            "uploaded": len(result.uploaded), "existed": len(result.existed), "mounted": len(result.mounted),
            "bytes": result.bytes_uploaded}


class _Forwarder:
    """Progress callbacks are synchronous; the request's stream is async. :meth:`send`
    keeps the latest event per blob and wakes :meth:`run`, a task beside the transfer that
    sends them: nothing blocks the transfer, and a slow client sees the newest state
    rather than a backlog."""

    def __init__(self, stream: Stream | None):
        import trio

        self.stream = stream
        self.pending: dict[str, Progress] = {}
        self.wake = trio.Event()
        self.closed = False

    def send(self, progress: Progress) -> None:
        if self.stream is not None:
            self.pending[f"{progress.kind}:{progress.digest}"] = progress
            self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def run(self) -> None:
        import trio

        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            while self.pending and self.stream is not None:
                batch = list(self.pending.values())
                self.pending.clear()
                for progress in batch:
                    await self.stream({"progress": progress.to_json()})
            if self.closed:
                return


async def _with_progress(stream: Stream | None, transfer: Callable[[Callable[[Progress], None]], Awaitable[Any]]) -> Any:
    """Run ``transfer(on_progress)`` with its progress forwarded to ``stream``."""
    import trio

    from supervisor.registry.transfer import single_error

    forward = _Forwarder(stream)
    with single_error():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward.run)
            try:
                return await transfer(forward.send)
            finally:
                forward.close()

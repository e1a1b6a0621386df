"""Pull, push and login: the operations, built on :class:`~supervisor.registry.client.RegistryClient`.

Pull::

    GET manifest REF ──▶ an index? ──▶ choose this platform ──▶ GET manifest @digest
          │                                                          │
          └──────────────────────────────┬───────────────────────────┘
                                         ▼
         config (always: its diff ids give each layer's chain id), then each layer:
         has_layer(chain id) or has_blob(digest)? skip : download (max_concurrent at
         once, streamed to a temporary file, digest and size verified, renamed into place)
                                         ▼
         write manifest blob, then index.json (the commit point) ──▶ PullResult

The result is an OCI image layout in ``dest`` that the image store ingests; blobs the
store reported having are not in it. On any failure the temporary files are removed and
index.json is not written, so ``dest`` holds no image (only already-verified blobs).

Push reads an OCI layout (:class:`~supervisor.registry.layout.LayoutImage`): for each blob,
HEAD, then a cross-repository mount if a source is known, else an upload; then the
manifest (the children of an index first, then the index).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from supervisor.registry import layout
from supervisor.registry.auth import CredentialStore, Credentials, repository_scope
from supervisor.registry.client import RegistryClient
from supervisor.registry.errors import NotFoundError, ProtocolError, RegistryError, VerificationError
from supervisor.registry.manifest import (
    DOCKER_CONFIG,
    OCI_CONFIG,
    Descriptor,
    Index,
    Manifest,
    Platform,
    digest_of,
    host_platform,
    select_platform,
)
from supervisor.registry.manifest import parse as parse_manifest
from supervisor.registry.options import Options
from supervisor.registry.progress import Meter, Progress, ProgressCallback, ignore
from supervisor.registry.reference import Reference, check_digest, normalise_registry
from supervisor.registry.reference import parse as parse_reference


def _credentials(store: CredentialStore | Credentials | None, registry: str) -> Credentials | None:
    if isinstance(store, CredentialStore):
        return store.get(registry)
    return store


@contextmanager
def single_error() -> Iterator[None]:
    """Re-raise the one exception of a nursery's exception group as itself, so callers
    see a RegistryError (or an OSError), not a group."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(group: BaseExceptionGroup) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


async def _gather(jobs: list[Callable[[], object]], limit: int) -> None:
    """Run the async ``jobs`` at most ``limit`` at a time; the first failure cancels the
    rest and is raised as itself (not inside an exception group)."""
    failures: list[BaseException] = []
    limiter = trio.CapacityLimiter(limit)

    with single_error():
        async with trio.open_nursery() as nursery:
            async def run(job: Callable[[], object]) -> None:
                async with limiter:
                    try:
                        await job()
                    except RegistryError as exc:
                        failures.append(exc)
                        nursery.cancel_scope.cancel()

            for job in jobs:
                nursery.start_soon(run, job)
    if failures:
        raise failures[0]


@dataclass(frozen=True)
class PullResult:
    """What a pull leaves in ``layout`` for the store to ingest.

    Attributes:
        reference: the normalised reference pulled.
        layout: the OCI layout directory (index.json names the manifest).
        repo_digest: the digest the reference resolved to on the registry (the index's,
            for a multi-platform image): ``name@repo_digest`` pulls the same image again.
        manifest: the descriptor of the image manifest of this platform.
        config: the config descriptor; layers: the layer descriptors, in order.
        diff_ids, chain_ids: of each layer (from the config), for the store's layer lookup.
        fetched: digests downloaded into the layout; skipped: digests the store had.
        bytes_fetched: bytes of blobs downloaded (manifests not counted).
    """

    reference: Reference
    layout: Path
    repo_digest: str
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    diff_ids: tuple[str, ...]
    chain_ids: tuple[str, ...]
    fetched: tuple[str, ...]
    skipped: tuple[str, ...]
    bytes_fetched: int

    def blob_path(self, digest: str) -> Path:
        return layout.blob_path(self.layout, digest)


async def pull(reference: str | Reference, dest: Path, *, has_layer: Callable[[str], bool] = lambda chain_id: False,
               has_blob: Callable[[str], bool] = lambda digest: False,
               platform: Platform | None = None, credentials: CredentialStore | Credentials | None = None,
               options: Options | None = None, on_progress: ProgressCallback = ignore) -> PullResult:
    """Pull ``reference`` into the OCI layout ``dest`` (created if missing).

    Args:
        has_layer: tells whether the store holds a layer, by chain id (computed from the
            config's diff ids); such layers are never fetched.
        has_blob: tells whether the store holds a blob by its digest (a store that keeps
            layers as the registry sends them); such layers are never fetched either.
            The config is always fetched: it is small, and it names the layers.
        platform: the entry to choose from a multi-platform index (default: this machine).
        credentials: the credentials file, or credentials to use as they are.

    Raises:
        RegistryError: each failure names the registry and the object.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    options = options or Options()
    platform = platform or host_platform()
    dest = Path(dest)
    layout.init_layout(dest)
    scopes = (repository_scope(ref.repository, ("pull",)),)
    creds = _credentials(credentials, ref.registry)
    fetched: list[str] = []
    skipped: list[str] = []
    try:
        async with RegistryClient(ref.registry, ref.api_host, scopes=scopes, credentials=creds, options=options) as client:
            what = f"{ref.repository}@{ref.target}" if ref.digest else f"{ref.repository}:{ref.target}"
            data, media_type, repo_digest = await client.get_manifest(ref.repository, ref.target)
            document = parse_manifest(data, media_type, f"registry {ref.registry}: manifest {what}")
            descriptor = Descriptor(document.media_type, repo_digest, len(data))
            if isinstance(document, Index):
                chosen = _select(document, platform, ref, what)
                data, media_type, digest = await client.get_manifest(ref.repository, chosen.digest, expect=chosen)
                object = f"registry {ref.registry}: manifest {ref.repository}@{digest}"
                document = parse_manifest(data, chosen.media_type, object)
                if not isinstance(document, Manifest):
                    raise ProtocolError(f"{object}: an index entry for {platform} is itself an index",
                                        registry=ref.registry, object=digest)
                descriptor = Descriptor(document.media_type, digest, len(data), chosen.platform)
            on_progress(Progress("pull", str(ref), descriptor.digest, "manifest", "done", len(data), len(data)))

            async def fetch(blob: Descriptor, kind: str) -> None:
                meter = Meter(on_progress, Progress("pull", str(ref), blob.digest, kind, "downloading", 0, blob.size))
                await client.fetch_blob(ref.repository, blob, dest, meter)
                fetched.append(blob.digest)
                meter.emit("done")

            # The config first: its diff ids name the layers as the store knows them.
            await fetch(document.config, "config")
            diff_ids = _diff_ids(dest, document, ref)
            chains = chain_ids(diff_ids)
            todo: dict[str, Descriptor] = {}
            for blob, chain in zip(document.layers, chains):
                if blob.digest in todo or blob.digest in skipped:
                    continue
                if has_layer(chain) or has_blob(blob.digest):
                    skipped.append(blob.digest)
                    on_progress(Progress("pull", str(ref), blob.digest, "layer", "exists", blob.size, blob.size))
                else:
                    todo[blob.digest] = blob
                    on_progress(Progress("pull", str(ref), blob.digest, "layer", "waiting", 0, blob.size))
            await _gather([lambda b=b: fetch(b, "layer") for b in todo.values()], options.max_concurrent)
            layout.write_blob_bytes(dest, descriptor.digest, data)
    except BaseException:
        layout.remove_partials(dest)
        raise
    annotations = {layout.IMAGE_NAME: str(ref), "dev.dockyard.repo.digest": repo_digest}
    if ref.tag:
        annotations[layout.REF_NAME] = ref.tag
    layout.write_index(dest, [Descriptor(descriptor.media_type, descriptor.digest, descriptor.size,
                                         descriptor.platform, annotations)])
    sizes = {blob.digest: blob.size for blob in document.blobs}
    return PullResult(ref, dest, repo_digest, descriptor, document.config, document.layers, tuple(diff_ids),
                      tuple(chains), tuple(fetched), tuple(skipped), sum(sizes[d] for d in fetched))


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids: ChainID(L0) = DiffID(L0); ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln))."""
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append(digest_of(f"{chains[-1]} {diff_id}".encode()) if chains else diff_id)
    return chains


def _diff_ids(root: Path, manifest: Manifest, ref: Reference) -> list[str]:
    """The config's ``rootfs.diff_ids``, one per layer of the manifest."""
    object = f"config {manifest.config.digest} of {ref.repository}"
    if manifest.config.media_type not in (OCI_CONFIG, DOCKER_CONFIG):
        raise ProtocolError(f"registry {ref.registry}: {ref.repository}:{ref.target} is not a container image "
                            f"(its config is {manifest.config.media_type})", registry=ref.registry, object=object)
    try:
        document = json.loads(layout.blob_path(root, manifest.config.digest).read_bytes())
        diff_ids = document["rootfs"]["diff_ids"]
        for diff_id in diff_ids:
            check_digest(diff_id)
    except (ValueError, KeyError, TypeError, RegistryError) as exc:
        raise ProtocolError(f"registry {ref.registry}: {object} is not a valid image config ({exc})",
                            registry=ref.registry, object=object) from None
    if len(diff_ids) != len(manifest.layers):
        raise ProtocolError(f"registry {ref.registry}: {object} names {len(diff_ids)} layers, the manifest "
                            f"{len(manifest.layers)}", registry=ref.registry, object=object)
    return list(diff_ids)


def _select(index: Index, platform: Platform, ref: Reference, what: str) -> Descriptor:
    try:
        return select_platform(index, platform, f"registry {ref.registry}: index {what}")
    except ProtocolError as exc:
        raise ProtocolError(exc.message, registry=ref.registry, object=what) from None


@dataclass(frozen=True)
class PushResult:
    reference: Reference
    digest: str
    size: int
    uploaded: tuple[str, ...] = ()
    existed: tuple[str, ...] = ()
    mounted: tuple[str, ...] = ()
    bytes_uploaded: int = 0
    manifests: tuple[str, ...] = field(default=())


async def push(source: layout.LayoutImage | layout.StreamedImage, reference: str | Reference, *,
               credentials: CredentialStore | Credentials | None = None, options: Options | None = None,
               mount_from: Callable[[str], Iterable[str]] = lambda digest: (),
               on_progress: ProgressCallback = ignore) -> PushResult:
    """Push the image ``source`` (an entry of an OCI layout, a manifest or an index) as
    ``reference`` (its tag; a digest-only reference pushes the manifest by digest).
    A :class:`~supervisor.registry.layout.StreamedImage` first has its pending layers
    compressed while they are uploaded (``max_concurrent`` at once), then is built and
    pushed as a layout whose streamed layers count as uploaded.

    Args:
        mount_from: for a blob digest, repositories on the same registry that may hold it
            (where the store pulled it from); a mount is tried from each before uploading.

    Raises:
        RegistryError: each failure names the registry and the object.
    """
    ref = parse_reference(reference) if isinstance(reference, str) else reference
    options = options or Options()
    creds = _credentials(credentials, ref.registry)
    sources: set[str] = set()
    if isinstance(source, layout.StreamedImage):
        digests = list(source.known)
    else:
        blobs, manifests = _collect(source, source.descriptor, ref)
        digests = [blob.digest for blob, _kind in blobs]
    for digest in digests:
        sources.update(repo for repo in mount_from(digest) if repo != ref.repository)
    scopes = (repository_scope(ref.repository, ("pull", "push")),
              *(repository_scope(repo, ("pull",)) for repo in sorted(sources)))
    outcome: dict[str, list[str]] = {"uploaded": [], "exists": [], "mounted": []}
    streamed: dict[str, int] = {}  # digest -> size of each layer compressed while uploaded
    async with RegistryClient(ref.registry, ref.api_host, scopes=scopes, credentials=creds, options=options) as client:
        if isinstance(source, layout.StreamedImage):
            source = await _stream_layers(client, source, ref, options, streamed, on_progress)
            blobs, manifests = _collect(source, source.descriptor, ref)

        async def send(blob: Descriptor, kind: str) -> None:
            if blob.digest in streamed:
                outcome["uploaded"].append(blob.digest)
                return
            meter = Meter(on_progress, Progress("push", str(ref), blob.digest, kind, "uploading", 0, blob.size))
            candidates = tuple(repo for repo in mount_from(blob.digest) if repo != ref.repository)
            prepare = None
            if source.materialise is not None:
                def prepare(digest: str = blob.digest) -> object:
                    return trio.to_thread.run_sync(source.materialise, digest)
            opener = None
            if source.stream is not None:
                async def opener(digest: str = blob.digest) -> object:
                    try:
                        return await trio.to_thread.run_sync(source.stream, digest)
                    except OSError as exc:
                        raise NotFoundError(f"cannot push blob {digest} to {ref.registry}: {exc}",
                                            registry=ref.registry, object=digest) from None
            result = await client.push_blob(ref.repository, blob, source.blob_path(blob.digest), meter, candidates,
                                            prepare, opener)
            outcome[result].append(blob.digest)
            if result == "uploaded":
                meter.current = blob.size
                meter.emit("done")
            else:
                on_progress(Progress("push", str(ref), blob.digest, kind, result, blob.size, blob.size))

        await _gather([lambda b=b, k=k: send(b, k) for b, k in blobs], options.max_concurrent)
        pushed = []
        for position, (descriptor, data) in enumerate(manifests):
            last = position == len(manifests) - 1
            target = (ref.tag or descriptor.digest) if last else descriptor.digest
            digest = await client.put_manifest(ref.repository, target, data, descriptor.media_type)
            pushed.append(digest)
            on_progress(Progress("push", str(ref), digest, "manifest", "done", len(data), len(data)))
    root = manifests[-1][0]
    sizes = {blob.digest: blob.size for blob, _ in blobs}
    return PushResult(ref, root.digest, root.size, tuple(outcome["uploaded"]), tuple(outcome["exists"]),
                      tuple(outcome["mounted"]), sum(sizes[d] for d in outcome["uploaded"]), tuple(pushed))


async def _stream_layers(client: RegistryClient, source: layout.StreamedImage, ref: Reference, options: Options,
                         streamed: dict[str, int], on_progress: ProgressCallback) -> layout.LayoutImage:
    """Upload ``source``'s pending layers, each compressed as it is sent; returns the
    layout naming them (``streamed`` gets each one's digest and size)."""
    async def stream(name: str) -> None:
        # Keyed by the diff id (the compressed digest is known at the end); total unknown: 0.
        meter = Meter(on_progress, Progress("push", str(ref), name, "layer", "uploading", 0, 0))
        try:
            opened = await trio.to_thread.run_sync(source.open, name)
        except OSError as exc:
            raise NotFoundError(f"cannot push layer {name} to {ref.registry}: {exc}", registry=ref.registry,
                                object=name) from None
        digest, size = await client.upload_stream(ref.repository, name, opened, meter)
        streamed[digest] = size
        on_progress(Progress("push", str(ref), name, "layer", "done", size, size))

    await _gather([lambda n=n: stream(n) for n in source.pending], options.max_concurrent)
    return await trio.to_thread.run_sync(source.build)


def _collect(source: layout.LayoutImage, root: Descriptor, ref: Reference
             ) -> tuple[list[tuple[Descriptor, str]], list[tuple[Descriptor, bytes]]]:
    """The blobs (deduplicated) and the manifests (children before their index) to push,
    each manifest read from the layout and checked against its descriptor."""
    blobs: dict[str, tuple[Descriptor, str]] = {}
    manifests: list[tuple[Descriptor, bytes]] = []

    def visit(descriptor: Descriptor, depth: int) -> None:
        object = f"manifest {descriptor.digest} in OCI layout {source.root}"
        path = source.blob_path(descriptor.digest)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise NotFoundError(f"cannot push {ref}: {object} cannot be read: {exc}", object=descriptor.digest) from None
        if digest_of(data, descriptor.digest.partition(":")[0]) != descriptor.digest or len(data) != descriptor.size:
            raise VerificationError(f"cannot push {ref}: {object} does not match its digest or size", object=descriptor.digest)
        document = parse_manifest(data, descriptor.media_type, object)
        if isinstance(document, Index):
            if depth > 0:
                raise ProtocolError(f"cannot push {ref}: {object} is an index inside an index", object=descriptor.digest)
            for child in document.manifests:
                visit(child, depth + 1)
        else:
            for kind, blob in [("config", document.config), *(("layer", layer) for layer in document.layers)]:
                blobs.setdefault(blob.digest, (blob, kind))
        manifests.append((Descriptor(document.media_type, descriptor.digest, descriptor.size), data))

    visit(root, 0)
    return list(blobs.values()), manifests


async def login(registry: str, credentials: Credentials, store: CredentialStore, *,
                options: Options | None = None) -> bool:
    """Check ``credentials`` against ``registry`` and save them in ``store`` (mode 0600).
    Returns False when the registry asks for no authentication (they are saved anyway, as
    docker does).

    Raises:
        AuthError: the registry refused them (nothing is saved).
    """
    registry = normalise_registry(registry)
    api_host = Reference(registry, "x").api_host
    async with RegistryClient(registry, api_host, credentials=credentials, options=options) as client:
        needed = await client.check_login()
    store.save(registry, credentials)
    return needed


def logout(registry: str, store: CredentialStore) -> bool:
    """Forget the credentials for ``registry``; False when there were none."""
    return store.remove(normalise_registry(registry))

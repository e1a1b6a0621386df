"""Images and containers' files: import, commit, diff, export, cp, tag, rmi, save, load.

The image store (:mod:`supervisor.images`) does the work, in a thread; this service finds
the container, publishes the ``image.*`` and ``container.<id>.commit|export`` events, and
reports what a walk of a running container's live files skipped or caught half-way.
"""

from __future__ import annotations

import functools
import json
import os
import posixpath
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import trio

from logs.atomic import atomic_file
from supervisor import filters as image_filters
from supervisor.container import Container
from supervisor.errors import InvalidArgument
from supervisor.images import archive as image_archive
from supervisor.images import containerfs
from supervisor.images.changes import WalkWarnings, container_diff
from supervisor.images.oci import container_config, parse_changes
from supervisor.images.store import Image, ImageStore
from supervisor.lifecycle.core import Lifecycle
from supervisor.spec import ContainerSpec, merge_env
from supervisor.userns import IdMapping


class Images:
    def __init__(self, core: Lifecycle, store: ImageStore):
        self.core = core
        self.store = store
        self.events = core.events

    def list(self, filters: list[str] | None = None, all: bool = False) -> list[tuple[Image, list[str]]]:
        """The images, newest first, with the tags to show, that pass ``filters`` (``images
        --filter KEY=VALUE``: supervisor/filters.py; ``reference=`` keeps the tags that match).
        Without ``all``, as docker: not the untagged intermediate images of a build (each one
        a step's image that a later step's image extends: :func:`intermediates`).

        Raises:
            InvalidArgument: an unknown filter key or a bad value. NotFound: a before=/since= image.
        """
        images = self.store.list()
        if not all:
            hidden = intermediates(images)
            images = [image for image in images if image.id not in hidden]
        if not filters:
            return [(image, list(image.repo_tags)) for image in images]
        query = image_filters.image_query(filters, lambda ref: self.store.resolve(ref).created)
        listed = [(image, query.tags(image)) for image in images]
        return [(image, tags) for image, tags in listed if tags is not None]

    async def import_image(self, source: BinaryIO, reference: str, changes: list[str] | None = None,
                           message: str = "") -> Image:
        config = parse_changes(changes, operation="import") if changes else None
        image = await trio.to_thread.run_sync(
            functools.partial(self.store.import_tar, source, reference, changes=config, message=message)
        )
        self.events.emit("image", "import", image.id, {"name": reference})
        return image

    async def commit(self, ref: str, reference: str | None = None, *, comment: str = "", author: str = "",
                     changes: list[str] | tuple[str, ...] = (), warnings: list[str] | None = None) -> Image:
        """A new image from a container's changes (``docker commit``); running is fine
        (it is not paused: a file being written at that moment may be caught half-way, one
        that vanishes is skipped; both are logged and added to ``warnings``)."""
        container = self.core.get(ref)
        base = self.store.resolve(container.image_id)
        config = commit_config(container.spec, base.config)
        if changes:
            config = container_config(parse_changes(list(changes), config.get("Env")), base=config, operation="commit")
        walked = WalkWarnings()
        image = await trio.to_thread.run_sync(functools.partial(
            self.store.commit_container, str(container.upper), base.id, reference=reference, config=config,
            created_by=shlex.join(container.resolved.argv), comment=comment, author=author, warnings=walked,
            owners=from_host(container),
        ))
        self._walk_warnings("commit", container, walked, warnings)
        self.events.container(container, "commit", image=image.id, **({"reference": reference} if reference else {}))
        return image

    async def diff(self, ref: str, warnings: list[str] | None = None) -> list[tuple[str, str]]:
        """``docker diff``: (kind, path) with kind A, C or D, sorted by path."""
        container = self.core.get(ref)
        walked = WalkWarnings()
        changes = await trio.to_thread.run_sync(container_diff, str(container.upper), list(container.layers), walked)
        self._walk_warnings("diff", container, walked, warnings)
        return changes

    async def export(self, ref: str, output: Path, warnings: list[str] | None = None) -> None:
        """Write the container's filesystem as a tar to ``output`` (replaced atomically)."""
        container = self.core.get(ref)
        walked = WalkWarnings()
        await trio.to_thread.run_sync(write_file, output, functools.partial(
            containerfs.export, str(container.upper), container.layers, warnings=walked, owners=from_host(container)))
        self._walk_warnings("export", container, walked, warnings)
        self.events.container(container, "export")

    async def copy_from(self, ref: str, source: str, output: Path, warnings: list[str] | None = None) -> str:
        """A tar of ``source`` in the container, written to ``output``; returns the name
        of its top member."""
        container = self.core.get(ref)
        names: list[str] = []
        walked = WalkWarnings()
        upper, layers, inner, top = str(container.upper), list(container.layers), source, ""
        mounted = mount_holding(container, source)
        if mounted is not None:  # a volume's or a bind's files: read there, never the image's below
            upper, layers, inner, top = mounted[0], [], mounted[1], posixpath.basename(mounted[2])

        def write(stream: BinaryIO) -> None:
            names.append(containerfs.copy_out(container.name, upper, layers, inner, stream, walked, top,
                                              owners=from_host(container)))

        await trio.to_thread.run_sync(write_file, output, write)
        self._walk_warnings("copy from", container, walked, warnings)
        return names[0]

    async def copy_to(self, ref: str, source: Path, dest: str, warnings: list[str] | None = None) -> str:
        """Copy the host path ``source`` to ``dest`` in the container."""
        container = self.core.get(ref)
        walked = WalkWarnings()
        upper, layers, inner = str(container.upper), list(container.layers), dest
        mounted = mount_holding(container, dest)
        async with container.lock:
            pid = container.pid if container.status.running else 0
            if mounted is not None:  # into the volume's or bind's own directory, running or not
                upper, layers, inner, pid = mounted[0], [], mounted[1], 0
            written = await trio.to_thread.run_sync(functools.partial(
                containerfs.copy_in, container.name, upper, layers, pid, source, inner,
                container.directory, walked, to_host(container),
            ))
        if mounted is not None:
            written = posixpath.join(mounted[2], written.lstrip("/"))
        self._walk_warnings("copy to", container, walked, warnings)
        return written

    def _walk_warnings(self, operation: str, container: Container, walked: WalkWarnings,
                       warnings: list[str] | None) -> None:
        """Log what a walk of live files skipped or took half-way, and hand it to the caller."""
        if not walked.count:
            return
        self.core.log.warning("files changed while they were read", operation=operation, container=container.id,
                              count=walked.count, first=walked.notes)
        if warnings is not None:
            warnings.extend(walked.messages())

    def users(self, image_id: str) -> list[tuple[str, bool]]:
        """(name, running) of every container made from the image."""
        return [(c.name, c.status.running) for c in self.core.containers.values() if c.image_id == image_id]

    async def remove(self, ref: str, force: bool = False, *, prune: bool = True) -> list[dict[str, str]]:
        image_id = self.store.resolve(ref).id
        report = await trio.to_thread.run_sync(
            functools.partial(self.store.remove, ref, force=force, users=self.users, prune=prune)
        )
        for line in report:  # docker's actions: untag (per tag), then delete
            if "Untagged" in line:
                self.events.emit("image", "untag", image_id, {"name": line["Untagged"]})
            else:  # the image, then each untagged parent it left with no child
                self.events.emit("image", "delete", line["Deleted"].removeprefix("sha256:"), {"name": ref})
        return report

    async def tag(self, ref: str, reference: str) -> Image:
        image = await trio.to_thread.run_sync(self.store.tag, ref, reference)
        self.events.emit("image", "tag", image.id, {"name": reference})
        return image

    async def save(self, refs: list[str], output: Path) -> list[str]:
        saved = await trio.to_thread.run_sync(image_archive.save, self.store, refs, output)
        for name in saved:
            self.events.emit("image", "save", "", {"name": name})
        return saved

    async def load(self, source: Path) -> list[image_archive.LoadedImage]:
        """The images of an archive, each with the tags the archive named."""
        loaded = await trio.to_thread.run_sync(image_archive.load, self.store, source)
        for each in loaded:
            self.events.emit("image", "load", each.image.id, {"name": ",".join(each.tags)})
        return loaded


def mount_holding(container: Container, path: str) -> tuple[str, str, str] | None:
    """The host directory of the volume or bind (a directory) that holds the container path
    ``path``, ``path`` inside it and the mount's target: (source, inner path, target); None
    when the path is in the container's own files. The path is matched as written (a symlink
    of the image that leads into a mount is not followed to find it); inside the mount, links
    resolve inside the mount's directory, never above it (docs/volumes.md)."""
    clean = "/" + posixpath.normpath("/" + path).lstrip("/")  # normpath keeps a leading "//"
    best = None
    for mount in container.mounts:
        target = mount["target"]
        if mount["type"] == "tmpfs" or not (clean == target or clean.startswith(target.rstrip("/") + "/")):
            continue
        if best is None or len(target) > len(best["target"]):
            best = mount
    if best is None or not os.path.isdir(best["source"]):
        return None
    inner = "/" + clean[len(best["target"]):].lstrip("/")
    if path.endswith("/.") and not inner.endswith("/."):
        inner = inner.rstrip("/") + "/."
    elif path.endswith("/") and inner != "/":
        inner += "/"
    return best["source"], inner, best["target"]


def commit_config(spec: ContainerSpec, image_config: dict[str, Any]) -> dict[str, Any]:
    """The config a commit gives its image: the image's, with what the container's spec
    set (command, entrypoint, env, workdir, user, labels), as ``docker commit``."""
    config = dict(image_config)
    if spec.entrypoint is not None:
        config["Entrypoint"] = list(spec.entrypoint) or None
        config["Cmd"] = list(spec.cmd) or None
    elif spec.cmd:
        config["Cmd"] = list(spec.cmd)
    if spec.env:
        config["Env"] = merge_env(config.get("Env") or [], spec.env)
    if spec.workdir:
        config["WorkingDir"] = spec.workdir
    if spec.user:
        config["User"] = spec.user
    if spec.labels:  # docker commit keeps the container's labels in the image
        config["Labels"] = {**(config.get("Labels") or {}), **spec.label_map}
    return config


def write_file(output: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Call ``write`` with a file that replaces ``output`` once complete (never half-written)."""
    try:
        with atomic_file(output, durable=False, mode=0o644) as stream:
            write(stream)
    except OSError as exc:
        if exc.filename != str(output):  # the source, not the output
            raise
        raise InvalidArgument(f"cannot write {output}: {exc.strerror}", path=str(output)) from None


def from_host(container: Container) -> Any:
    """A remapped container's host ids to its own (``IdMapping.from_host``), or None."""
    return IdMapping.from_map(container.id_mapping).from_host if container.id_mapping else None


def to_host(container: Container) -> Any:
    """A remapped container's ids to the host's (``IdMapping.to_host``), or None."""
    return IdMapping.from_map(container.id_mapping).to_host if container.id_mapping else None


def intermediates(images: list[Image]) -> set[str]:
    """The ids of the intermediate images among ``images``: untagged ones (no tag, no repo
    digest) whose history another image's history extends, as a build's step images are
    extended by the next step's (docker hides them from ``images`` unless ``-a``: they have
    a child). An untagged image nothing extends is dangling and stays listed."""
    def entries(image: Image) -> tuple[str, ...]:
        return tuple(json.dumps(entry, sort_keys=True) for entry in image.document.get("history") or [])

    extended: set[tuple[str, ...]] = set()
    for image in images:
        history = entries(image)
        extended.update(history[:length] for length in range(1, len(history)))
    return {image.id for image in images
            if not image.repo_tags and not image.repo_digests and entries(image) in extended}

"""A container's changes: the ``docker diff`` lines of its upper dir over its image's layers.

Theory of operation
-------------------
A container's root filesystem is an overlay: read-only layer directories (lower dirs, top
first) under the container's upper dir. Everything the container changed is in the upper
dir, in overlayfs' own notation (:mod:`~supervisor.images.whiteouts`), so a ``diff`` (and a
``commit``, :func:`~supervisor.images.tarwrite.write_layer`) is one walk of the upper dir:
its cost follows the size of the change, never of the image.

The pure part, :func:`compute_diff`, works on plain records and callables (no
filesystem), so it is tested without root; :func:`walk_upper` and the merged view
(:class:`~supervisor.images.layerview.LayerView`) are the thin filesystem shell around it.
The pieces around this module each have their own: overlay and tar notation in
:mod:`~supervisor.images.whiteouts`, the fd-relative walks of a live container's files in
:mod:`~supervisor.images.fdwalk` (its theory of operation says why every walk is immune to
a racing container), the merged view in :mod:`~supervisor.images.layerview`, the tar
writers in :mod:`~supervisor.images.tarwrite`; their names are re-exported here, where
they lived before.

Diff lines follow ``docker diff``: ``A`` added, ``C`` changed, ``D`` deleted, sorted by
path. A directory is ``C`` when anything below it changed (every ancestor, not only the
parent) or its own mode, owner or mtime changed. A directory deleted and made again
(overlay marks it opaque) is ``C``, and each entry of the layers below that is no longer
there is ``D``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

# Re-exported: these lived here before the split (see the module docstring).
from supervisor.images.fdwalk import Entry, WalkWarnings, entry_xattrs, join, open_listing, walk_tree  # noqa: F401
from supervisor.images.layerview import LayerView, Meta, is_opaque
from supervisor.images.tarwrite import write_layer, write_tree  # noqa: F401
from supervisor.images.whiteouts import (  # noqa: F401
    UNSUPPORTED_OVERLAY_XATTRS,
    is_whiteout,
    opaque_marker,
    whiteout_name,
)


@dataclass(frozen=True)
class UpperEntry:
    """One entry of the upper dir, for :func:`compute_diff`.

    Attributes:
        path: absolute in the container ("/etc/hosts").
        meta: its metadata; None for a whiteout.
        opaque: a directory marked opaque (deleted and made again).
    """

    path: str
    meta: Meta | None
    opaque: bool = False


def compute_diff(
    upper: Iterable[UpperEntry],
    lower: Callable[[str], Meta | None],
    lower_children: Callable[[str], Iterable[str]],
) -> list[tuple[str, str]]:
    """``docker diff`` lines as ``(kind, path)``, sorted by path.

    Args:
        upper: the upper dir's entries, each directory before its contents.
        lower: the metadata of a path in the merged view of the layers below, or None.
        lower_children: the names in a directory of that merged view.
    """
    changes: dict[str, str] = {}
    hidden: set[str] = set()  # upper dirs whose contents do not merge with the layers below
    replaced: set[str] = set()  # entries below an opaque dir: deleted, unless made again

    def below(path: str) -> Meta | None:
        parent = _parent(path)
        while parent != "/":
            if parent in hidden:
                return None
            parent = _parent(parent)
        return lower(path)

    def touch_ancestors(path: str) -> None:
        parent = _parent(path)
        while parent != "/" and parent not in changes:
            changes[parent] = "C"
            parent = _parent(parent)

    for entry in upper:
        old = below(entry.path)
        if entry.path in replaced and entry.meta is not None:  # made again in an opaque dir: it was there before
            changes[entry.path] = "C"
            if entry.meta.kind == "dir":
                hidden.add(entry.path)
            continue
        if entry.meta is None:  # a whiteout
            if old is not None:
                changes[entry.path] = "D"
                touch_ancestors(entry.path)
            continue
        if entry.meta.kind == "dir":
            if old is None or old.kind != "dir":
                hidden.add(entry.path)
                changes[entry.path] = "A" if old is None else "C"
                touch_ancestors(entry.path)
            elif entry.opaque:
                hidden.add(entry.path)
                changes[entry.path] = "C"
                touch_ancestors(entry.path)
                for name in lower_children(entry.path):
                    child = join(entry.path, name)
                    replaced.add(child)
                    changes.setdefault(child, "D")
            elif old != entry.meta:
                changes[entry.path] = "C"
                touch_ancestors(entry.path)
            continue
        changes[entry.path] = "A" if old is None else "C"
        touch_ancestors(entry.path)
    return sorted(((kind, path) for path, kind in changes.items()), key=lambda change: change[1])


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def walk_upper(upper: str, warnings: WalkWarnings | None = None) -> Iterator[UpperEntry]:
    """The upper dir's entries for :func:`compute_diff` (directories first, sorted)."""
    for entry in walk_tree(upper, warnings if warnings is not None else WalkWarnings()):
        if is_whiteout(entry.info):
            yield UpperEntry(entry.path, None)
        elif stat.S_ISDIR(entry.info.st_mode):
            listing = open_listing(entry.fd)
            try:
                yield UpperEntry(entry.path, Meta.of(entry.info), is_opaque(listing))
            finally:
                os.close(listing)
        else:
            yield UpperEntry(entry.path, Meta.of(entry.info))


def container_diff(upper: str, lower_layers: Iterable[str],
                   warnings: WalkWarnings | None = None) -> list[tuple[str, str]]:
    """``docker diff`` of a container from its upper dir and its image's layers (top first)."""
    view = LayerView(lower_layers)
    return compute_diff(walk_upper(upper, warnings), view.lookup, view.children)

"""Image references: ``name[:tag]`` with docker's grammar, and finding an image in the
store's index by reference, full id, ``sha256:<id>`` or unique id prefix.

Apart from :mod:`~supervisor.images.store` because it is pure (no files, no lock): what a
reference means and which image it names are decided on plain data (the index as
``{"images": {id: ...}, "tags": {"name:tag": id}}``), so the grammar and the precedence
rules (as in docker, a tag wins over an id prefix; a prefix needs :data:`MIN_ID_PREFIX`
characters and must be unique) are tested without a store.
"""

from __future__ import annotations

import re
from typing import Any

from supervisor.errors import Conflict, InvalidArgument, NotFound

MIN_ID_PREFIX = 3
DEFAULT_TAG = "latest"

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME = re.compile(rf"^(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*\Z")
TAG = re.compile(r"^[\w][\w.-]{0,127}\Z", re.ASCII)
NAME_MAX = 255
FULL_ID = re.compile(r"^[0-9a-f]{64}\Z")
ID_PREFIX = re.compile(r"^[0-9a-f]{1,64}\Z")


def parse_reference(reference: str) -> str:
    """``name[:tag]`` to ``"name:tag"`` (tag ``latest`` by default), or InvalidArgument."""
    if not isinstance(reference, str) or not reference:
        raise InvalidArgument(f"invalid reference format: {reference!r}")
    if "@" in reference:
        raise InvalidArgument(f"invalid reference format: {reference!r}: a tag cannot carry a digest")
    name, tag = reference, DEFAULT_TAG
    colon = reference.rfind(":")
    if colon > reference.rfind("/"):
        name, tag = reference[:colon], reference[colon + 1 :]
        if not TAG.match(tag):
            raise InvalidArgument(f"invalid reference format: {reference!r}: bad tag {tag!r}")
    if not NAME.match(name):
        if NAME.match(name.lower()):
            raise InvalidArgument(f"invalid reference format: repository name {name!r} must be lowercase")
        raise InvalidArgument(f"invalid reference format: {reference!r}")
    if len(name) > NAME_MAX:
        raise InvalidArgument(f"invalid reference format: repository name is longer than {NAME_MAX} characters")
    if FULL_ID.match(name):
        raise InvalidArgument(
            f"invalid reference format: repository name {name!r} cannot be a 64-character hexadecimal string"
        )
    return f"{name}:{tag}"




DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


def parse_digest_reference(reference: str) -> str:
    """``name[:tag]@sha256:<hex>`` to ``"name@sha256:<hex>"`` (the tag beside a digest is
    ignored, as docker does: the digest names the image), or InvalidArgument."""
    name, at, digest = reference.partition("@")
    if not at or not DIGEST.match(digest):
        raise InvalidArgument(f"invalid reference format: {reference!r}: want NAME@sha256:<64 hex digits>")
    repository = parse_reference(name).rpartition(":")[0]
    return f"{repository}@{digest}"


def find_image(index: dict[str, Any], ref: str) -> tuple[str, str | None]:
    """The image id for ``ref`` in ``index`` and the tag it was found by (None for an id
    or a digest). ``name@sha256:<hex>`` is found among the images' repo digests
    (``index["digests"]``, recorded at pull and push).

    Raises:
        NotFound: no image matches (``no such image: <ref>``).
        Conflict: an id prefix matches several images.
        InvalidArgument: ``ref`` is neither a reference nor an id.
    """
    if not isinstance(ref, str) or not ref:
        raise InvalidArgument(f"invalid reference format: {ref!r}")
    if "@" in ref:
        digest_ref = parse_digest_reference(ref)
        image_id = index.get("digests", {}).get(digest_ref)
        if image_id is None:
            raise NotFound(f"no such image: {ref}: no image of {digest_ref.partition('@')[0]} has the digest "
                           f"{digest_ref.partition('@')[2]} (pull it by digest first)", image=ref)
        return image_id, None
    if ref.startswith("sha256:"):
        prefix = ref[len("sha256:") :]
        if not ID_PREFIX.match(prefix):
            raise InvalidArgument(f"invalid reference format: {ref!r}")
        return _by_prefix(index, prefix, ref), None
    try:
        tag: str | None = parse_reference(ref)
    except InvalidArgument:
        tag = None
    if tag is not None and tag in index["tags"]:
        return index["tags"][tag], tag
    if ID_PREFIX.match(ref):
        return _by_prefix(index, ref, ref), None
    if tag is None:
        raise InvalidArgument(f"invalid reference format: {ref!r}")
    raise NotFound(f"no such image: {ref}", image=ref)


def _by_prefix(index: dict[str, Any], prefix: str, ref: str) -> str:
    if len(prefix) < MIN_ID_PREFIX:
        raise NotFound(f"no such image: {ref}", image=ref)
    matches = [image_id for image_id in index["images"] if image_id.startswith(prefix)]
    if not matches:
        raise NotFound(f"no such image: {ref}", image=ref)
    if len(matches) > 1:
        raise Conflict(f"image id prefix {ref} is ambiguous: it matches {len(matches)} images", image=ref)
    return matches[0]

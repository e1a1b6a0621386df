"""The ``--filter KEY=VALUE`` of list operations, with docker's semantics: ``ps``
(``container.list``), ``images`` (``image.list``) and ``volume ls`` (``volume.list``).

Theory of operation
-------------------
A request carries its filters as ``KEY=VALUE`` strings, as the CLI got them. :class:`Filters`
parses them against the keys one kind of object takes (an unknown key is refused with an
error that names it and lists the known ones) into ``key -> [values]``. Matching then follows
docker's ``filters.Args``:

* several values of one key: any of them (``status=running --filter status=exited``);
* different keys: all of them;
* except ``label``: every ``label=`` value must hold (docker's ``MatchKVList``), as docker.

The matching here is pure: it takes plain values (a container's :meth:`filter subject
<supervisor.container.Container.filter_subject>`, an image, a volume's labels) and the
references the caller resolved against the daemon's state first (the creation time of a
``before=``/``since=`` container, the image ids an ``ancestor=`` names), so that the
daemon's handlers, the embedding API and the unit tests use the same code. (``events
--filter`` is evaluated by the publisher, bus/filters.py: a container's labels are
attributes of its events, so ``label=`` works there too.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from supervisor.errors import InvalidArgument

#: ``ps --filter`` keys (docker's, without is-task, publish and expose).
CONTAINER_KEYS = ("id", "name", "label", "status", "exited", "ancestor", "before", "since", "volume", "network",
                  "health")
#: ``images --filter`` keys.
IMAGE_KEYS = ("reference", "label", "dangling", "before", "since")
#: ``volume ls --filter`` keys (docker's, without driver=, which is always local).
VOLUME_KEYS = ("dangling", "name", "label")
#: What ``status=`` takes (docker's container states).
STATUSES = ("created", "restarting", "running", "removing", "paused", "exited", "dead")
#: What ``health=`` takes; ``none``: no health check.
HEALTH_STATUSES = ("starting", "healthy", "unhealthy", "none")
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


class Filters:
    """Parsed filters of one kind of object: ``key -> [values]``, in the order given.

    Args:
        what: the objects, for messages (``ps``, ``images``, ``volume ls``).
        values: key -> values.
    """

    def __init__(self, what: str, values: dict[str, list[str]] | None = None):
        self.what = what
        self.values = values or {}

    @classmethod
    def parse(cls, what: str, entries: Iterable[str], keys: tuple[str, ...]) -> Filters:
        """``KEY=VALUE`` entries, checked against ``keys``.

        Raises:
            InvalidArgument: an entry without ``=``, or a key not in ``keys`` (both named).
        """
        values: dict[str, list[str]] = {}
        for entry in entries:
            key, eq, value = entry.partition("=")
            if not eq or not key:
                raise InvalidArgument(f"invalid filter {entry!r}: use KEY=VALUE (e.g. {keys[0]}=...)", filter=entry)
            if key not in keys:
                raise InvalidArgument(f"invalid filter '{key}': {what} takes {', '.join(keys)}", filter=key)
            values.setdefault(key, []).append(value)
        return cls(what, values)

    def __contains__(self, key: str) -> bool:
        return key in self.values

    def __bool__(self) -> bool:
        return bool(self.values)

    def get(self, key: str) -> list[str]:
        return self.values.get(key, [])

    def boolean(self, key: str) -> list[bool]:
        """The values of ``key`` as booleans (``true``/``false``, ``1``/``0``).

        Raises:
            InvalidArgument: another value, named.
        """
        try:
            return [_BOOLEANS[value.lower()] for value in self.get(key)]
        except KeyError:
            bad = next(value for value in self.get(key) if value.lower() not in _BOOLEANS)
            raise InvalidArgument(f"invalid filter '{key}={bad}': use true or false", filter=key) from None

    def choices(self, key: str, allowed: tuple[str, ...]) -> list[str]:
        """The values of ``key``, each one of ``allowed``.

        Raises:
            InvalidArgument: another value, named with what is allowed.
        """
        for value in self.get(key):
            if value not in allowed:
                raise InvalidArgument(f"invalid filter '{key}={value}': use {', '.join(allowed)}", filter=key)
        return self.get(key)


def match_pattern(value: str, patterns: list[str]) -> bool:
    """docker's ``Args.Match``: a pattern equal to ``value``, or a regular expression found in it
    (one that does not compile is looked for as plain text)."""
    for pattern in patterns:
        if pattern == value:
            return True
        try:
            if re.search(pattern, value):
                return True
        except re.error:
            if pattern in value:
                return True
    return False


def match_labels(labels: dict[str, str], wanted: list[str]) -> bool:
    """Every ``KEY`` (present) or ``KEY=VALUE`` (present with that value) of ``wanted`` holds."""
    for entry in wanted:
        key, eq, value = entry.partition("=")
        if key not in labels or (eq and labels[key] != value):
            return False
    return True


def created_time(value: str) -> datetime:
    """An RFC 3339 time as the records keep it (``...Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def in_window(created: str, before: list[str], since: list[str]) -> bool:
    """Created before any of ``before`` and after any of ``since`` (each a creation time)."""
    moment = created_time(created)
    if before and not any(moment < created_time(limit) for limit in before):
        return False
    return not since or any(moment > created_time(limit) for limit in since)


# --- containers ---------------------------------------------------------------------------


class ContainerQuery:
    """``ps --filter`` ready to match: the filters, with the references they name resolved.

    Args:
        filters: parsed with :data:`CONTAINER_KEYS`.
        before, since: the creation times of the containers named by ``before=``/``since=``.
        ancestors: the image ids ``ancestor=`` matches (the images and their descendants), or
            None without that filter.
    """

    def __init__(self, filters: Filters, before: list[str], since: list[str], ancestors: set[str] | None):
        self.filters = filters
        self.before = before
        self.since = since
        self.ancestors = ancestors
        filters.choices("status", STATUSES)
        filters.choices("health", HEALTH_STATUSES)
        self.exit_codes = []
        for value in filters.get("exited"):
            try:
                self.exit_codes.append(int(value))
            except ValueError:
                raise InvalidArgument(f"invalid filter 'exited={value}': an exit code is a whole number",
                                      filter="exited") from None

    @property
    def includes_stopped(self) -> bool:
        """Whether stopped containers are listed without ``all`` (docker: a status, before or since filter)."""
        return any(key in self.filters for key in ("status", "before", "since"))

    def matches(self, subject: dict[str, Any]) -> bool:
        """Whether the container (its ``Container.filter_subject()``) passes every filter."""
        filters = self.filters
        if "id" in filters and not any(subject["id"].startswith(value) for value in filters.get("id")) \
                and not match_pattern(subject["id"], filters.get("id")):
            return False
        if "name" in filters and not match_pattern(subject["name"], filters.get("name")) \
                and not match_pattern("/" + subject["name"], filters.get("name")):
            return False
        if not match_labels(subject["labels"], filters.get("label")):
            return False
        if "status" in filters and subject["state"] not in filters.get("status"):
            return False
        if self.exit_codes and not (subject["state"] == "exited" and subject["started"]
                                    and subject["exit_code"] in self.exit_codes):
            return False
        if self.ancestors is not None and subject["image_id"] not in self.ancestors:
            return False
        if (self.before or self.since) and not in_window(subject["created"], self.before, self.since):
            return False
        if "volume" in filters and not any(value in subject["volumes"] for value in filters.get("volume")):
            return False
        if "network" in filters and not any(value in subject["networks"] for value in filters.get("network")):
            return False
        return "health" not in filters or (subject["health"] or "none") in filters.get("health")


def container_query(entries: Iterable[str], created_of: Callable[[str], str],
                    ancestors_of: Callable[[str], set[str]]) -> ContainerQuery:
    """``ps --filter`` entries, parsed and resolved.

    Args:
        created_of: a container reference -> its creation time (raises NotFound).
        ancestors_of: an image reference -> the ids of that image and of its descendants
            (empty for an unknown image: docker then lists nothing, without an error).

    Raises:
        InvalidArgument: an unknown key or a bad value. NotFound: a before=/since= container.
    """
    filters = Filters.parse("ps", entries, CONTAINER_KEYS)
    ancestors = None
    if "ancestor" in filters:
        ancestors = set()
        for reference in filters.get("ancestor"):
            ancestors |= ancestors_of(reference)
    return ContainerQuery(filters, [created_of(ref) for ref in filters.get("before")],
                          [created_of(ref) for ref in filters.get("since")], ancestors)


def descendants(ancestor: Any, images: Iterable[Any]) -> set[str]:
    """The ids of ``ancestor`` and of the images built on it: those with more layers, whose
    layers start with all of its own (``diff_ids``, bottom first). Another image with the same
    layers (an import of the same tar with another config) is not one."""
    found = {ancestor.id}
    base = tuple(ancestor.diff_ids)
    if base:
        found |= {image.id for image in images
                  if len(image.diff_ids) > len(base) and tuple(image.diff_ids)[:len(base)] == base}
    return found


# --- images ---------------------------------------------------------------------------------


def reference_pattern(pattern: str) -> re.Pattern[str]:
    """A reference glob as docker's ``reference=`` (Go's ``path.Match``): ``*`` and ``?`` never
    match a ``/``; ``[...]`` is a class."""
    out, index = [], 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in pattern[index + 1:]:
            end = pattern.index("]", index + 1)
            body = pattern[index + 1:end]
            negate = body.startswith("^") or body.startswith("!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            index = end
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        else:
            out.append(re.escape(char))
        index += 1
    try:
        return re.compile("".join(out) + r"\Z")
    except re.error as exc:
        raise InvalidArgument(f"invalid filter 'reference={pattern}': {exc}", filter="reference") from None


def familiar_tags(tag: str) -> tuple[str, str]:
    """``name:tag`` and its ``name`` (what a reference glob is matched against)."""
    name = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
    return tag, name


class ImageQuery:
    """``images --filter`` ready to match.

    Args:
        filters: parsed with :data:`IMAGE_KEYS`.
        before, since: the creation times of the images named by ``before=``/``since=``.
    """

    def __init__(self, filters: Filters, before: list[str], since: list[str]):
        self.filters = filters
        self.before = before
        self.since = since
        self.dangling = filters.boolean("dangling")
        self.references = [reference_pattern(value) for value in filters.get("reference")]

    def tags(self, image: Any) -> list[str] | None:
        """The image's tags to show, or None when it does not pass (``reference=`` keeps the
        tags that match, as docker)."""
        tags = list(image.repo_tags)
        if self.dangling and not any(flag == (not tags) for flag in self.dangling):
            return None
        if not match_labels((image.config or {}).get("Labels") or {}, self.filters.get("label")):
            return None
        if (self.before or self.since) and not in_window(image.created, self.before, self.since):
            return None
        if self.references:
            tags = [tag for tag in tags if any(pattern.match(candidate) for pattern in self.references
                                               for candidate in familiar_tags(tag))]
            if not tags:
                return None
        return tags


def image_query(entries: Iterable[str], created_of: Callable[[str], str]) -> ImageQuery:
    """``images --filter`` entries, parsed and resolved (``created_of``: an image reference ->
    its creation time; raises NotFound).

    Raises:
        InvalidArgument: an unknown key or a bad value. NotFound: a before=/since= image.
    """
    filters = Filters.parse("images", entries, IMAGE_KEYS)
    return ImageQuery(filters, [created_of(ref) for ref in filters.get("before")],
                      [created_of(ref) for ref in filters.get("since")])


# --- volumes --------------------------------------------------------------------------------


def volume_matches(filters: Filters, name: str, labels: dict[str, str], in_use: Callable[[], bool]) -> bool:
    """Whether a volume passes ``volume ls --filter`` (``name=``: docker's pattern match;
    ``dangling=``: no container uses it; ``in_use`` is asked only for that)."""
    if "name" in filters and not match_pattern(name, filters.get("name")):
        return False
    dangling = filters.boolean("dangling")
    if dangling and not any(flag == (not in_use()) for flag in dangling):
        return False
    return match_labels(labels, filters.get("label"))

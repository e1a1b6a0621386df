"""Event filters evaluated by the publisher: docker's ``events --filter`` semantics on the
lifecycle events of docs/events.md, before a frame is sent.

A filter is a map ``{key: [value, ...]}``: values of one key are alternatives (OR), different
keys must all hold (AND), as docker's. Keys and what each value matches:

=============  ===============================================================================
``type``       ``data.type`` (``container``, ``image``, ``volume``, ``network``, ``daemon``...)
``event``      ``data.action`` (``die``, ``start``...); ``action`` is the same key
``container``  a container event whose id starts with the value, or whose ``name`` is it;
               also another type's event naming it in its ``container`` attribute
``image``      the ``image`` attribute, or an image event's id or ``name``
``label``      ``KEY`` (the attribute is there) or ``KEY=VALUE``: labels are attributes
``network``    a network event's id (prefix) or ``name``, or the ``network`` attribute
``volume``     a volume event's id, or the ``volume`` attribute
``daemon``     the ``daemon`` attribute or the id of a ``daemon`` event
=============  ===============================================================================

**On the wire** (docs/events.md, *Filtered subscriptions*): a subscriber subscribes to the
prefix :func:`topic_of` gives, ``filter.<token>.``, where the token is the filter itself
(canonical msgpack, URL-safe base64, no padding): the publisher learns the filter from the
subscription message, needs no request, and forgets it when the last subscriber goes. Each
event that matches is sent once more, as ``filter.<token>.<n> NUL envelope``: the same
envelope bytes (never encoded twice), the topic numbering the matches of that filter from
1, so a filtered subscriber detects a gap as an unfiltered one does with ``seq``.

Pure functions and one small class; imports nothing heavy (the CLI uses it to build its
subscription).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgpack

#: Every key a filter may use.
KEYS = ("type", "event", "action", "container", "image", "label", "network", "volume", "daemon")
#: The prefix of every filtered subscription topic.
PREFIX = "filter."
#: Bounds on what one filter may hold: a subscription message is not a place for megabytes.
MAX_VALUES = 64
MAX_VALUE_LENGTH = 256
#: The longest filter topic (an event frame's topic prefix: bus/codec.py's MAX_EVENT_PREFIX).
MAX_TOPIC = 4096


class FilterError(ValueError):
    """A filter that cannot be used; the message names the key and the cause."""


def parse(items: Sequence[str]) -> dict[str, list[str]]:
    """``["event=die", "label=app=web"]`` (the CLI's ``--filter`` values) as a filter map.

    Raises:
        FilterError: an item without ``=`` or with an unknown key.
    """
    wanted: dict[str, list[str]] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            raise FilterError(f"invalid filter {item!r}: expected KEY=VALUE")
        wanted.setdefault(key, []).append(value)
    return normalize(wanted)


def normalize(filters: Mapping[str, Any]) -> dict[str, list[str]]:
    """The canonical form of a filter map: known keys only (``action`` is ``event``), each
    with its distinct values sorted; also accepts docker's ``{key: {value: true}}`` form.

    Raises:
        FilterError: an unknown key, a value that is not text, or more than the bounds.
    """
    if not isinstance(filters, Mapping):
        raise FilterError(f"filters must be a map of key to values, not {type(filters).__name__}")
    canonical: dict[str, set[str]] = {}
    for key, values in filters.items():
        if key not in KEYS:
            raise FilterError(f"invalid filter key {key!r}: use one of {', '.join(KEYS)}")
        if isinstance(values, Mapping):  # docker's API: {"event": {"die": true}}
            values = [value for value, on in values.items() if on]
        elif isinstance(values, str):
            values = [values]
        if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
            raise FilterError(f"filter {key!r}: values must be text")
        if len(values) > MAX_VALUES or any(len(v) > MAX_VALUE_LENGTH for v in values):
            raise FilterError(f"filter {key!r}: at most {MAX_VALUES} values of {MAX_VALUE_LENGTH} characters")
        canonical.setdefault("event" if key == "action" else key, set()).update(values)
    return {key: sorted(values) for key, values in sorted(canonical.items())}


def topic_of(filters: Mapping[str, Any]) -> str:
    """The subscription prefix of a filter, ``filter.<token>.`` (module doc)."""
    packed = msgpack.packb(normalize(filters), use_bin_type=True)
    topic = PREFIX + base64.urlsafe_b64encode(packed).rstrip(b"=").decode() + "."
    if len(topic) > MAX_TOPIC:
        raise FilterError(f"the filter is too long: {len(topic)} characters as a topic, at most {MAX_TOPIC}")
    return topic


def from_topic(prefix: str) -> dict[str, list[str]]:
    """The filter a subscription prefix names (inverse of :func:`topic_of`).

    Raises:
        FilterError: not a filter topic, or one that does not decode to a valid filter.
    """
    if not prefix.startswith(PREFIX) or not prefix.endswith(".") or len(prefix) > MAX_TOPIC:
        raise FilterError(f"{prefix[:64]!r} is not a filter topic (filter.<token>., at most {MAX_TOPIC} characters)")
    token = prefix[len(PREFIX) : -1]
    try:
        packed = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        filters = msgpack.unpackb(packed, raw=False, strict_map_key=True, max_bin_len=0, max_ext_len=0)
    except (binascii.Error, ValueError, msgpack.UnpackException) as exc:
        raise FilterError(f"filter topic {prefix[:64]!r} does not decode: {exc}") from None
    return normalize(filters)


def matches(filters: Mapping[str, Sequence[str]], data: Any) -> bool:
    """Whether a lifecycle event's ``data`` passes a normalized filter."""
    if not isinstance(data, Mapping):
        return False
    attributes = data.get("attributes")
    if not isinstance(attributes, Mapping):
        attributes = {}
    kind = data.get("type")
    actor = data.get("id") or ""
    for key, values in filters.items():
        if not values:
            continue
        if key == "type":
            ok = kind in values
        elif key == "event":
            ok = data.get("action") in values
        elif key == "container":
            ok = any(_names(kind == "container", actor, attributes.get("name"), attributes.get("container"), v)
                     for v in values)
        elif key == "image":
            ok = any(attributes.get("image") == v or (kind == "image" and (actor == v or attributes.get("name") == v))
                     for v in values)
        elif key == "label":
            ok = any(_label(attributes, v) for v in values)
        elif key == "network":
            ok = any(_names(kind == "network", actor, attributes.get("name"), attributes.get("network"), v)
                     for v in values)
        elif key == "volume":
            ok = any((kind == "volume" and actor == v) or attributes.get("volume") == v for v in values)
        else:  # daemon
            ok = any((kind == "daemon" and actor == v) or attributes.get("daemon") == v for v in values)
        if not ok:
            return False
    return True


def compile_filter(filters: Mapping[str, Sequence[str]]) -> Callable[[Any], bool]:
    """:func:`matches` of a normalized filter as one predicate, made once per filter: the
    publisher runs it on every event of its channel, so the keys most filters use (``type``,
    ``event``) are a set lookup, checked before the others, and a single key is the whole
    predicate."""
    members: list[tuple[str, frozenset[str]]] = []
    others: dict[str, Sequence[str]] = {}
    for key, values in filters.items():
        if not values:
            continue
        if key in ("type", "event"):
            members.append(("type" if key == "type" else "action", frozenset(values)))
        else:
            others[key] = values
    if len(members) == 1 and not others:  # the usual filter: one function, no other call
        ((field, wanted),) = members

        def accept(data: Any) -> bool:
            if type(data) is dict:  # every event the daemon publishes
                value = data.get(field)
                return type(value) is str and value in wanted
            return matches(filters, data)  # another Mapping, or not a map at all

        return accept

    def accept_all(data: Any) -> bool:
        if type(data) is not dict:
            return matches(filters, data)
        for field, wanted in members:
            value = data.get(field)
            if type(value) is not str or value not in wanted:
                return False
        return not others or matches(others, data)

    return accept_all


def _names(own: bool, actor: str, name: Any, reference: Any, value: str) -> bool:
    if own:
        return bool(value) and (actor.startswith(value) or name == value)
    return reference is not None and (reference == value or (bool(value) and str(reference).startswith(value)))


def _label(attributes: Mapping[str, Any], value: str) -> bool:
    key, eq, wanted = value.partition("=")
    if key not in attributes:
        return False
    return not eq or str(attributes[key]) == wanted


#: The keys a filter set indexes its filters on, and the field of an event's data each
#: compares (one string per event): ``event`` first, it tells events apart best.
INDEXED_KEYS = (("event", "action"), ("type", "type"))

#: A filter as the publisher runs it: ``(rest, prefix, [matches so far])``, where ``rest`` is
#: what remains to check of the filter once the index led to it (None: nothing).
Entry = tuple[Callable[[Any], bool] | None, str, list[int]]


class FilterSet:
    """The filters subscribers asked for, for the publisher: each with its match count.
    Bounded (``limit``): a subscription past it is refused (counted by the caller).

    *Index.* The publisher asks, for every event of its channel, which filters it passes;
    asking each filter would cost every event a call per filter, though a filter that passes
    1% of the events wants nothing of the other 99%. So each filter is filed under one of its
    keys that an event holds as one string, ``event`` (``data.action``) or else ``type``:
    ``indexes`` maps that field to ``{value: [entry, ...]}``, the filters an event with that
    value may pass, each with the rest of its predicate. An event of a value no filter names
    costs one dict lookup per indexed field, whatever the number of filters. A filter with
    neither key (``label=...`` alone, say) is in ``unindexed`` and runs on every event.
    ``route`` is the only index when there is one and nothing is unindexed (the usual case:
    the publisher inlines that lookup).
    """

    def __init__(self, limit: int = 1024):
        self.limit = limit
        #: prefix -> (the whole predicate, [matches so far], the normalized filter)
        self._active: dict[str, tuple[Callable[[Any], bool], list[int], dict[str, list[str]]]] = {}
        #: Any filter at all (the publisher's first, cheapest question).
        self.active = False
        self.indexes: list[tuple[str, dict[str, list[Entry]]]] = []
        self.unindexed: list[Entry] = []
        self.route: tuple[str, dict[str, list[Entry]]] | None = None

    def __len__(self) -> int:
        return len(self._active)

    def add(self, prefix: str) -> bool:
        """Register the filter of a subscription prefix. False when it is not a valid
        filter or the set is full; True when registered (or already there)."""
        if prefix in self._active:
            return True
        if len(self._active) >= self.limit:
            return False
        try:
            filters = from_topic(prefix)
        except FilterError:
            return False
        self._active[prefix] = (compile_filter(filters), [0], filters)
        self._index()
        return True

    def remove(self, prefix: str) -> None:
        if self._active.pop(prefix, None) is not None:
            self._index()

    def _index(self) -> None:
        """Build the index (class doc) anew: filters come and go rarely, events do not."""
        tables: dict[str, dict[str, list[Entry]]] = {}
        unindexed: list[Entry] = []
        for prefix, (accept, count, filters) in self._active.items():
            for key, field in INDEXED_KEYS:
                values = filters.get(key)
                if values:
                    others = {other: wanted for other, wanted in filters.items() if other != key and wanted}
                    entry = (compile_filter(others) if others else None, prefix, count)
                    table = tables.setdefault(field, {})
                    for value in values:
                        table.setdefault(value, []).append(entry)
                    break
            else:
                unindexed.append((accept, prefix, count))
        self.indexes = list(tables.items())
        self.unindexed = unindexed
        self.route = self.indexes[0] if len(self.indexes) == 1 and not unindexed else None
        self.active = bool(self._active)

    def candidates(self, data: Any) -> list[Entry]:
        """The filters ``data`` may pass, each with what remains to check (its ``rest``):
        those the index leads to, and the unindexed ones. Data that is not a dict is
        checked by every filter's whole predicate (:func:`matches`)."""
        if type(data) is not dict:
            return [(accept, prefix, count) for prefix, (accept, count, _) in self._active.items()]
        found: list[Entry] = []
        for field, table in self.indexes:
            value = data.get(field)
            if type(value) is str:
                found += table.get(value, ())
        found += self.unindexed
        return found

    def topics_for(self, data: Any, candidates: list[Entry] | None = None) -> list[bytes]:
        """The topic frame of each filter ``data`` passes, its match counter advanced.
        ``candidates``: :meth:`candidates` of ``data``, when the caller has them already."""
        topics = []
        for rest, prefix, count in self.candidates(data) if candidates is None else candidates:
            if rest is None or rest(data):
                count[0] += 1
                topics.append(f"{prefix}{count[0]}".encode())
        return topics

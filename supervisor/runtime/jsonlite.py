"""``json.loads`` and compact ``json.dumps`` on CPython's C accelerator ``_json`` alone:
the ``json`` package imports ``re`` (json.decoder, json.encoder), ~5 ms of every
``dockyard-runtime run`` (docs/runtime.md, "Where the time goes"). Same results as
``json``; a malformed document raises ``json``'s own ``JSONDecodeError`` (a ValueError; the
C scanner imports ``json.decoder`` for it, only then). ``state``'s indented output has
:func:`dumps_indented`; ``features`` and ``list`` keep using ``json``.

Used by the OCI runtime (``supervisor/ociruntime/``) and, for its :class:`ScannerContext`,
by the init stage (``init_stage.py``), which imports it under ``python -I -S`` beside
``forkserver.py``: ``_json`` only (``json`` on the error paths of :func:`loads` and
:func:`dumps` alone), nothing of our package, no ``from __future__``.
"""

try:
    import _json
except ImportError:  # pragma: no cover - CPython always has it
    _json = None  # type: ignore[assignment]


class ScannerContext:  # what json.decoder.JSONDecoder gives the C scanner
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    memo: dict = {}

    @staticmethod
    def parse_constant(name: str) -> float:
        return float(name.lower().replace("infinity", "inf"))


_WHITESPACE = " \t\n\r"


def loads(data: bytes | str) -> object:
    """``json.loads(data)``.

    Raises:
        ValueError: not one JSON value (``json.JSONDecodeError`` with its position).
    """
    if _json is None:  # pragma: no cover
        import json

        return json.loads(data)
    if isinstance(data, (bytes, bytearray)):
        try:
            # json.loads' detect_encoding for UTF-8, its BOM dropped by hand: the "utf-8-sig"
            # codec is a module to import (~0.2 ms of every dockyard-runtime create)
            text = bytes(data[3:] if data[:3] == b"\xef\xbb\xbf" else data).decode("utf-8")
        except UnicodeDecodeError:
            import json

            return json.loads(data)  # UTF-16/32, or its error
    else:
        text = data
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _json.make_scanner(ScannerContext)(text, start)
    except StopIteration:
        import json

        return json.loads(text)  # no value: json's own error message
    if text[end:].strip(_WHITESPACE):
        import json

        return json.loads(text)  # extra data: json's own error message
    return value


def _unencodable(value: object) -> object:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def dumps(value: object, sort_keys: bool = False) -> str:
    """``json.dumps(value, separators=(",", ":"), sort_keys=sort_keys)``.

    Raises:
        TypeError: a value JSON has no form for; ValueError: a circular reference.
    """
    if _json is None:  # pragma: no cover
        import json

        return json.dumps(value, separators=(",", ":"), sort_keys=sort_keys)
    encoder = _json.make_encoder({}, _unencodable, _json.encode_basestring_ascii, None, ":", ",", sort_keys,
                                 False, True)
    return "".join(encoder(value, 0))


def dumps_indented(value: object, indent: int = 2, _level: int = 0) -> str:
    """``json.dumps(value, indent=indent)`` (what ``dockyard-runtime state`` prints, as runc's
    ``json.MarshalIndent``) without ``json.encoder`` and its ``re`` (~7 ms of the command:
    podman and conmon call ``state`` for every container).

    Raises:
        TypeError: a value JSON has no form for.
    """
    if isinstance(value, dict) and value:
        inner = "\n" + " " * (indent * (_level + 1))
        items = (inner + dumps(key if isinstance(key, str) else str(key)) + ": "
                 + dumps_indented(item, indent, _level + 1) for key, item in value.items())
        return "{" + ",".join(items) + "\n" + " " * (indent * _level) + "}"
    if isinstance(value, (list, tuple)) and value:
        inner = "\n" + " " * (indent * (_level + 1))
        return "[" + ",".join(inner + dumps_indented(item, indent, _level + 1) for item in value) \
            + "\n" + " " * (indent * _level) + "]"
    return dumps(value)

"""``--env-file`` and ``--label-file``: docker's ``KEY=VALUE`` file format, read by the CLI
(as docker's CLI does; the daemon gets the entries).

The format (docker's ``opts/file.go``): one entry a line; a UTF-8 byte-order mark at the
start is dropped; leading whitespace is dropped; empty lines and lines starting with ``#``
are skipped; ``KEY=VALUE`` keeps the value exactly (no quotes removed, no trailing space
trimmed, no variables expanded); a key holding whitespace is an error. A line that is a key
alone takes its value from the CLI's environment in an env file (and is left out when the
variable is not set, as ``-e KEY``), and is a label with an empty value in a label file.
"""

from __future__ import annotations

import os

from .common import UsageError

_WHITESPACE = " \t"


def read_entries(path: str, flag: str, from_environment: bool) -> list[str]:
    """The file's entries as ``KEY=VALUE`` strings, in order.

    Args:
        flag: ``--env-file`` or ``--label-file``, for messages.
        from_environment: a key alone takes its value from ``os.environ`` (env files).

    Raises:
        UsageError: the file cannot be read, is not UTF-8, or has a key with whitespace or
            no key; naming the flag, the file and the line.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise UsageError(f"invalid {flag} {path}: {exc.strerror}") from None
    entries = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"invalid {flag} {path}: line {number} is not UTF-8") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        line = text.lstrip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        key = key.lstrip(_WHITESPACE)
        if any(space in key for space in _WHITESPACE):
            raise UsageError(f"invalid {flag} {path}: line {number}: variable '{key}' contains whitespaces")
        if not key:
            raise UsageError(f"invalid {flag} {path}: line {number}: no variable name on line '{line}'")
        if eq:
            entries.append(f"{key}={value}")
        elif not from_environment:
            entries.append(f"{key}=")
        elif key in os.environ:
            entries.append(f"{key}={os.environ[key]}")
    return entries


def label_entries(files: list[str], labels: list[str]) -> list[str]:
    """``--label-file`` entries, then ``-l/--label`` ones (later ones win, as docker); ``KEY``
    alone is ``KEY=``.

    Raises:
        UsageError: a file cannot be read; a label without a key.
    """
    entries = [entry for path in files for entry in read_entries(path, "--label-file", from_environment=False)]
    for label in labels:
        key, eq, value = label.partition("=")
        if not key.strip():
            raise UsageError(f"invalid --label {label!r}: use KEY=VALUE (or KEY alone for an empty value)")
        entries.append(f"{key}={value}")
    return entries

"""What every command shares: the usage error, failing with docker's exit codes, the client,
one operation applied to each named object, ``KEY=VALUE`` options, and files the daemon writes for the CLI."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, NoReturn

from bus.errors import RemoteError
from supervisor import durations
from supervisor import operations as ops


class UsageError(Exception):
    pass


def fail(message: str, code: int = 1) -> NoReturn:
    print(f"dockyard: {message}", file=sys.stderr)
    raise SystemExit(code)


def client_for(args: argparse.Namespace) -> Any:
    from bus.client import Client

    return Client(args.run_dir or os.environ.get("DOCKYARD_RUN") or "/run/dockyard", source=f"cli:{os.getpid()}")


def start_failure(error: RemoteError) -> NoReturn:
    fail(error.message, int(error.details.get("exit_code", 125)))


def for_each(args: argparse.Namespace, client: Any, op: str, extra: dict[str, Any], show=None, *,
             names: list[str] | None = None, key: str = "container") -> int:
    """Apply one operation to each named container (or each of ``names``, sent as ``key``), as
    docker does: report each failure, carry on, and exit 1 if any failed."""
    status = 0
    for ref in args.containers if names is None else names:
        try:
            result = client.request(op, {key: ref, **extra}, timeout=None)
        except RemoteError as error:
            print(f"dockyard: {error.message}", file=sys.stderr)
            status = 1 if op != ops.CONTAINER_START else int(error.details.get("exit_code", 1))
            continue
        print(show(result) if show else ref)
    return status


def inspect_each(client: Any, op: str, key: str, names: list[str]) -> int:
    """Print the documents of each of ``names`` as one JSON array (``inspect``); report each
    one that failed, and exit 1 if any did."""
    documents, status = [], 0
    for name in names:
        try:
            documents.append(client.request(op, {key: name}))
        except RemoteError as error:
            print(f"dockyard: {error.message}", file=sys.stderr)
            status = 1
    print(json.dumps(documents, indent=4))
    return status


def key_values(entries: list[str], flag: str, *, bare: bool = False, example: str = "") -> dict[str, str]:
    """``KEY=VALUE`` options (``--label``, ``--opt``, ``--log-opt``) to a map; with ``bare``, a
    ``KEY`` alone has the empty value (docker's ``volume create --label KEY``)."""
    values = {}
    for entry in entries:
        key, eq, value = entry.partition("=")
        if not key or not (eq or bare):
            raise UsageError(f"invalid {flag} {entry!r}: use KEY=VALUE" + (f" (e.g. {example})" if example else ""))
        values[key] = value
    return values


def warn_changed(result: dict[str, Any]) -> dict[str, Any]:
    """Print the reply's ``warnings`` (files of a running container that changed while the
    daemon read them) to stderr; returns the reply."""
    for warning in result.get("warnings") or []:
        print(f"dockyard: warning: {warning}", file=sys.stderr)
    return result


def to_output(output: str | None, op: str, request: dict[str, Any], client: Any) -> dict[str, Any]:
    """Have the daemon write a file (same host: it gets a path), to ``output`` or stdout."""
    if output is not None:
        return warn_changed(client.request(op, {**request, "path": os.path.abspath(output)}, timeout=None))
    if sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal: use -o FILE or redirect the output")
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dockyard-") as scratch:
        path = os.path.join(scratch, "out.tar")
        result = warn_changed(client.request(op, {**request, "path": path}, timeout=None))
        with open(path, "rb") as source:
            shutil.copyfileobj(source, sys.stdout.buffer, 1 << 20)
        sys.stdout.buffer.flush()
    return result


def parse_time(value: str | None, flag: str) -> float | None:
    """``--since``/``--until``: a duration before now (Go's: 10m, 1m30s), unix seconds or an
    RFC 3339 time, as docker takes them (supervisor/durations.py)."""
    if value is None:
        return None
    try:
        return durations.parse_time(value, flag, time.time())
    except durations.InvalidDuration as error:
        raise UsageError(str(error)) from None

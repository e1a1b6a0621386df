"""``--ulimit NAME=SOFT[:HARD]`` and ``--shm-size``, parsed as docker parses them (go-units'
ParseUlimit and RAMInBytes). Pure functions: the spec checks the flags with them, start turns
them into the launch config's ``rlimits`` and ``shm_size``.

Default: a container gets ``nofile=1048576:1048576`` (docker's, from containerd's defaults),
capped at the host's ``fs.nr_open`` and, when the daemon lacks CAP_SYS_RESOURCE (it cannot
raise a hard limit), at its own hard limit; unless ``--ulimit nofile=...`` says otherwise.
Every other limit is the daemon's own (docker's behaviour too). docs/cli.md says so.
"""

from __future__ import annotations

import re

#: docker's names, in its order.
NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
         "rtprio", "rttime", "sigpending", "stack")
DEFAULT_NOFILE = 1048576
DEFAULT_SHM_SIZE = 64 << 20
_NUMBER = re.compile(r"^-?[0-9]{1,19}\Z")
_SIZE = re.compile(r"^([0-9]{1,15}(?:\.[0-9]{1,9})?) *([kKmMgGtTpP]?)[iI]?[bB]?\Z")


class LimitError(ValueError):
    """A --ulimit or --shm-size docker would refuse; the message is docker's."""

    def __init__(self, message: str, flag: str):
        super().__init__(message)
        self.message = message
        self.flag = flag


def parse_ulimit(text: str) -> tuple[str, int, int]:
    """``nofile=1024:2048`` -> ("nofile", 1024, 2048); one value sets both; -1 is unlimited.

    Raises:
        LimitError: docker's message.
    """
    name, eq, values = text.partition("=")
    if not eq:
        raise LimitError(f"invalid ulimit argument: {text}", "--ulimit")
    if name not in NAMES:
        raise LimitError(f"invalid ulimit type: {name}", "--ulimit")
    soft_text, colon, hard_text = values.partition(":")
    if not _NUMBER.match(soft_text) or (colon and not _NUMBER.match(hard_text)):
        raise LimitError(f"invalid ulimit argument: {text}", "--ulimit")
    soft = int(soft_text)
    hard = int(hard_text) if colon else soft
    if soft < -1 or hard < -1:
        raise LimitError(f"invalid ulimit argument: {text}", "--ulimit")
    if hard != -1 and (soft == -1 or soft > hard):
        raise LimitError(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}", "--ulimit")
    return name, soft, hard


def parse_shm_size(text: str) -> int:
    """``64m`` -> 67108864 (binary units, as docker's RAMInBytes).

    Raises:
        LimitError: docker's message; a size of 0 or below 4k is refused too.
    """
    match = _SIZE.match(text.strip())
    if not match:
        raise LimitError(f"invalid size: '{text}'", "--shm-size")
    size = int(float(match.group(1)) * (1024 ** " kmgtp".index(match.group(2).lower() or " ")))
    if size < 4096:
        raise LimitError(f"invalid --shm-size {text!r}: at least 4k", "--shm-size")
    return size


def launch_rlimits(ulimits: tuple[str, ...] | list[str], nr_open: int) -> tuple[str, ...]:
    """The launch config's ``rlimits``: ``"NAME SOFT HARD"`` each (-1: unlimited), with docker's
    default nofile (capped at ``nr_open``, the most the stage can give) unless one is given."""
    parsed = [parse_ulimit(entry) for entry in ulimits]
    if not any(name == "nofile" for name, _, _ in parsed):
        default = min(DEFAULT_NOFILE, nr_open) if nr_open > 0 else DEFAULT_NOFILE
        parsed.insert(0, ("nofile", default, default))
    return tuple(f"{name} {soft} {hard}" for name, soft, hard in parsed)

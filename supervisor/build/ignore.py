"""``.dockerignore``: which paths of a build context the CLI leaves out of the tar it sends.

Patterns are Go's ``filepath.Match`` plus ``**`` (any number of directories), relative to the
context's root; ``!`` re-includes; the last matching pattern wins; a pattern that matches a
directory excludes everything below it. The Dockerfile and ``.dockerignore`` are always sent
(docker sends them too); the daemon drops them from the unpacked context when excluded
(``context.drop_excluded_build_files``, as docker's daemon does), so ``COPY .`` skips them.
"""

from __future__ import annotations

import posixpath
import re


def parse_dockerignore(text: str) -> list[tuple[bool, str]]:
    """``(exclude?, pattern)`` for each line of a ``.dockerignore`` (``!`` re-includes)."""
    patterns: list[tuple[bool, str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = posixpath.normpath(line[1:].strip() if include else line).lstrip("/")
        if pattern in ("", "."):
            continue
        patterns.append((not include, pattern))
    return patterns


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A ``.dockerignore`` pattern (Go's filepath.Match plus ``**``) as a regex."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            if pattern.startswith("/", index):
                out[-1] = "(.*/)?"
                index += 1
            continue
        out.append("[^/]*" if char == "*" else "[^/]" if char == "?" else re.escape(char))
        index += 1
    return re.compile("^" + "".join(out) + "(/.*)?\\Z")


def ignored(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether the context-relative ``path`` is excluded (the last matching pattern wins)."""
    result = False
    for exclude, pattern in patterns:
        if pattern_regex(pattern).match(path):
            result = exclude
    return result

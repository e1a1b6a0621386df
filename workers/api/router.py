"""Routes: a method and a path pattern to a handler; the API version prefix; errors.

A path is matched after its ``/v1.xx`` prefix is taken off (a bare path is served at the
current version, as docker does). A version above :data:`API_VERSION` or below
:data:`MIN_API_VERSION` is refused with docker's messages. Patterns name their parameters:
``/containers/{id}/json``; ``{name:path}`` takes the rest of the path (image names hold
slashes: ``/images/registry:5000/team/app/json``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from workers.api.http import ApiError, Request, Response, error_body

API_VERSION = "1.43"
MIN_API_VERSION = "1.24"

Handler = Callable[..., Awaitable[Response]]
_VERSION = re.compile(r"^/v(\d+\.\d+)(/.*)\Z")


def version_tuple(version: str) -> tuple[int, int]:
    major, _, minor = version.partition(".")
    return int(major), int(minor)


class Router:
    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._paths: set[re.Pattern[str]] = set()
        self.log: Any = None

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        regex = re.compile("^" + re.sub(
            r"\{(\w+)(:path)?\}", lambda m: f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})", pattern) + r"\Z")
        self._routes.append((method, regex, handler))
        self._paths.add(regex)

    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def decorate(handler: Handler) -> Handler:
            self.add(method, pattern, handler)
            return handler
        return decorate

    async def __call__(self, request: Request) -> Response:
        match = _VERSION.match(request.path)
        if match:
            request.version, request.path = match.group(1), match.group(2)
            version = version_tuple(request.version)
            if version > version_tuple(API_VERSION):
                return error_body(400, f"client version {request.version} is too new. "
                                       f"Maximum supported API version is {API_VERSION}")
            if version < version_tuple(MIN_API_VERSION):
                return error_body(400, f"client version {request.version} is too old. "
                                       f"Minimum supported API version is {MIN_API_VERSION}, please upgrade "
                                       "your client to a newer version")
        method = "GET" if request.method == "HEAD" else request.method
        path_known = False
        for route_method, regex, handler in self._routes:
            found = regex.match(request.path)
            if found is None:
                continue
            path_known = True
            if route_method != method and not (route_method == "HEAD" and request.method == "HEAD"):
                continue
            try:
                return await handler(request, **found.groupdict())
            except ApiError as error:
                return error_body(error.status, error.message)
        if path_known:
            return error_body(405, f"method {request.method} is not allowed on {request.path}")
        return error_body(404, f"page not found: {request.method} {request.path}")

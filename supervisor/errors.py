"""Errors of the supervisor. Each carries a stable ``code`` that the daemon puts in its
error reply (see :data:`bus.errors.ERROR_CODES`).

    DockyardError                  code
     ├── InvalidArgument           invalid_argument   a bad spec, flag or value
     ├── NotFound                  not_found          no such container or image
     ├── Conflict                  conflict           a name taken, an image in use
     ├── InvalidState              invalid_state      e.g. start of a running container
     ├── ImageError                invalid_argument   a tar that cannot be imported safely
     └── StartError                (exit code 125/126/127) the payload could not be started
"""

from __future__ import annotations

from typing import Any


class DockyardError(Exception):
    code = "internal"

    def __init__(self, message: str, **details: Any):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidArgument(DockyardError):
    code = "invalid_argument"


class NotFound(DockyardError):
    code = "not_found"


class Conflict(DockyardError):
    code = "conflict"


class InvalidState(DockyardError):
    code = "invalid_state"

    def __init__(self, container: str, operation: str, status: str, why: str | None = None):
        reason = why or f"it is {status}"
        super().__init__(
            f"cannot {operation} container {container}: {reason}",
            container=container,
            operation=operation,
            status=status,
        )


class ImageError(DockyardError):
    code = "invalid_argument"


class StartError(DockyardError):
    """The container process could not be started. ``exit_code`` follows docker: 125 for a
    failure of the runtime, 126 when the command cannot be invoked, 127 when it is not found."""

    code = "invalid_state"

    def __init__(self, message: str, exit_code: int = 125, **details: Any):
        super().__init__(message, exit_code=exit_code, **details)
        self.exit_code = exit_code

"""The one exception of ``dockyard-runtime``: :class:`RuntimeCommandError`, raised with a
message that names the operation, the container and the cause; ``cli.py`` prints it in
runc's shape and exits with 1 (or ``exit_code``)."""

from __future__ import annotations


class RuntimeCommandError(Exception):
    """A command failed; ``message`` is what runc would print after ``level=error``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

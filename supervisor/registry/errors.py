"""Errors of the registry client. Every message names the registry and the object (a
repository, a manifest or a blob digest) and the cause.

    RegistryError                     code (bus)         reason (details)
     ├── ReferenceError               invalid_argument   bad_reference   a malformed image reference
     ├── RegistryUnavailable          invalid_state      unreachable     connection refused, TLS failure, timeout
     ├── AuthError                    invalid_argument   unauthorized    401/403, a 401 without a challenge, a bad token
     ├── NotFoundError                not_found          not_found       no such repository, manifest or tag
     ├── ProtocolError                invalid_state      protocol        an answer the spec does not allow (redirect loop,
     │                                                                   unknown media type, manifest over the size limit)
     └── VerificationError            invalid_state      verification    a blob or manifest whose digest or size differs

``code`` is one of the bus's stable error codes (:data:`bus.errors.ERROR_CODES`), so a
handler can raise these as they are; ``details["reason"]`` tells the cases apart.
"""

from __future__ import annotations

from typing import Any

from supervisor.errors import DockyardError


class RegistryError(DockyardError):
    code = "invalid_state"
    reason = "registry"

    def __init__(self, message: str, *, registry: str | None = None, object: str | None = None, **details: Any):
        super().__init__(message, reason=self.reason, registry=registry, object=object, **details)
        self.registry = registry
        self.object = object


class ReferenceError(RegistryError):  # noqa: A001 - the module's own name, never star-imported
    code = "invalid_argument"
    reason = "bad_reference"


class RegistryUnavailable(RegistryError):
    reason = "unreachable"


class AuthError(RegistryError):
    code = "invalid_argument"
    reason = "unauthorized"


class NotFoundError(RegistryError):
    code = "not_found"
    reason = "not_found"


class ProtocolError(RegistryError):
    reason = "protocol"


class VerificationError(RegistryError):
    reason = "verification"

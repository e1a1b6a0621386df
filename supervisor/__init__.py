"""dockyard's supervisor: container lifecycle, Linux runtime, image store and daemon.

The library's public API is exported here (docs/operations.md, "Embedding")::

    from supervisor import Config, ContainerSpec, Supervisor

Every name in :data:`__all__` is imported on first use (PEP 562), not with the package: the
CLI and the container init stage import ``supervisor.*`` modules and must not pay for trio,
structlog and pyzmq (``python -X importtime -m supervisor.cli --version`` shows none of them).
"""

__version__ = "0.1.0"

#: The ``type`` of every lifecycle event, and the first word of its topic: the ``events``
#: channel (its seq, the journal, ``dockyard events``) is exactly the topics with these
#: prefixes (docs/events.md, "Channels and sequence numbers"). Here, so that the CLI reads
#: it without importing the daemon.
EVENT_TYPES = ("container", "daemon", "image", "network", "volume", "worker")

#: Each public name and the module that defines it.
_EXPORTS = {
    "Supervisor": "supervisor.api",
    "EVENTS_CHANNEL": "supervisor.api",
    "LOG_STORES": "supervisor.api",
    "Config": "supervisor.config",
    "Container": "supervisor.container",
    "ContainerSpec": "supervisor.spec",
    "Resources": "supervisor.resources",
    "LogOptions": "logs.options",
    "ExecSpec": "supervisor.exec",
    "DockyardError": "supervisor.errors",
    "InvalidArgument": "supervisor.errors",
    "NotFound": "supervisor.errors",
    "Conflict": "supervisor.errors",
    "InvalidState": "supervisor.errors",
    "ImageError": "supervisor.errors",
    "StartError": "supervisor.errors",
}

__all__ = ["__version__", *_EXPORTS]


# No imports at all here, not even typing (a few ms): the annotations are strings.
def __getattr__(name: "str") -> "object":
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
    value = getattr(__import__(module, fromlist=[name]), name)
    globals()[name] = value  # the next lookup is a plain one
    return value


def __dir__() -> "list[str]":
    return sorted({*globals(), *_EXPORTS})

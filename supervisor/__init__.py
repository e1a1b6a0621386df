"""dockyard's supervisor: container lifecycle, Linux runtime, image store and daemon.

Kept free of imports so that the CLI and the container init stage stay fast; the library API
lives in :mod:`supervisor.api` (``from supervisor.api import Supervisor, Config``).
"""

__version__ = "0.1.0"

#: The ``type`` of every lifecycle event, and the first word of its topic: the ``events``
#: channel (its seq, the journal, ``dockyard events``) is exactly the topics with these
#: prefixes (docs/events.md, "Channels and sequence numbers"). Here, so that the CLI reads
#: it without importing the daemon.
EVENT_TYPES = ("container", "daemon", "image", "worker")

"""dockyard's supervisor: container lifecycle, Linux runtime, image store and daemon.

Kept free of imports so that the CLI and the container init stage stay fast; the library API
lives in :mod:`supervisor.api` (``from supervisor.api import Supervisor, Config``).
"""

__version__ = "0.1.0"

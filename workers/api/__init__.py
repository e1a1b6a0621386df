"""The Engine API worker: docker's HTTP API on ``<run>/docker.sock``, served as a bus client.

``dockyard worker api`` (the daemon starts it with the others) listens on the socket (and on
loopback TCP with ``--api tcp://127.0.0.1:PORT``) and answers each request through the bus
operations, like any other client (docs/api.md, docs/architecture.md). Its modules:

* ``http.py``: HTTP/1.1 with h11 (sans-IO) in a thin trio shell: JSON, chunked streams,
  hijacked connections;
* ``router.py``: the version prefix, routes, docker's error replies;
* ``service.py``: what the endpoints share (the bus client, error mapping, scratch files);
* ``hub.py``: one events subscription for every ``/events`` stream and ``/wait``;
* the endpoints: ``system.py``, ``containers.py``, ``sessions.py`` (attach, logs, exec),
  ``archive.py``, ``images.py``, ``volumes.py``, ``networks.py``;
* ``specs.py``, ``views.py``: docker's JSON to dockyard's and back, pure.

This package is imported only by the worker's process: the CLI and the daemon never load h11.
"""

from __future__ import annotations

from typing import Any


def build(client: Any, scratch: Any, log: Any) -> tuple[Any, Any]:
    """The router with every endpoint, and the Api state behind it."""
    from workers.api import archive, containers, imagebuild, images, networks, sessions, system, volumes
    from workers.api.hub import EventHub
    from workers.api.router import Router
    from workers.api.service import Api

    api = Api(client, EventHub(), scratch, log)
    router = Router()
    router.log = log
    for module in (system, containers, sessions, archive, images, imagebuild, volumes, networks):
        module.register(router, api)
    return router, api


async def serve(ctx: Any) -> None:
    """The worker: listen, and serve until cancelled."""
    import trio

    from bus.client import AsyncClient
    from workers.api import server

    addresses = [server.parse_listen_address(address, tls=bool(ctx.tls)) for address in ctx.listen]
    tls = server.tls_context(*ctx.tls) if ctx.tls else None
    listeners: list[Any] = [server.unix_listener(ctx.run_dir / server.SOCKET_NAME)]
    for kind, host, port in addresses:
        if kind == "unix":
            from pathlib import Path

            listeners.append(server.unix_listener(Path(host)))
        else:
            listeners += await server.tcp_listeners(host, port, tls)
    import shutil

    scratch = ctx.root / "api" / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)  # a previous worker's leftovers (it was killed mid-copy)
    async with AsyncClient(ctx.run_dir, source="worker.api") as client:
        router, api = build(client, scratch, ctx.log)
        async with trio.open_nursery() as nursery:
            api.nursery = nursery
            await nursery.start(api.hub.run, client, ctx.log)
            await nursery.start(server.serve_listeners, listeners, router, ctx.log)
            ctx.log.info("Engine API listening", socket=str(ctx.run_dir / server.SOCKET_NAME),
                         tcp=[f"{host}:{port}" for kind, host, port in addresses if kind == "tcp"], tls=tls is not None)

"""The image a build stage starts from, and the platform a build is for.

``FROM scratch`` starts from an empty image: no layers, an empty config, the build's
platform. It is made in the store like any image (dangling, as the intermediate images are);
its config carries no time, so its id depends on the platform only and it is made once.

``--pull`` pulls every base from its registry before the stage starts (the registry service
of ``dockyard pull``, with the platform asked for), also when the store has an image of that
name, as docker's ``build --pull``; without it the base must be in the store.

``--platform OS/ARCH[/VARIANT]``: the built image records it (its config's ``os``,
``architecture`` and ``variant``, inherited from the base). A base of another platform is
refused, naming both: a foreign platform works only where the base is pulled (``--pull``)
from an image index that offers it, or is already in the store for that platform (and
``FROM scratch``). RUN steps need the host's platform: this builder runs no emulator.

Errors::

    BuildError   a base missing from the store, of the wrong platform, or RUN on a foreign one
    RegistryError (supervisor.registry.errors) from ``--pull``: unreachable, no such image, ...
"""

from __future__ import annotations

from typing import Any

import trio

from supervisor.build.context import BuildError
from supervisor.errors import NotFound
from supervisor.images.image import NewImage
from supervisor.images.oci import image_config
from supervisor.registry.manifest import Platform, host_platform

SCRATCH = "scratch"


def image_platform(document: dict[str, Any]) -> Platform:
    """The platform an image config records (docker's defaults for missing fields)."""
    variant = document.get("variant")
    return Platform(document.get("os") or "linux", document.get("architecture") or host_platform().architecture,
                    variant if isinstance(variant, str) and variant else None)


def same_platform(have: Platform, want: Platform) -> bool:
    """``have`` serves ``want``: same OS and architecture, and the same variant where both name one."""
    return (have.os, have.architecture) == (want.os, want.architecture) and (
        have.variant is None or want.variant is None or have.variant == want.variant)


def parse_platform(text: str) -> Platform:
    """``--platform``'s value, checked: linux only (the containers of RUN are Linux's).

    Raises:
        BuildError: not OS/ARCH[/VARIANT], or an OS other than linux.
    """
    try:
        platform = Platform.parse(text)
    except ValueError as exc:
        raise BuildError(f"cannot build: --platform: {exc}") from None
    if platform.os != "linux":
        raise BuildError(f"cannot build: --platform {text}: only linux images can be built")
    return platform


def scratch_image(store: Any, platform: Platform) -> Any:
    """The empty image of ``platform`` (blocking: runs in a thread)."""
    document: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        document["variant"] = platform.variant
    config_bytes = image_config([], {}, base=document, history=[])
    with store.stage() as stage:
        return store.commit(stage, [NewImage(config_bytes, (), ())])[0]


async def pull_base(supervisor: Any, reference: str, platform: Platform | None) -> dict[str, Any]:
    """Pull ``reference`` from its registry into the store (``--pull``); the pull's reply."""
    from supervisor.registry import service
    from supervisor.registry.store_adapter import ImageStoreAdapter

    return await service.pull({"reference": reference, **({"platform": str(platform)} if platform else {})},
                              store=ImageStoreAdapter(supervisor.images), root=supervisor.config.root,
                              options=service.options_for(supervisor.config.insecure_registries),
                              emit=supervisor.emit)


async def resolve_base(supervisor: Any, name: str, line: int, *, pull: bool, platform: Platform | None,
                       say, pulled: dict[str, str] | None = None) -> Any:
    """The image ``FROM name`` starts from: scratch, pulled (``pull``) or from the store,
    checked to be of ``platform`` when one was asked for. ``pulled`` (name -> image id) holds
    the bases this build pulled: each is pulled once, however many stages start from it.

    Raises:
        BuildError: not in the store (without ``pull``), or of another platform.
    """
    store = supervisor.images
    if name == SCRATCH:
        return await trio.to_thread.run_sync(scratch_image, store, platform or host_platform())
    pulled = {} if pulled is None else pulled
    if pull and name not in pulled:
        await say(f"Pulling {name}" + (f" for {platform}" if platform else "") + "\n")
        reply = await pull_base(supervisor, name, platform)
        await say(f"Digest: {reply['digest']}\n")
        pulled[name] = reply["image"]["id"]
    if pull:
        image = await trio.to_thread.run_sync(store.resolve, pulled[name])
    else:
        try:
            image = await trio.to_thread.run_sync(store.resolve, name)
        except NotFound as exc:
            raise BuildError(f"Dockerfile line {line}: FROM {name}: {exc} (pull or load it first, "
                             "or build with --pull)") from None
    if platform is not None:
        have = image_platform(image.document)
        if not same_platform(have, platform):
            where = ("the registry's image is" if pull else "the image in the store is")
            hint = "" if pull else f" (--pull fetches the {platform} image where its registry's image index offers it)"
            raise BuildError(f"Dockerfile line {line}: FROM {name}: {where} for {have}, not the requested "
                             f"{platform}{hint}")
    return image


def check_runnable(platform: Platform | None, line: int) -> None:
    """RUN needs an image this machine executes.

    Raises:
        BuildError: ``platform`` is not the host's.
    """
    host = host_platform()
    if platform is not None and not same_platform(host, platform):
        raise BuildError(f"Dockerfile line {line}: RUN cannot run for platform {platform} on this {host} machine "
                         "(no emulation: only COPY, ADD and config steps build a foreign image)")

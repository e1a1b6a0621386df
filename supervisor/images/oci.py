"""OCI and docker documents: media types, image configs, manifests, and the container
config changes of ``import -c`` / ``commit -c`` (a few Dockerfile instructions).

Pure functions: no files, no store."""

from __future__ import annotations

import copy
import json
import platform
import shlex
from typing import Any

from supervisor.errors import ImageError, InvalidArgument
from supervisor.images.layout import canonical_json, check_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYER_TYPES = {OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_LAYER_GZIP,
               "application/vnd.oci.image.layer.nondistributable.v1.tar",
               "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
               "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
               "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"}
MANIFEST_TYPES = {OCI_MANIFEST, DOCKER_MANIFEST}
INDEX_TYPES = {OCI_INDEX, DOCKER_MANIFEST_LIST}
REF_NAME = "org.opencontainers.image.ref.name"
CREATED = "org.opencontainers.image.created"
#: On an image's descriptor in the store's index.json: its repo digests, space-separated.
REPO_DIGESTS = "dev.dockyard.repo.digests"
CONTAINERD_NAME = "io.containerd.image.name"

CONFIG_KEYS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes", "Labels")
GOARCH = {
    "x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"
}


def host_architecture() -> str:
    return GOARCH.get(platform.machine(), platform.machine())


def container_config(changes: dict[str, Any] | None = None, base: dict[str, Any] | None = None,
                     operation: str = "import") -> dict[str, Any]:
    """An image's container config (docker's names) with ``changes`` applied, validated."""
    config: dict[str, Any] = {"Env": [], "Cmd": None, "Entrypoint": None, "WorkingDir": "", "User": ""}
    if base:
        config.update(copy.deepcopy(base))
    if changes is None:
        return config
    if not isinstance(changes, dict):
        raise InvalidArgument(f"{operation}: changes must be a map")
    unknown = sorted(set(changes) - set(CONFIG_KEYS))
    if unknown:
        raise InvalidArgument(f"{operation}: unknown config change(s) {', '.join(map(str, unknown))}")
    for key, value in changes.items():
        if key == "Volumes":
            if not isinstance(value, dict) or not all(isinstance(k, str) and k.startswith("/") for k in value):
                raise InvalidArgument(f"{operation}: change Volumes must be a map of absolute paths")
            config[key] = {**(config.get(key) or {}), **{k: {} for k in value}}
            continue
        if key == "Labels":
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                      for k, v in value.items()):
                raise InvalidArgument(f"{operation}: change Labels must map strings to strings")
            config[key] = {**(config.get(key) or {}), **value}
            continue
        if key == "ExposedPorts":
            if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
                raise InvalidArgument(f"{operation}: change ExposedPorts must be a map of PORT/PROTO")
            config[key] = {k: {} for k in value}
            continue
        if key in ("Env", "Cmd", "Entrypoint"):
            nullable = key != "Env"
            if value is None and nullable:
                config[key] = None
                continue
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise InvalidArgument(f"{operation}: change {key} must be a list of strings")
            if any("\x00" in v for v in value):
                raise InvalidArgument(f"{operation}: change {key} contains a NUL byte")
            if key == "Env" and any(not v.partition("=")[0] or "=" not in v for v in value):
                raise InvalidArgument(f"{operation}: change Env entries must be KEY=VALUE")
            config[key] = list(value)
        else:
            if not isinstance(value, str) or "\x00" in value:
                raise InvalidArgument(f"{operation}: change {key} must be a string")
            if key == "WorkingDir" and value and not value.startswith("/"):
                raise InvalidArgument(f"{operation}: change WorkingDir {value!r} is not an absolute path")
            config[key] = value
    return config


def parse_changes(instructions: list[str], env: list[str] | None = None, operation: str = "commit") -> dict[str, Any]:
    """Dockerfile instructions (``CMD``, ``ENTRYPOINT``, ``ENV``, ``EXPOSE``, ``LABEL``, ``VOLUME``,
    ``WORKDIR``, ``USER``) as
    given to ``-c``/``--change``, to config changes. ``env`` is the Env they add to.

    ``CMD ["a", "b"]`` is the exec form; ``CMD a b`` the shell form (``/bin/sh -c 'a b'``);
    ``ENV K=V [K2=V2 ...]`` or ``ENV K V``.
    """
    changes: dict[str, Any] = {}
    merged_env = dict(entry.split("=", 1) for entry in (env or []) if "=" in entry)
    for text in instructions:
        if not isinstance(text, str):
            raise InvalidArgument(f"{operation}: a change must be a string")
        keyword, _, rest = text.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword in ("CMD", "ENTRYPOINT"):
            key = "Cmd" if keyword == "CMD" else "Entrypoint"
            if rest.startswith("["):
                try:
                    value = json.loads(rest)
                except ValueError:
                    raise InvalidArgument(f"{operation}: change {text!r}: the exec form must be a JSON array") from None
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InvalidArgument(f"{operation}: change {text!r}: the exec form must be a JSON array of strings")
            elif rest:
                value = ["/bin/sh", "-c", rest]
            else:
                raise InvalidArgument(f"{operation}: change {text!r}: {keyword} needs a command")
            changes[key] = value
        elif keyword == "ENV":
            if not rest:
                raise InvalidArgument(f"{operation}: change {text!r}: ENV needs KEY=VALUE")
            first = rest.split(None, 1)[0]
            if "=" not in first:
                name, _, value = rest.partition(" ")
                merged_env[name] = value.strip()
            else:
                try:
                    words = shlex.split(rest)
                except ValueError as exc:
                    raise InvalidArgument(f"{operation}: change {text!r}: {exc}") from None
                for word in words:
                    name, eq, value = word.partition("=")
                    if not eq or not name:
                        raise InvalidArgument(f"{operation}: change {text!r}: {word!r} is not KEY=VALUE")
                    merged_env[name] = value
            changes["Env"] = [f"{k}={v}" for k, v in merged_env.items()]
        elif keyword == "EXPOSE":  # docker import -c "EXPOSE 80 53/udp": for run -P
            ports = dict(changes.get("ExposedPorts") or {})
            for word in rest.split():
                number, _, protocol = word.partition("/")
                if not number.isdigit() or not 0 < int(number) < 65536 or protocol not in ("", "tcp", "udp"):
                    raise InvalidArgument(f"{operation}: change {text!r}: {word!r} is not PORT[/tcp|/udp]")
                ports[f"{int(number)}/{protocol or 'tcp'}"] = {}
            if not ports:
                raise InvalidArgument(f"{operation}: change {text!r}: EXPOSE needs a port")
            changes["ExposedPorts"] = ports
        elif keyword == "VOLUME":  # docker commit -c "VOLUME /data": an anonymous volume at each start
            if rest.startswith("["):
                try:
                    paths = json.loads(rest)
                except ValueError:
                    paths = None
            else:
                paths = rest.split()
            if not paths or not isinstance(paths, list) or not all(isinstance(p, str) and p.startswith("/")
                                                                   for p in paths):
                raise InvalidArgument(f"{operation}: change {text!r}: VOLUME needs absolute paths")
            changes["Volumes"] = {**changes.get("Volumes", {}), **{path: {} for path in paths}}
        elif keyword == "LABEL":  # LABEL k=v [k2="v 2" ...], as ENV's KEY=VALUE form
            try:
                words = shlex.split(rest)
            except ValueError as exc:
                raise InvalidArgument(f"{operation}: change {text!r}: {exc}") from None
            labels = dict(changes.get("Labels") or {})
            for word in words:
                name, eq, value = word.partition("=")
                if not eq or not name:
                    raise InvalidArgument(f"{operation}: change {text!r}: {word!r} is not KEY=VALUE")
                labels[name] = value
            if not labels:
                raise InvalidArgument(f"{operation}: change {text!r}: LABEL needs KEY=VALUE")
            changes["Labels"] = labels
        elif keyword in ("WORKDIR", "USER"):
            if not rest:
                raise InvalidArgument(f"{operation}: change {text!r}: {keyword} needs a value")
            changes["WorkingDir" if keyword == "WORKDIR" else "User"] = rest
        else:
            raise InvalidArgument(
                f"{operation}: change {text!r}: unsupported instruction {keyword!r} "
                "(CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, VOLUME, WORKDIR and USER are)"
            )
    return changes


def image_config(diff_ids: list[str], config: dict[str, Any], *, architecture: str | None = None,
                 history: list[dict[str, Any]] | None = None, base: dict[str, Any] | None = None,
                 created: str | None = None, author: str | None = None) -> bytes:
    """The canonical image config JSON whose sha256 is the image id.

    Without ``created`` (an import) the config has no time, so the id is a function of the
    content: importing the same tar with the same changes gives the same image."""
    document = copy.deepcopy(base) if base else {}
    document.setdefault("architecture", architecture or host_architecture())
    document.setdefault("os", "linux")
    document["config"] = config
    document["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    if history is not None:
        document["history"] = history
    if created is not None:
        document["created"] = created
    if author:
        document["author"] = author
    return canonical_json(document)


def manifest(config_digest: str, config_size: int, layers: list[tuple[str, int]]) -> bytes:
    """An OCI manifest for a config and uncompressed layer blobs ``(digest, size)``."""
    return canonical_json({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest, "size": size} for digest, size in layers],
    })


def parse_config(data: bytes, what: str) -> dict[str, Any]:
    """An image config from an archive or registry, checked for the fields dockyard uses."""
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{what}: the image config is not JSON: {exc}", reason="config") from None
    if not isinstance(document, dict):
        raise ImageError(f"{what}: the image config is not an object", reason="config")
    rootfs = document.get("rootfs")
    if not isinstance(rootfs, dict) or not isinstance(rootfs.get("diff_ids"), list):
        raise ImageError(f"{what}: the image config has no rootfs.diff_ids", reason="config")
    for diff_id in rootfs["diff_ids"]:
        check_digest(diff_id, f"{what}: rootfs.diff_ids")
    if document.get("os", "linux") != "linux":
        raise ImageError(f"{what}: the image is for {document.get('os')!r}, not linux", reason="os")
    config = document.get("config")
    if config is not None and not isinstance(config, dict):
        raise ImageError(f"{what}: the image config's config is not an object", reason="config")
    return document


def parse_manifest(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{what}: the manifest is not JSON: {exc}", reason="manifest") from None
    if not isinstance(document, dict) or not isinstance(document.get("config"), dict) \
            or not isinstance(document.get("layers"), list):
        raise ImageError(f"{what}: not an image manifest", reason="manifest")
    for descriptor in [document["config"], *document["layers"]]:
        check_descriptor(descriptor, what)
    for layer in document["layers"]:
        if layer.get("mediaType") not in LAYER_TYPES:
            raise ImageError(f"{what}: unsupported layer media type {layer.get('mediaType')!r}", reason="media_type")
    return document


def check_descriptor(descriptor: Any, what: str) -> dict[str, Any]:
    if not isinstance(descriptor, dict):
        raise ImageError(f"{what}: a descriptor is not an object", reason="descriptor")
    check_digest(descriptor.get("digest"), what)
    size = descriptor.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{what}: descriptor {descriptor.get('digest')} has an invalid size {size!r}", reason="size")
    return descriptor

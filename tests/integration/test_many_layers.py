"""An image of more layers than mount(2)'s one page of overlay options holds (about 30 with
the store's paths; docker allows 125): the overlay is mounted through the new mount API,
one ``lowerdir+`` per layer (runtime/rootfs.py)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.rootfs import tar_bytes

pytestmark = pytest.mark.integration

LAYERS = 100


def layer_adding(name: str, content: bytes) -> bytes:
    info = tarfile.TarInfo(f"layers/{name}")
    info.mode = 0o644
    directory = tarfile.TarInfo("layers")
    directory.type = tarfile.DIRTYPE
    directory.mode = 0o755
    return tar_bytes([(directory, None), (info, content)])


def docker_archive(path: Path, base_layer: bytes, layers: list[bytes], tag: str) -> None:
    """A docker-archive (``docker save``'s format) of ``base_layer`` and ``layers`` on top."""
    all_layers = [base_layer, *layers]
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in all_layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"layer {index}"} for index in range(len(all_layers))],
    }).encode()
    members = [(f"{index}/layer.tar", layer) for index, layer in enumerate(all_layers)]
    manifest = [{"Config": "config.json", "RepoTags": [tag], "Layers": [name for name, _ in members]}]
    with tarfile.open(path, "w") as tar:
        for name, payload in [("config.json", config), *members, ("manifest.json", json.dumps(manifest).encode())]:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))


def test_an_image_of_100_layers_runs_and_sees_every_layer(daemon, tmp_path, busybox_tar):
    layers = [layer_adding(f"{index:03}", f"layer {index}\n".encode()) for index in range(1, LAYERS)]
    # a file that every layer overwrites: the top one must win
    layers = [tarfile_append(layer, "layers/top", f"{index}\n".encode()) for index, layer in enumerate(layers, 1)]
    archive = tmp_path / "many.tar"
    docker_archive(archive, busybox_tar.read_bytes(), layers, "many:layers")
    assert daemon.out("load", "-i", str(archive)) == "Loaded image: many:layers\n"
    inspect = json.loads(daemon.out("inspect", "many:layers"))[0]
    assert len(inspect["RootFS"]["Layers"]) == LAYERS

    output = daemon.out("run", "--rm", "many:layers", "sh", "-c", "ls /layers | grep -c '^[0-9]'; cat /layers/top; "
                        "cat /layers/001 /layers/099; echo written > /layers/new && cat /layers/new")
    assert output == f"{LAYERS - 1}\n{LAYERS - 1}\nlayer 1\nlayer 99\nwritten\n"
    # and a container that is not --rm (no volatile overlay) as well
    assert daemon.out("run", "--name", "kept", "many:layers", "cat", "/layers/050") == "layer 50\n"
    daemon.out("rm", "kept")


def tarfile_append(layer: bytes, name: str, content: bytes) -> bytes:
    """``layer`` with one more regular file."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = [(info, tar.extractfile(info).read() if info.isfile() else None) for info in tar.getmembers()]
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return tar_bytes([*members, (info, content)])

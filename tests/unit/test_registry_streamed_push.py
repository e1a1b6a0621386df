"""supervisor/registry/client.py's streamed upload and transfer.push of a
:class:`~supervisor.registry.layout.StreamedImage`: each layer compressed while it is sent
(POST, PATCH pieces with their Content-Range, PUT with the digest computed meanwhile), the
digest recorded so a second push compresses nothing. Against a small in-memory registry
served in-process on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import trio
import zstandard

from supervisor.registry import transfer
from supervisor.registry.options import Options
from supervisor.registry.pushlayout import COMPRESSIONS, BlobRecords, PushLayout, compress_file


class MemoryRegistry:
    """Blobs and manifests in dicts; uploads accept only PATCHes whose Content-Range
    continues the upload, and a PUT whose ``digest`` matches what was received."""

    def __init__(self):
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, bytes] = {}
        self.uploads: dict[str, bytearray] = {}
        self.requests: list[tuple[str, str]] = []
        self.patches: list[str] = []  # Content-Range of each PATCH
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def answer(self, status, headers=None, body=b""):
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if "Content-Length" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def body(self):
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def handle_one(self):
                url = urlparse(self.path)
                path, query = url.path, parse_qs(url.query)
                outer.requests.append((self.command, path))
                data = self.body()
                if path == "/v2/":
                    return self.answer(200, body=b"{}")
                if "/blobs/uploads/" in path:
                    upload = path.rpartition("/blobs/uploads/")[2]
                    if self.command == "POST":
                        upload = uuid.uuid4().hex
                        outer.uploads[upload] = bytearray()
                        return self.answer(202, {"Location": f"{path}{upload}"})
                    received = outer.uploads[upload]
                    if self.command == "PATCH":
                        start, _, end = self.headers["Content-Range"].partition("-")
                        if int(start) != len(received) or int(end) != len(received) + len(data) - 1:
                            return self.answer(416)
                        outer.patches.append(self.headers["Content-Range"])
                        received += data
                        return self.answer(202, {"Location": path})
                    received += data
                    digest = query["digest"][0]
                    if digest != "sha256:" + hashlib.sha256(received).hexdigest():
                        return self.answer(400, body=b'{"errors":[{"code":"DIGEST_INVALID","message":"bad"}]}')
                    outer.blobs[digest] = bytes(received)
                    return self.answer(201, {"Docker-Content-Digest": digest})
                if "/blobs/" in path:
                    digest = path.rpartition("/")[2]
                    if digest in outer.blobs:
                        return self.answer(200, {"Content-Length": str(len(outer.blobs[digest]))})
                    return self.answer(404)
                if "/manifests/" in path and self.command == "PUT":
                    digest = "sha256:" + hashlib.sha256(data).hexdigest()
                    outer.manifests[path.rpartition("/")[2]] = data
                    return self.answer(201, {"Docker-Content-Digest": digest})
                return self.answer(404)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry():
    server = MemoryRegistry()
    yield server
    server.close()


def put(store: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (store / digest.removeprefix("sha256:")).write_bytes(data)
    return digest


DECOMPRESS = {"gzip": gzip.decompress,
              "zstd": lambda data: zstandard.ZstdDecompressor().decompressobj().decompress(data)}


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_layers_are_compressed_while_uploaded_in_ranged_pieces_and_recorded(registry, tmp_path, compression):
    store = tmp_path / "store"
    store.mkdir()
    layers = [os.urandom(1_500_000) + b"compressible " * 20_000, b"another layer " * 50_000]
    diff_ids = [put(store, layer) for layer in layers]
    config = put(store, json.dumps({"rootfs": {"diff_ids": diff_ids}}).encode())
    manifest = put(store, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config,
                   "size": (store / config.removeprefix("sha256:")).stat().st_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": len(layer)}
                   for d, layer in zip(diff_ids, layers)],
    }).encode())
    records = BlobRecords(tmp_path / "records.json")
    opened: list[str] = []

    def open_layer(diff_id):
        opened.append(diff_id)
        return io.BytesIO((store / diff_id.removeprefix("sha256:")).read_bytes())

    def push(directory, host=registry.host):
        source = PushLayout(tmp_path / directory, records, lambda d: store / d.removeprefix("sha256:"),
                            open_layer=open_layer, compression=compression).streamed(manifest)
        return trio.run(lambda: transfer.push(source, f"{host}/app:1", options=Options(chunk_size=64 << 10)))

    first = push("one")
    assert sorted(opened) == sorted(diff_ids)
    assert any(not piece.startswith("0-") for piece in registry.patches)  # a layer sent in several pieces
    pushed = json.loads(registry.manifests["1"])
    for entry, diff_id, layer in zip(pushed["layers"], diff_ids, layers):
        blob = registry.blobs[entry["digest"]]
        assert entry["mediaType"] == f"application/vnd.oci.image.layer.v1.tar+{compression}"
        assert entry["size"] == len(blob) and DECOMPRESS[compression](blob) == layer
        # the same bytes as compressing to a file gives (deterministic gzip and zstd)
        check = compress_file(io.BytesIO(layer), tmp_path / "check", COMPRESSIONS[compression].compressor())
        assert check == (entry["digest"], entry["size"])
        assert records.compressed(diff_id, compression) == (entry["digest"], entry["size"])
        other = "zstd" if compression == "gzip" else "gzip"
        assert records.compressed(diff_id, other) is None  # each format has its records
    assert set(first.uploaded) == {config, *(entry["digest"] for entry in pushed["layers"])}
    assert first.bytes_uploaded == sum(len(registry.blobs[d]) for d in first.uploaded)

    opened.clear()
    registry.patches.clear()
    second = push("two")
    assert opened == [] and registry.patches == []  # the records name every layer: nothing compressed nor sent
    assert second.digest == first.digest and set(second.existed) == set(first.uploaded)

    # A registry without the blobs: the layers named from the records are compressed while
    # they are sent again (no file first), and checked to give the recorded digests.
    fresh = MemoryRegistry()
    try:
        opened.clear()
        third = push("three", fresh.host)
    finally:
        fresh.close()
    assert sorted(opened) == sorted(diff_ids) and fresh.patches
    assert third.digest == first.digest and fresh.blobs == registry.blobs
    layer_files = [tmp_path / "three" / "blobs" / "sha256" / entry["digest"].removeprefix("sha256:")
                   for entry in pushed["layers"]]
    assert not any(path.exists() for path in layer_files)  # streamed, never written to a file


def test_a_failing_layer_is_named_with_the_registry_and_nothing_is_recorded(registry, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    diff_id = put(store, b"layer " * 1000)
    config = put(store, b"{}")
    manifest = put(store, json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": diff_id, "size": 6000}],
    }).encode())
    records = BlobRecords(tmp_path / "records.json")

    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def read(self, size=-1):
            raise OSError("the layer's files cannot be read")

    source = PushLayout(tmp_path / "one", records, lambda d: store / d.removeprefix("sha256:"),
                        open_layer=lambda d: Broken()).streamed(manifest)
    with pytest.raises(Exception) as caught:
        trio.run(lambda: transfer.push(source, f"{registry.host}/app:1"))
    message = str(caught.value)
    assert diff_id in message and registry.host in message and "cannot be read" in message
    assert records.compressed(diff_id) is None and registry.manifests == {}


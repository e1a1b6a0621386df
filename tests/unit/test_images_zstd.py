"""zstd layers: the frame walk, the reader (truncation, corruption, windows), the
deterministic compressor, and zstd layers through extraction and a store's stage."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile

import pytest
import zstandard

from supervisor.errors import ImageError
from supervisor.images.store import ImageStore
from supervisor.images.tarsafe import extract
from supervisor.images.zstd import BLOCK, MAX_WINDOW, FrameWalker, ZstdCompressor, ZstdReader, ZstdStreamError
from tests.rootfs import snapshot, tar_bytes

OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DATA = os.urandom(3000) + b"some text, repeated. " * 20000 + bytes(200000)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def skippable(payload: bytes) -> bytes:
    return (0x184D2A53).to_bytes(4, "little") + len(payload).to_bytes(4, "little") + payload


def read_all(stream) -> bytes:
    out = []
    while chunk := stream.read(65536):
        out.append(chunk)
    return b"".join(out)


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    info.mtime = 1_600_000_000
    return info, data


STREAMS = {
    "one frame": lambda: zstandard.ZstdCompressor(level=3).compress(DATA),
    "checksum and no size": lambda: (lambda c: c.compress(DATA) + c.flush())(
        zstandard.ZstdCompressor(level=1, write_checksum=True, write_content_size=False).compressobj()),
    "frames and a skippable frame": lambda: (zstandard.ZstdCompressor(level=1).compress(DATA[:1000])
                                             + skippable(b"a table of contents")
                                             + zstandard.ZstdCompressor(level=19).compress(DATA[1000:])),
    "ours": lambda: (lambda c: c.feed(DATA) + c.finish())(ZstdCompressor()),
}


@pytest.mark.parametrize("kind", STREAMS)
def test_reader_gives_the_data_and_the_walker_sees_every_frame_end(kind):
    stream = STREAMS[kind]()
    walker = FrameWalker()
    for start in range(0, len(stream), 999):  # pieces that cut fields and blocks anywhere
        walker.feed(stream[start:start + 999])
    assert walker.complete
    assert read_all(ZstdReader(io.BytesIO(stream))) == DATA


def test_a_stream_cut_anywhere_but_at_a_frame_end_is_refused():
    first = zstandard.ZstdCompressor(level=1).compress(b"first frame " * 50)
    second = skippable(b"skip me")
    third = zstandard.ZstdCompressor(level=1, write_checksum=True).compress(os.urandom(700) + b"x" * 3000)
    stream = first + second + third
    accepted = []
    for cut in range(1, len(stream) + 1):
        try:
            read_all(ZstdReader(io.BytesIO(stream[:cut])))
            accepted.append(cut)
        except ZstdStreamError as exc:
            assert "truncated zstd stream" in str(exc)
    assert accepted == [len(first), len(first + second), len(stream)]


def test_trailing_garbage_reserved_bits_and_corruption_are_refused():
    frame = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(DATA)
    with pytest.raises(ZstdStreamError, match="after the last zstd frame"):
        read_all(ZstdReader(io.BytesIO(frame + b"garbage!")))
    with pytest.raises(ZstdStreamError, match="reserved bit"):
        FrameWalker().feed(frame[:4] + bytes([frame[4] | 0x08]) + frame[5:])
    corrupt = bytearray(frame)
    corrupt[len(corrupt) // 2] ^= 0x55
    with pytest.raises(ZstdStreamError, match="corrupt zstd stream"):
        read_all(ZstdReader(io.BytesIO(bytes(corrupt))))


def test_a_frame_asking_for_a_window_over_the_limit_is_refused():
    parameters = zstandard.ZstdCompressionParameters.from_level(3, window_log=28)
    compressor = zstandard.ZstdCompressor(compression_params=parameters).compressobj()
    frame = compressor.compress(os.urandom(1 << 20)) + compressor.flush()
    with pytest.raises(ZstdStreamError, match=f"larger than {MAX_WINDOW >> 20} MiB"):
        read_all(ZstdReader(io.BytesIO(frame)))
    assert read_all(ZstdReader(io.BytesIO(frame), max_window=1 << 28))  # the control: allowed, it reads


def test_compressor_output_depends_on_the_input_alone():
    data = os.urandom(BLOCK // 2) + b"abc" * BLOCK
    whole = ZstdCompressor()
    expected = whole.feed(data) + whole.finish()
    for piece in (1000, 4096, 100_003, BLOCK, 3 * BLOCK):
        fed = ZstdCompressor()
        out = b"".join(fed.feed(data[start:start + piece]) for start in range(0, len(data), piece))
        assert out + fed.finish() == expected
    assert zstandard.ZstdDecompressor().decompressobj().decompress(expected) == data
    params = zstandard.get_frame_parameters(expected)
    assert params.has_checksum and params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert len(expected) < len(data) // 2


# --- through extraction and the store ---------------------------------------------------------


def test_extract_undoes_zstd_and_the_diff_id_is_the_plain_tars(tmp_path):
    plain = tar_bytes([member("etc/motd", b"hello zstd\n"), member("big", DATA)])
    report = extract(io.BytesIO(zstandard.ZstdCompressor(level=3).compress(plain)), tmp_path)
    assert report.diff_id == sha(plain) and report.size == len(plain)
    assert (tmp_path / "etc" / "motd").read_bytes() == b"hello zstd\n"


def test_a_zstd_bomb_is_refused_before_it_is_written(tmp_path):
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    info = tarfile.TarInfo("zeros")  # a tar header, then a huge file of zeros
    info.size = 1 << 30
    bomb = compressor.compress(info.tobuf(format=tarfile.PAX_FORMAT))
    for _ in range(1 << 10):  # 1 GiB of zeros, a few kB compressed
        bomb += compressor.compress(bytes(1 << 20))
    bomb += compressor.flush()
    assert len(bomb) < 1 << 20
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ImageError, match="decompression bomb"):
        extract(io.BytesIO(bomb), dest, bomb_floor=16 << 20)
    assert (dest / "zeros").stat().st_size <= 32 << 20  # stopped early: nothing like 1 GiB written


def test_a_zstd_layer_is_verified_and_recorded_and_a_bad_one_leaves_nothing(tmp_path):
    store = ImageStore(tmp_path / "root")
    plain = tar_bytes([member("etc/motd", b"from a zstd layer\n")])
    packed = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(plain)
    with store.stage() as stage:
        layer = stage.add_layer(io.BytesIO(packed), parent=None, diff_id=sha(plain), digest=sha(packed),
                                size=len(packed), media_type=OCI_LAYER_ZSTD, what="layer L")
        assert layer.diff_id == sha(plain)
        recorded = (stage.layers_dir / layer.chain_id.removeprefix("sha256:") / "layer.json").read_text()
        assert OCI_LAYER_ZSTD in recorded and sha(packed) in recorded
    corrupt = bytearray(packed)
    corrupt[len(corrupt) // 2] ^= 0x55
    cases = {"corrupt": (bytes(corrupt), "corrupt zstd stream"),
             "truncated": (packed[:-6], "truncated zstd stream"),
             "diff id": (zstandard.ZstdCompressor().compress(tar_bytes([member("other", b"x")])), "diff id")}
    before = snapshot(store.dir)
    for name, (data, message) in cases.items():
        with store.stage() as stage:
            with pytest.raises(ImageError, match=message) as caught:
                stage.add_layer(io.BytesIO(data), parent=None, diff_id=sha(plain), media_type=OCI_LAYER_ZSTD,
                                what="image x from r: layer sha256:abc")
            assert caught.value.message.startswith("image x from r: layer sha256:abc: "), (name, caught.value.message)
        assert snapshot(store.dir) == before, name
    assert os.listdir(store.tmp_dir) == []

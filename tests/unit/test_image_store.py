"""The minimal image store: import, list, resolve, tags, and all-or-nothing imports."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import stat
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest

from supervisor.errors import Conflict, ImageError, InvalidArgument, NotFound
from supervisor.images import index as index_module
from supervisor.images.store import ImageStore, container_config, image_config
from tests.rootfs import BUSYBOX, snapshot, tar_bytes

START = 1_700_000_000.0


class StepClock:
    """A clock that moves one second per reading."""

    def __init__(self, start: float = START):
        self._times = itertools.count(start)

    def __call__(self) -> float:
        return next(self._times)


def small_tar(content: bytes = b"hello") -> bytes:
    info = tarfile.TarInfo("etc/content")
    info.mode = 0o644
    info.mtime = 1_600_000_000
    return tar_bytes([(info, content)])


def diff_id(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


@pytest.fixture
def store(root) -> ImageStore:
    return ImageStore(root, clock=StepClock())


def import_bytes(store: ImageStore, data: bytes, reference: str, **kwargs):
    return store.import_tar(io.BytesIO(data), reference, **kwargs)


# --- import, list, resolve ----------------------------------------------------------------


def test_busybox_rootfs_imports_lists_and_resolves(store, root, busybox_tar):
    with open(busybox_tar, "rb") as source:
        image = store.import_tar(source, "base")
    data = busybox_tar.read_bytes()

    assert re.fullmatch("[0-9a-f]{64}", image.id)
    assert image.repo_tags == ("base:latest",)
    assert image.size == len(data)
    assert image.diff_ids == (diff_id(data),)
    assert image.config == {"Env": [], "Cmd": None, "Entrypoint": None, "WorkingDir": "", "User": ""}
    assert len(image.layers) == 1 and os.path.isabs(image.layers[0])
    layer = Path(image.layers[0])
    assert (layer / "bin" / "busybox").read_bytes() == Path(BUSYBOX).read_bytes()
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    assert stat.S_IMODE((layer / "tmp").lstat().st_mode) == 0o1777

    # The id is the sha256 of the stored config, which names the layer by its diff id.
    config_path = root / "images" / "blobs" / "sha256" / image.id
    assert hashlib.sha256(config_path.read_bytes()).hexdigest() == image.id
    assert json.loads(config_path.read_bytes())["rootfs"] == {"type": "layers", "diff_ids": [diff_id(data)]}

    assert store.list() == [image]
    for ref in ("base", "base:latest", image.id, f"sha256:{image.id}", image.id[:12], image.id[:3]):
        assert store.resolve(ref) == image, ref
    assert list((root / "images" / "tmp").iterdir()) == []


def test_to_inspect_is_docker_shaped(store):
    image = import_bytes(store, small_tar(), "app:v1", changes={"Cmd": ["/bin/sh"]})
    inspected = image.to_inspect()
    assert inspected["Os"] == "linux" and inspected["Metadata"]["ManifestDigest"] == image.manifest
    assert {key: inspected[key] for key in ("Id", "RepoTags", "Created", "Size", "Config", "RootFS")} == {
        "Id": f"sha256:{image.id}",
        "RepoTags": ["app:v1"],
        "Created": "2023-11-14T22:13:20.000000Z",
        "Size": len(small_tar()),
        "Config": {"Env": [], "Cmd": ["/bin/sh"], "Entrypoint": None, "WorkingDir": "", "User": ""},
        "RootFS": {"Type": "layers", "Layers": [diff_id(small_tar())]},
    }


def test_created_is_rfc3339_utc_from_the_clock(root):
    store = ImageStore(root, clock=lambda: 0.5)
    assert import_bytes(store, small_tar(), "a").created == "1970-01-01T00:00:00.500000Z"


def test_gzip_stream_from_a_pipe_imports(store, busybox_tar):
    compressor = subprocess.Popen(["gzip", "-c", str(busybox_tar)], stdout=subprocess.PIPE)
    try:
        image = store.import_tar(compressor.stdout, "zipped")
    finally:
        compressor.stdout.close()
        compressor.wait(timeout=30)
    assert image.diff_ids == (diff_id(busybox_tar.read_bytes()),)
    assert (Path(image.layers[0]) / "bin" / "busybox").read_bytes() == Path(BUSYBOX).read_bytes()


def test_changes_are_applied_and_change_the_id(store):
    plain = import_bytes(store, small_tar(), "plain")
    changed = import_bytes(
        store,
        small_tar(),
        "changed",
        changes={"Env": ["A=1"], "Cmd": ["run"], "Entrypoint": ["/init"], "WorkingDir": "/srv", "User": "app"},
    )
    assert changed.config == {
        "Env": ["A=1"], "Cmd": ["run"], "Entrypoint": ["/init"], "WorkingDir": "/srv", "User": "app"
    }
    assert changed.id != plain.id
    assert changed.layers == plain.layers  # one unpacked layer, shared


@pytest.mark.parametrize(
    "changes",
    [
        {"Volumes": {"relative": {}}},  # VOLUME takes absolute paths only
        {"Healthcheck": {}},  # not a change import or commit takes
        {"Env": "A=1"},
        {"Env": ["no-equals"]},
        {"Cmd": "sh"},
        {"Cmd": [1]},
        {"WorkingDir": "relative"},
        {"User": 0},
        {"Env": ["A=\x00"]},
    ],
)
def test_bad_changes_are_refused_before_reading_the_tar(store, changes):
    class Unread:
        def read(self, size=-1):
            raise AssertionError("the tar must not be read")

    with pytest.raises(InvalidArgument):
        store.import_tar(Unread(), "x", changes=changes)
    assert store.list() == []


# --- references -----------------------------------------------------------------------


def test_import_with_a_bad_reference_changes_nothing(store, root):
    before = snapshot(root)
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        import_bytes(store, small_tar(), "Bad:Ref:")
    assert snapshot(root) == before


def test_resolve_errors(store):
    image = import_bytes(store, small_tar(), "base")
    with pytest.raises(NotFound, match="no such image: nope"):
        store.resolve("nope")
    with pytest.raises(NotFound, match="no such image: base:v2"):
        store.resolve("base:v2")
    with pytest.raises(NotFound):
        store.resolve(image.id[:2])  # below the minimum prefix
    other_id = ("0" if image.id[0] != "0" else "1") + image.id[1:]
    with pytest.raises(NotFound, match=f"no such image: sha256:{other_id}"):
        store.resolve(f"sha256:{other_id}")
    with pytest.raises(InvalidArgument, match="invalid reference format"):
        store.resolve("Not A Ref")
    with pytest.raises(InvalidArgument):
        store.resolve("sha256:xyz")


def test_ambiguous_id_prefix_is_a_conflict(root):
    # Find two configs whose ids share a 3-digit prefix (pure functions, no imports needed).
    store = ImageStore(root, clock=lambda: 0.5)  # an import's config carries the time
    layer = diff_id(small_tar())
    when = "1970-01-01T00:00:00.500000Z"
    history = [{"created": when, "created_by": "", "comment": "Imported from -"}]
    seen: dict[str, int] = {}
    for n in itertools.count():
        config = image_config([layer], container_config({"Env": [f"N={n}"]}), history=history, created=when)
        prefix = hashlib.sha256(config).hexdigest()[:3]
        if prefix in seen:
            first, second = seen[prefix], n
            break
        seen[prefix] = n
    one = import_bytes(store, small_tar(), "one", changes={"Env": [f"N={first}"]})
    two = import_bytes(store, small_tar(), "two", changes={"Env": [f"N={second}"]})
    assert one.id[:3] == two.id[:3] == prefix
    with pytest.raises(Conflict, match="ambiguous"):
        store.resolve(prefix)
    common = os.path.commonprefix([one.id, two.id])
    assert store.resolve(one.id[: len(common) + 1]) == one


def test_a_tag_wins_over_an_id_prefix(store):
    image = import_bytes(store, small_tar(b"a"), "first")
    prefix = image.id[:4]  # lowercase hex is also a valid repository name
    named = import_bytes(store, small_tar(b"b"), prefix)
    assert store.resolve(prefix) == named != image
    assert store.resolve(image.id[:5]) == image


# --- tags -------------------------------------------------------------------------------


def test_reimport_moves_the_tag_and_leaves_the_old_image_dangling(store):
    old = import_bytes(store, small_tar(b"old"), "base")
    store.tag("base", "base:v1")
    new = import_bytes(store, small_tar(b"new"), "base")
    assert store.resolve("base") == new
    assert store.resolve(old.id).repo_tags == ("base:v1",)
    import_bytes(store, small_tar(b"newer"), "base:v1")
    dangling = store.resolve(old.id)
    assert dangling.repo_tags == ()
    assert dangling.to_inspect()["RepoTags"] == []
    assert old.id in {image.id for image in store.list()}


def test_each_import_is_an_image_of_its_own_that_shares_the_layer(store):
    first = import_bytes(store, small_tar(), "a")
    second = import_bytes(store, small_tar(), "b")
    assert second.id != first.id  # as docker: the config carries the time of the import
    assert (first.repo_tags, second.repo_tags) == (("a:latest",), ("b:latest",))
    assert second.diff_ids == first.diff_ids and second.layers == first.layers
    assert len(store.list()) == 2
    assert len(os.listdir(Path(first.layers[0]).parent.parent)) == 1


def test_an_import_has_a_history_entry_for_its_layer_as_docker(root):
    store = ImageStore(root, clock=lambda: 0.5)
    image = import_bytes(store, small_tar(), "a")
    assert image.document["created"] == "1970-01-01T00:00:00.500000Z"
    assert image.document["history"] == [
        {"created": "1970-01-01T00:00:00.500000Z", "created_by": "", "comment": "Imported from -"}]
    assert store.history("a") == [{"id": image.id, "created": "1970-01-01T00:00:00.500000Z", "created_by": "",
                                   "size": len(small_tar()), "comment": "Imported from -"}]
    told = import_bytes(store, small_tar(), "b", message="from the build server")
    assert [row["comment"] for row in store.history("b")] == ["from the build server"]


def test_list_is_newest_first(store):
    a = import_bytes(store, small_tar(b"a"), "a")
    b = import_bytes(store, small_tar(b"b"), "b")
    assert [image.id for image in store.list()] == [b.id, a.id]


def test_tag_and_remove(store, root):
    shared = small_tar(b"shared")
    image = import_bytes(store, shared, "base")
    store.tag(image.id[:8], "base:v1")
    assert store.resolve("base:v1").repo_tags == ("base:latest", "base:v1")
    with pytest.raises(Conflict, match="several tags"):
        store.remove(image.id)
    assert store.remove("base:v1") == [{"Untagged": "base:v1"}]
    other = import_bytes(store, shared, "other", changes={"Cmd": ["x"]})  # same layer
    assert store.remove("base") == [{"Untagged": "base:latest"}, {"Deleted": f"sha256:{image.id}"}]
    with pytest.raises(NotFound):
        store.resolve(image.id)
    assert Path(other.layers[0]).is_dir()  # still used by "other"
    store.remove("other")
    assert store.list() == []
    assert not Path(other.layers[0]).exists()
    images_dir = root / "images"
    assert [os.listdir(images_dir / d) for d in ("blobs/sha256", "layers", "tmp")] == [[], [], []]


# --- all or nothing -----------------------------------------------------------------------


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    return (info, data)


def _symlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return (info, None)


def _hardlink(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE
    info.linkname = target
    return (info, None)


class FailingSource(io.RawIOBase):
    """A source whose read fails with EIO after ``limit`` bytes (a dying disk or network)."""

    def __init__(self, data: bytes, limit: int):
        self._data = io.BytesIO(data)
        self._limit = limit

    def readable(self):
        return True

    def read(self, size=-1):
        if self._data.tell() >= self._limit:
            raise OSError(errno.EIO, "Input/output error")
        return self._data.read(min(size, self._limit - self._data.tell()) if size >= 0 else self._limit)


def _bad_sources(tmp_path: Path, rootfs: bytes) -> dict[str, object]:
    # The store extracts into root/images/tmp/import-*/layer/diff: six ".." reach tmp_path.
    up = "../../../../../.."
    plain_with_payload = tar_bytes([_file("etc/ok"), *[_file(f"f{i}", b"y" * 10000) for i in range(5)]])
    packed = gzip.compress(rootfs, compresslevel=1)
    return {
        "dotdot": tar_bytes([_file("etc/ok"), _file(f"{up}/escaped")]),
        "abs-dotdot": tar_bytes([_file("/abs/../../x")]),
        "symlink-abs-then-write": tar_bytes([_symlink("evil", str(tmp_path / "outside")), _file("evil/pwned")]),
        "symlink-up-then-write": tar_bytes([_symlink("evil", up), _file("evil/pwned")]),
        "hardlink-etc-passwd": tar_bytes([_hardlink("passwd", "/etc/passwd")]),
        "hardlink-outside": tar_bytes([_hardlink("link", f"{up}/outside/sentinel")]),
        "truncated-tar": rootfs[: len(rootfs) // 2],
        "truncated-gzip": packed[: len(packed) // 2],
        "source-read-error": FailingSource(plain_with_payload, len(plain_with_payload) // 2),
    }


@pytest.mark.parametrize(
    "case",
    ["dotdot", "abs-dotdot", "symlink-abs-then-write", "symlink-up-then-write", "hardlink-etc-passwd",
     "hardlink-outside", "truncated-tar", "truncated-gzip", "source-read-error"],
)
def test_failed_import_leaves_the_store_and_everything_else_unchanged(tmp_path, busybox_tar, case):
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "sentinel").write_text("sentinel")
    store = ImageStore(tmp_path / "root", clock=StepClock())
    base = import_bytes(store, small_tar(), "base")
    listed = store.list()
    before = snapshot(tmp_path)
    source = _bad_sources(tmp_path, busybox_tar.read_bytes())[case]
    fileobj = source if not isinstance(source, bytes) else io.BytesIO(source)

    with pytest.raises(ImageError):
        store.import_tar(fileobj, "base")  # would move the tag if it succeeded

    assert snapshot(tmp_path) == before
    assert store.list() == listed
    assert store.resolve("base") == base
    assert os.listdir(tmp_path / "root" / "images" / "tmp") == []


def test_failure_at_the_commit_rolls_back_the_layer_and_config(tmp_path, monkeypatch):
    store = ImageStore(tmp_path / "root", clock=StepClock())
    import_bytes(store, small_tar(b"a"), "base")
    before = snapshot(tmp_path)
    real_write = index_module.write_atomic

    def disk_full_on_index(path, payload, **kwargs):
        if path.name == "index.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(path, payload, **kwargs)

    monkeypatch.setattr(index_module, "write_atomic", disk_full_on_index)
    with pytest.raises(OSError, match="No space left"):
        import_bytes(store, small_tar(b"b"), "base")
    assert snapshot(tmp_path) == before

    monkeypatch.undo()
    image = import_bytes(store, small_tar(b"b"), "base")  # and the store still works
    assert store.resolve("base") == image


def test_concurrent_imports_keep_every_tag(store, root):
    references = [f"app{n}:v{n}" for n in range(12)]
    contents = [small_tar(str(n % 4).encode()) for n in range(12)]  # some share a layer
    barrier = threading.Barrier(len(references))
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def run(reference, data):
        try:
            barrier.wait(timeout=30)
            results[reference] = import_bytes(store, data, reference).id
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=pair) for pair in zip(references, contents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    for reference in references:
        assert store.resolve(reference).id == results[reference]
    assert len(store.list()) == 12 and len({image.layers for image in store.list()}) == 4
    assert os.listdir(root / "images" / "tmp") == []
    reopened = ImageStore(root)
    assert reopened.list() == store.list()


def test_reopen_keeps_images_and_sweeps_leftovers(root):
    store = ImageStore(root, clock=StepClock())
    image = import_bytes(store, small_tar(), "base")
    images_dir = root / "images"
    (images_dir / "tmp" / "import-crashed" / "layer" / "diff").mkdir(parents=True)
    (images_dir / "layers" / ("e" * 64) / "diff").mkdir(parents=True)  # renamed in, never indexed
    (images_dir / "blobs" / "sha256" / ("d" * 64)).write_text("{}")  # written, never indexed

    reopened = ImageStore(root)
    assert reopened.list() == [image]
    assert os.listdir(images_dir / "tmp") == []
    assert os.listdir(images_dir / "layers") == [image.diff_ids[0].removeprefix("sha256:")]
    manifest = json.loads((images_dir / "blobs" / "sha256" / image.manifest.removeprefix("sha256:")).read_bytes())
    assert manifest["layers"] and all(l["digest"] in image.diff_ids for l in manifest["layers"])
    live = {image.id, image.manifest.removeprefix("sha256:")}  # no layer blob: layers are kept unpacked
    assert set(os.listdir(images_dir / "blobs" / "sha256")) == live


def test_rmi_refuses_while_containers_use_the_image_and_force_untags_but_keeps_it(store):
    image = import_bytes(store, small_tar(b"used"), "used")
    store.tag("used", "used:v2")
    stopped = lambda image_id: [("web", False)] if image_id == image.id else []
    running = lambda image_id: [("web", True)] if image_id == image.id else []
    with pytest.raises(Conflict, match="several tags"):
        store.remove(image.id, users=stopped)
    with pytest.raises(Conflict, match="used by running container web"):
        store.remove(image.id, force=True, users=running)
    assert store.remove(image.id, force=True, users=stopped) == [
        {"Untagged": "used:latest"}, {"Untagged": "used:v2"}]
    assert store.resolve(image.id).repo_tags == ()  # dangling, kept for "web"
    assert store.remove(image.id) == [{"Deleted": f"sha256:{image.id}"}]

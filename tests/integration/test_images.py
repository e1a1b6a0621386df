"""Images end to end through the real CLI: commit, diff, run from the committed image,
rmi, export/import, cp, save/load with podman and skopeo, umoci and skopeo reading the
store, and hostile archives."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import os
import shutil
import subprocess
import tarfile
import threading
from pathlib import Path

import pytest
import zstandard

from tests.polling import wait_until
from tests.rootfs import snapshot, tar_bytes
from tests.tools import require

pytestmark = pytest.mark.integration

#: What the first container does to the busybox image (a deleted file from the image,
#: a deleted-and-remade directory, a changed file, and new entries of every kind).
CHANGES = (
    "echo new > /added && chown 1000:1000 /added && chmod 4751 /added && touch -d @1600000000 /added"
    " && ln /added /hard && ln -s /added /soft && mkfifo /fifo"
    " && echo changed >> /etc/passwd && rm /bin/vi"
    " && rm -rf /home && mkdir -p /home/fresh && echo inside > /home/fresh/file"
)
#: Prints what a container sees of those changes (and of the deletions).
SHOW = (
    "stat -c '%n %a %u %g %h %Y %F' /added /hard /fifo /home/fresh/file; readlink /soft;"
    " tail -1 /etc/passwd; ls /home; test -e /bin/vi || echo no-vi"
)
DIFF = """\
A /added
C /bin
D /bin/vi
C /etc
C /etc/passwd
A /fifo
A /hard
C /home
D /home/app
A /home/fresh
A /home/fresh/file
A /soft
"""


def podman(tmp_path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """podman on the store in ``tmp_path`` (vfs: no mounts left behind)."""
    command = ["podman", "--root", str(tmp_path / "root"), "--runroot", str(tmp_path / "run"),
               "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none", *args]
    result = subprocess.run(command, capture_output=True, timeout=120)
    if check:
        assert result.returncode == 0, f"{' '.join(args)}: {result.stderr.decode()}"
    return result


def podman_run(tmp_path: Path, image: str, *command: str) -> str:
    return podman(tmp_path, "run", "--rm", "--cgroup-parent", f"/{tmp_path.name}", "--runtime", "runc", "--network", "none", "--ulimit", "nofile=1024:1024",
                  "--ulimit", "nproc=4096:4096", image, *command).stdout.decode()


def test_diff_commit_and_run_from_the_committed_image(daemon):
    daemon.out("run", "--name", "first", "base", "sh", "-c", CHANGES)
    assert daemon.out("diff", "first") == DIFF
    original = daemon.out("run", "--rm", "--entrypoint", "", "base", "true")  # the base is untouched
    assert original == ""

    image_id = daemon.out("commit", "-m", "my changes", "-a", "Jane", "first", "mine:1").strip()
    assert image_id.startswith("sha256:")
    inspect = json.loads(daemon.out("inspect", "mine:1"))[0]
    assert inspect["Id"] == image_id and inspect["Author"] == "Jane" and inspect["Comment"] == "my changes"
    assert len(inspect["RootFS"]["Layers"]) == 2

    shown = daemon.out("run", "--rm", "mine:1", "sh", "-c", SHOW).splitlines()
    assert shown == [
        "/added 4751 1000 1000 2 1600000000 regular file",
        "/hard 4751 1000 1000 2 1600000000 regular file",
        "/fifo 644 0 0 1 " + shown[2].split()[5] + " fifo",
        "/home/fresh/file 644 0 0 1 " + shown[3].split()[5] + " regular file",
        "/added",
        "changed",
        "fresh",  # /home was deleted and made again: /home/app stays deleted
        "no-vi",
    ]
    # A second commit on top: deleting a file that lives two layers down.
    daemon.out("run", "--name", "second", "mine:1", "sh", "-c", "rm /added /bin/ls && mkdir /home/app2")
    assert daemon.out("diff", "second") == "D /added\nC /bin\nD /bin/ls\nC /home\nA /home/app2\n"
    daemon.out("commit", "-c", "CMD [\"sh\", \"-c\", \"ls /home; test -e /added || echo gone\"]", "second", "mine:2")
    assert daemon.out("run", "--rm", "mine:2").split() == ["app2", "fresh", "gone"]
    history = daemon.out("history", "mine:2").splitlines()
    top = json.loads(daemon.out("inspect", "mine:2"))[0]["Id"][7:19]
    assert len(history) == 4 and history[1].split()[0] == top and history[3].startswith("<missing>")
    assert "my changes" in history[2]


def test_a_running_container_can_be_committed_and_the_config_is_honoured(daemon):
    container = daemon.out("run", "-d", "-e", "GREETING=hi", "-w", "/home/app", "-u", "app", "base", "sh", "-c",
                           "echo $GREETING > out; sleep 1000").strip()
    for _ in range(200):  # the payload writes its file right after it starts
        if "A /home/app/out" in daemon.out("diff", container):
            break
    daemon.out("commit", "-c", "ENTRYPOINT [\"sh\", \"-c\"]", "-c", "CMD [\"pwd; id -u; echo $GREETING; cat out\"]",
               container, "running:1")
    assert daemon.out("run", "--rm", "running:1").split() == ["/home/app", "1000", "hi", "hi"]
    # -w, -u, -e and --entrypoint override the image's config, as in docker
    assert daemon.out("run", "--rm", "-w", "/", "-u", "0", "-e", "GREETING=yo", "running:1",
                      "pwd; id -u; echo $GREETING").split() == ["/", "0", "yo"]
    assert daemon.out("run", "--rm", "--entrypoint", "echo", "running:1", "plain").strip() == "plain"
    daemon.out("rm", "-f", container)


def test_rmi_refuses_while_a_container_uses_the_image_and_keeps_shared_layers(daemon):
    daemon.out("run", "--name", "user", "base", "sh", "-c", "echo x > /x")
    daemon.out("commit", "user", "child:1")
    daemon.out("tag", "base", "alias:1")
    refused = daemon.cli("rmi", "base")
    assert refused.returncode == 0 and refused.stdout.decode() == "Untagged: base:latest\n"  # another tag is left
    refused = daemon.cli("rmi", "alias:1")
    assert refused.returncode == 1 and b"used by container user" in refused.stderr
    assert daemon.out("run", "--rm", "child:1", "cat", "/x").strip() == "x"
    forced = daemon.out("rmi", "-f", "alias:1")
    assert forced == "Untagged: alias:1\n"  # untagged; kept while "user" needs it
    daemon.out("rm", "user")
    base = daemon.out("images", "-a", "-q", "--no-trunc", "--filter", "dangling=true").split()
    assert base[0] not in daemon.out("images", "-q", "--no-trunc")  # the untagged base is child:1's parent
    removed = daemon.out("rmi", "--no-prune", "child:1")
    assert removed.count("Deleted: sha256:") == 1
    assert daemon.out("images", "-q", "--no-trunc").split() == base  # kept, and listed: dangling now
    daemon.out("commit", daemon.out("create", base[0][7:], "true").strip(), "child:1")
    daemon.out("rm", "-f", daemon.out("ps", "-aq").split()[0])
    removed = daemon.out("rmi", "child:1")  # and its untagged parent with it, as docker's rmi does
    assert removed.count("Deleted: sha256:") == 2 and f"Deleted: {base[0]}" in removed, removed
    assert daemon.cli("run", "--rm", "child:1", "true").returncode == 125
    events = daemon.out("events", "--since", "5m", "--until", "0s", "--filter", "type=image").splitlines()
    actions = [line.split()[2] for line in events]
    assert actions.count("tag") == 1 and "untag" in actions and actions[-1] == "delete"


def test_export_import_and_cp_both_ways(daemon, tmp_path):
    container = daemon.out("run", "-d", "base", "sh", "-c", "mkdir /data && echo one > /data/a && sleep 1000").strip()
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "in.txt").write_text("from the host")
    for _ in range(200):
        if "A /data/a" in daemon.out("diff", container):
            break
    daemon.out("cp", str(tmp_path / "host" / "in.txt"), f"{container}:/data/")  # running: via its mount
    daemon.out("cp", f"{container}:/data", str(tmp_path / "copy"))
    assert sorted(os.listdir(tmp_path / "copy")) == ["a", "in.txt"]
    assert (tmp_path / "copy" / "in.txt").read_text() == "from the host"
    daemon.out("rm", "-f", container)

    stopped = daemon.out("create", "base", "cat", "/etc/extra/note", "/bin/vi").strip()
    (tmp_path / "host" / "extra").mkdir()
    (tmp_path / "host" / "extra" / "note").write_text("note")
    daemon.out("cp", str(tmp_path / "host" / "extra"), f"{stopped}:/etc/")  # stopped: into its upper dir
    daemon.out("cp", str(tmp_path / "host" / "in.txt"), f"{stopped}:/bin/vi")  # replaces a file of the image
    assert daemon.out("start", stopped) and daemon.out("wait", stopped).strip() == "0"
    assert daemon.out("diff", stopped) == "C /bin\nC /bin/vi\nC /etc\nA /etc/extra\nA /etc/extra/note\n"
    assert daemon.cli("cp", str(tmp_path / "nope"), f"{stopped}:/").returncode == 1
    assert b"no such file" in daemon.cli("cp", f"{stopped}:/nope", str(tmp_path / "x")).stderr

    exported = tmp_path / "fs.tar"
    daemon.out("export", "-o", str(exported), stopped)
    with tarfile.open(exported) as tar:
        names = set(tar.getnames())
    assert {"etc/extra/note", "bin/busybox", "bin/vi"} <= names
    daemon.out("import", str(exported), "flat:1")
    assert daemon.out("run", "--rm", "flat:1", "cat", "/etc/extra/note", "/bin/vi") == "notefrom the host"


def test_save_is_loaded_by_podman_and_read_by_skopeo(daemon, tmp_path, podman_dir):
    require("skopeo")
    daemon.out("run", "--name", "maker", "base", "sh", "-c", "rm /bin/vi && echo saved > /saved")
    daemon.out("commit", "-c", "CMD [\"cat\", \"/saved\"]", "maker", "dyk/saved:1")
    archive = tmp_path / "saved.tar"
    daemon.out("save", "-o", str(archive), "dyk/saved:1")
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True,
                                          check=True).stdout)
    assert len(inspected["Layers"]) == 2
    assert "Loaded image: localhost/dyk/saved:1" in podman(podman_dir, "load", "-i", str(archive)).stdout.decode()
    assert podman_run(podman_dir, "localhost/dyk/saved:1") == "saved\n"
    assert podman_run(podman_dir, "localhost/dyk/saved:1", "sh", "-c", "test -e /bin/vi || echo gone") == "gone\n"
    # and save to standard output
    assert daemon.cli("save", "dyk/saved:1").stdout == archive.read_bytes()


def test_podman_save_in_both_formats_loads_and_runs(daemon, tmp_path, busybox_tar, podman_dir):
    podman(podman_dir, "import", "--change", "CMD [\"echo\", \"from podman\"]", str(busybox_tar), "pod/made:1")
    for form in ("docker-archive", "oci-archive"):
        archive = tmp_path / f"{form}.tar"
        podman(podman_dir, "save", "--format", form, "-o", str(archive), "localhost/pod/made:1")
        packed = tmp_path / f"{form}.tar.gz"
        packed.write_bytes(gzip.compress(archive.read_bytes(), compresslevel=1))
        loaded = daemon.out("load", "-i", str(packed)) if form == "oci-archive" else \
            daemon.out("load", input=packed.read_bytes())  # from standard input
        assert loaded == "Loaded image: localhost/pod/made:1\n", form
        assert daemon.out("run", "--rm", "localhost/pod/made:1") == "from podman\n"
        daemon.out("rmi", "localhost/pod/made:1")


def test_oci_tools_read_the_store_layout(daemon):
    require("skopeo", "umoci")
    layout = daemon.root / "images"
    daemon.out("tag", "base", "tools:1")
    inspected = json.loads(subprocess.run(["skopeo", "inspect", f"oci:{layout}:tools:1"], capture_output=True,
                                          check=True).stdout)
    assert inspected["Os"] == "linux" and len(inspected["Layers"]) == 1
    listed = subprocess.run(["umoci", "ls", "--layout", str(layout)], capture_output=True, check=True).stdout.split()
    assert sorted(listed) == [b"base:latest", b"tools:1"]
    stat = subprocess.run(["umoci", "stat", "--image", f"{layout}:tools:1"], capture_output=True)
    assert stat.returncode == 0, stat.stderr


def hostile_tars(tmp_path: Path) -> dict[str, bytes]:
    def entry(name, kind=tarfile.REGTYPE, data=b"x", link=""):
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        return info, (data if kind == tarfile.REGTYPE else None)

    return {
        "dotdot": tar_bytes([entry("../../escaped")]),
        "absolute": tar_bytes([entry("/../../../escaped")]),
        "symlink-out-then-write": tar_bytes([entry("evil", tarfile.SYMTYPE, link=str(tmp_path / "outside")),
                                             entry("evil/pwned")]),
        "hardlink-out": tar_bytes([entry("link", tarfile.LNKTYPE, link="/etc/passwd")]),
        "device": tar_bytes([entry("dev/sda", tarfile.BLKTYPE), entry("ok")]),  # skipped, not refused
        "truncated": gzip.compress(tar_bytes([entry("big", data=os.urandom(100000))]))[:50000],
        "bomb": bz2.compress(b"\0" * (8 << 20)) * 64,  # 512 MiB of zeros from a few kB
        "zstd-bomb": zstd_zeros(512 << 20),  # 512 MiB of zeros from a few kB
        "zstd-truncated": zstandard.ZstdCompressor().compress(tar_bytes([entry("big", data=os.urandom(100000))]))[:50000],
    }


def zstd_zeros(size: int) -> bytes:
    compressor = zstandard.ZstdCompressor(level=3).compressobj()
    chunks = [compressor.compress(bytes(1 << 20)) for _ in range(size >> 20)]
    return b"".join(chunks) + compressor.flush()


def test_hostile_archives_are_refused_with_the_member_named_and_change_nothing(daemon, tmp_path):
    (tmp_path / "outside").mkdir()
    images_before = daemon.out("images", "-q")
    store = daemon.root / "images"
    before = snapshot(store)
    for case, data in hostile_tars(tmp_path).items():
        path = tmp_path / f"{case}.tar"
        path.write_bytes(data)
        result = daemon.cli("import", str(path), f"{case}:1")
        error = result.stderr.decode()
        if case == "device":
            assert result.returncode == 0, error
            daemon.out("rmi", "device:1")
            continue
        assert result.returncode == 1, case
        expected = {"dotdot": "'../../escaped'", "absolute": "escaped", "symlink-out-then-write": "'evil/pwned'",
                    "hardlink-out": "'link'", "truncated": "truncated", "bomb": "decompression bomb",
                    "zstd-bomb": "decompression bomb", "zstd-truncated": "truncated zstd stream"}[case]
        assert expected in error, (case, error)
        loaded = daemon.cli("load", "-i", str(path))
        assert loaded.returncode == 1, case
    assert os.listdir(tmp_path / "outside") == []
    assert not (tmp_path / "escaped").exists()
    assert daemon.out("images", "-q") == images_before
    assert snapshot(store) == before
    shutil.rmtree(tmp_path / "outside")


def test_load_prints_only_the_tags_the_archive_named(daemon, tmp_path):
    daemon.out("tag", "base", "extra:1")  # another tag of the same image, not in the archive
    archive = tmp_path / "base.tar"
    daemon.out("save", "-o", str(archive), "base")
    assert daemon.out("load", "-i", str(archive)) == "Loaded image: base:latest\n"
    daemon.out("save", "-o", str(archive), json.loads(daemon.out("inspect", "base"))[0]["Id"])
    assert daemon.out("load", "-i", str(archive)).startswith("Loaded image ID: sha256:")
    daemon.out("rmi", "extra:1")


def test_an_imported_image_has_a_history_entry_for_its_layer_as_docker(daemon, busybox_tar):
    image_id = daemon.out("import", str(busybox_tar), "imported:1").strip()
    header, row = daemon.out("history", "imported:1").splitlines()
    assert header.split()[:2] == ["IMAGE", "CREATED"]
    assert row.split()[0] == image_id[7:19] and row.endswith("Imported from -") and " ago " in row
    assert daemon.out("history", "-q", "imported:1").split() == [image_id[7:19]]
    daemon.out("import", "-m", "nightly build", "-", "imported:2", input=busybox_tar.read_bytes())
    assert daemon.out("history", "imported:2").splitlines()[1].endswith("nightly build")
    layout = daemon.root / "images"
    stat = subprocess.run(["umoci", "stat", "--image", f"{layout}:imported:2"], capture_output=True)
    assert stat.returncode == 0 and b"nightly build" in stat.stdout, stat.stderr
    daemon.out("rmi", "imported:1", "imported:2")


# --- a container that races the daemon's walks of its files (issue 25) ----------------------

RENAME_EXCHANGE = 2
_AT_FDCWD = -100
PAIRS = 4


class Exchanger:
    """Swaps pairs of names in a directory in a tight loop with renameat2(RENAME_EXCHANGE),
    from a host thread, until stopped. Run on a container's upper dir, this is what a process
    in the container swapping its own files looks like to the daemon walking that directory
    (the CVE-2018-15664 attack), only faster than a busybox shell could do it."""

    def __init__(self, directory: Path, pairs: list[tuple[str, str]]):
        import ctypes

        self._libc = ctypes.CDLL(None, use_errno=True)
        self._pairs = [(os.fsencode(str(directory / a)), os.fsencode(str(directory / b))) for a, b in pairs]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.swaps = 0

    def _run(self) -> None:
        renameat2, pairs, stop = self._libc.renameat2, self._pairs, self._stop
        while not stop.is_set():
            for _ in range(100):
                for first, second in pairs:
                    assert renameat2(_AT_FDCWD, first, _AT_FDCWD, second, RENAME_EXCHANGE) == 0
            self.swaps += 100 * len(pairs)

    def __enter__(self) -> Exchanger:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        assert self._thread is not None
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def racing_container(daemon, tmp_path: Path) -> tuple[str, Path, Exchanger, str]:
    """A running container with directories /data/sub<N> and symlinks /data/link<N> to a host
    directory that holds a marker file; returns (its id, the host directory, an Exchanger of
    each pair in its upper dir, the marker's secret)."""
    secret = f"host-secret-{os.urandom(8).hex()}"
    host = tmp_path / "host-only"
    host.mkdir()
    (host / secret).write_text(secret * 64)
    made = " && ".join(f"mkdir /data/sub{n} && echo inside > /data/sub{n}/inside && ln -s {host} /data/link{n}"
                       for n in range(PAIRS))
    container = daemon.out("run", "-d", "base", "sh", "-c", f"mkdir /data && {made} && sleep 1000").strip()
    data = daemon.root / "containers" / container / "upper" / "data"
    wait_until(lambda: (data / f"link{PAIRS - 1}").is_symlink(), "the container's files")
    return container, host, Exchanger(data, [(f"sub{n}", f"link{n}") for n in range(PAIRS)]), secret


def members_of(archive: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {member.name: member for member in tar}


def test_cp_export_diff_and_commit_never_read_the_host_through_a_racing_container(daemon, tmp_path):
    container, _, exchanger, secret = racing_container(daemon, tmp_path)
    swapped = {"cp": 0, "export": 0}  # walks that met a /data/sub<N> as the symlink
    with exchanger:
        for _ in range(40):
            copied = daemon.cli("cp", f"{container}:/data", "-")
            assert copied.returncode == 0, copied.stderr.decode()
            assert secret.encode() not in copied.stdout
            swapped["cp"] += any(members_of(copied.stdout)[f"data/sub{n}"].issym() for n in range(PAIRS))
        for _ in range(15):
            exported = daemon.cli("export", container)
            assert exported.returncode == 0, exported.stderr.decode()
            assert secret.encode() not in exported.stdout
            swapped["export"] += any(members_of(exported.stdout)[f"data/sub{n}"].issym() for n in range(PAIRS))
            diff = daemon.cli("diff", container)
            assert diff.returncode == 0 and secret.encode() not in diff.stdout, diff.stderr.decode()
        for number in range(15):
            committed = daemon.cli("commit", container, f"raced:{number}")
            assert committed.returncode == 0, committed.stderr.decode()
    # The race was on: walks met the symlink where a directory had been, and took it as a symlink.
    assert exchanger.swaps > 0 and swapped["cp"] > 0 and swapped["export"] > 0, swapped
    for directory, _, files in os.walk(daemon.root / "images"):
        for name in files:
            path = Path(directory, name)
            assert secret not in name, path
            if path.is_file() and not path.is_symlink():
                assert secret.encode() not in path.read_bytes(), path
    daemon.out("rm", "-f", container)


def test_cp_into_a_racing_container_never_writes_to_the_host(daemon, tmp_path):
    container, host, exchanger, _ = racing_container(daemon, tmp_path)
    payload = tmp_path / f"payload-{os.urandom(4).hex()}"
    payload.write_text("from the host")
    outcomes: dict[str, int] = {}
    for state in ("running", "stopped"):
        if state == "stopped":
            daemon.out("stop", "-t", "0", container)
        with exchanger:
            for attempt in range(30):
                result = daemon.cli("cp", str(payload), f"{container}:/data/sub{attempt % PAIRS}/")
                error = result.stderr.decode()
                # Through the swapped symlink the target is not a directory in the container,
                # or it changed between look-up and copy: a clear error, never an internal one.
                assert result.returncode == 0 or ("internal" not in error
                                                  and ("changed while" in error or "not a directory" in error)), error
                outcomes[f"{state} {result.returncode}"] = outcomes.get(f"{state} {result.returncode}", 0) + 1
                assert not (host / payload.name).exists(), (state, attempt)
    assert outcomes.get("running 0") and outcomes.get("stopped 0"), outcomes  # copies did land in the container
    daemon.out("rm", "-f", container)


class Churner:
    """Makes and removes files in a directory in a tight loop from a host thread, about a
    hundred there at any instant, each removed soon after it was made: names that a walk lists
    and then finds gone."""

    def __init__(self, directory: Path):
        self._directory = directory
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        paths = [self._directory / f"f{n:03}" for n in range(400)]
        step = 0
        while not self._stop.is_set():
            paths[step % len(paths)].write_bytes(b"x" * 100)
            if step >= 100:
                paths[(step - 100) % len(paths)].unlink()
            step += 1

    def __enter__(self) -> Churner:
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def test_files_that_vanish_mid_walk_are_skipped_with_a_warning_never_an_error(daemon, tmp_path):
    container = daemon.out("run", "-d", "base", "sh", "-c", "mkdir /churn && sleep 1000").strip()
    churn = daemon.root / "containers" / container / "upper" / "churn"
    wait_until(churn.is_dir, "the container's /churn")
    operations = {
        "cp": ["cp", f"{container}:/churn", "-"], "export": ["export", container], "diff": ["diff", container],
        "commit": ["commit", container, "churned:1"],
    }
    warned = set()
    with Churner(churn):
        for _ in range(200):  # until each operation has met a vanished file
            for operation, command in operations.items():
                if operation in warned:
                    continue
                result = daemon.cli(*command)
                assert result.returncode == 0, (operation, result.stderr.decode())
                if b"dockyard: warning: /churn/f" in result.stderr:
                    assert b"vanished while it was read: skipped" in result.stderr, result.stderr
                    warned.add(operation)
            if len(warned) == len(operations):
                break
    assert warned == set(operations), f"no file vanished under {set(operations) - warned} in 200 tries"
    assert "files changed while they were read" in daemon.log()
    daemon.out("rm", "-f", container)

"""``dockyard daemon --userns-remap`` on the real kernel (docs/security.md, "User
namespaces"): the container's root is the mapped uid on the host, the image layers are
idmapped (not copied per container), named volumes belong to the mapped root, ``--userns
host`` opts out, exec and cp work under the mapping.

The subordinate ids come from the test's own files (``--subuid-file``, ``--subgid-file``),
so nothing of the host's /etc changes; the mapping is nobody's (65534), from 300000.
The daemon's root must be reachable by the mapped root (dockerd asks the same): pytest's
tmp dirs are 0700, so the daemon lives in a directory of its own, 0711, under /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, private_daemon

pytestmark = pytest.mark.integration

BASE_UID = 300000
COUNT = 65536


@pytest.fixture
def remap_base() -> Iterator[Path]:
    if not ROOT:
        pytest.skip("needs root")
    base = Path(tempfile.mkdtemp(prefix="dockyard-userns-", dir="/tmp"))
    base.chmod(0o711)
    (base / "subuid").write_text(f"65534:{BASE_UID}:{COUNT}\n")
    (base / "subgid").write_text(f"65534:{BASE_UID}:{COUNT}\n")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def remap_args(base: Path, *more: str) -> tuple[str, ...]:
    return ("--userns-remap", "65534:65534", "--subuid-file", str(base / "subuid"),
            "--subgid-file", str(base / "subgid"), *more)


@pytest.fixture
def remapped(remap_base, busybox_tar):
    with private_daemon(remap_base / "d", busybox_tar, *remap_args(remap_base)) as instance:
        yield instance


def host_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of a process as the host sees them."""
    status = Path(f"/proc/{pid}/status").read_text()
    uid = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1]
    gid = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1]
    return int(uid), int(gid)


def host_pid_of(cmdline: bytes) -> int:
    """The host pid of the one process with this command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == cmdline:
                    found.append(int(entry.name))
            except OSError:
                continue
    assert len(found) == 1, found
    return found[0]


def inspect(daemon, name: str) -> dict:
    return json.loads(daemon.out("inspect", name))[0]


def test_container_root_is_the_mapped_uid_on_the_host(remapped):
    remapped.out("run", "-d", "--name", "web", "base", "sleep", "300")
    pid = inspect(remapped, "web")["State"]["Pid"]
    assert host_ids(pid) == (BASE_UID, BASE_UID)
    # Inside, it is root, with its files (the image's, owned by host uid 0 on disk) its own.
    assert remapped.out("exec", "web", "id", "-u").strip() == "0"
    assert remapped.out("exec", "web", "stat", "-c", "%u:%g", "/bin/busybox").strip() == "0:0"
    assert remapped.out("exec", "web", "cat", "/proc/self/uid_map").split() == ["0", str(BASE_UID), str(COUNT)]
    # An exec joins the user namespace: the mapped uid on the host too.
    remapped.out("exec", "-d", "web", "sleep", "301")
    assert host_ids(host_pid_of(b"sleep\x00301\x00")) == (BASE_UID, BASE_UID)
    info = json.loads(remapped.out("info"))
    assert "name=userns" in info["SecurityOptions"]
    assert info["userns"]["root"] == f"{BASE_UID}:{BASE_UID}"
    assert info["userns"]["layers"] == "idmapped mounts", info["userns"]
    remapped.out("rm", "-f", "web")


def test_files_written_belong_to_the_mapped_root(remapped):
    remapped.out("volume", "create", "data")
    remapped.out("run", "--name", "writer", "-v", "data:/data", "base", "sh", "-c",
                 "touch /data/made /made-in-layer && chown 1000:1000 /data/made && echo ok > /data/root-file")
    volume = Path(json.loads(remapped.out("volume", "inspect", "data"))[0]["Mountpoint"])
    assert (volume.stat().st_uid, volume.stat().st_gid) == (BASE_UID, BASE_UID)
    assert (volume / "root-file").stat().st_uid == BASE_UID
    made = (volume / "made").stat()
    assert (made.st_uid, made.st_gid) == (BASE_UID + 1000, BASE_UID + 1000)
    upper = Path(inspect(remapped, "writer")["GraphDriver"]["Data"]["UpperDir"])
    assert upper.stat().st_uid == BASE_UID
    assert (upper / "made-in-layer").stat().st_uid == BASE_UID
    remapped.out("rm", "writer")
    remapped.out("volume", "rm", "data")


def test_layers_are_idmapped_not_copied(remapped):
    remapped.out("run", "-d", "--name", "one", "base", "sleep", "300")
    pid = inspect(remapped, "one")["State"]["Pid"]
    image_layers = inspect(remapped, "one")["GraphDriver"]["Data"]["LowerDir"].split(":")
    mountinfo = Path(f"/proc/{pid}/mountinfo").read_text()
    overlay = next(line for line in mountinfo.splitlines() if " - overlay " in line)
    for layer in image_layers:
        assert layer in overlay  # the image store's own directories, not copies
    assert not (remapped.root / "userns").exists() or not any((remapped.root / "userns").rglob("layers/*"))
    # The layer on disk still belongs to the host's root: nothing was chowned.
    assert Path(image_layers[-1], "bin", "busybox").stat().st_uid == 0
    remapped.out("rm", "-f", "one")


def test_userns_host_opts_out(remapped):
    remapped.out("run", "-d", "--name", "plain", "--userns", "host", "base", "sleep", "300")
    pid = inspect(remapped, "plain")["State"]["Pid"]
    assert host_ids(pid) == (0, 0)
    assert inspect(remapped, "plain")["HostConfig"]["UsernsMode"] == "host"
    assert remapped.out("exec", "plain", "cat", "/proc/self/uid_map").split() == ["0", "0", "4294967295"]
    remapped.out("rm", "-f", "plain")


def test_cp_both_ways_under_the_mapping(remapped, tmp_path):
    remapped.out("run", "-d", "--name", "copier", "base", "sleep", "300")
    source = tmp_path / "in.txt"
    source.write_text("hello\n")
    remapped.out("cp", str(source), "copier:/root/in.txt")
    # Copied in as the container's root: it may write the file, and it is its own.
    assert remapped.out("exec", "copier", "stat", "-c", "%u:%g", "/root/in.txt").strip() == "0:0"
    remapped.out("exec", "copier", "sh", "-c", "echo more >> /root/in.txt && touch /root/out.txt")
    remapped.out("cp", "copier:/root/out.txt", str(tmp_path / "out.txt"))
    assert (tmp_path / "out.txt").exists()
    archive = remapped.cli("cp", "copier:/root/out.txt", "-").stdout
    import io
    import tarfile

    member = tarfile.open(fileobj=io.BytesIO(archive)).getmembers()[0]
    assert (member.uid, member.gid) == (0, 0)  # the container's ids, not the host's
    # A commit keeps the container's ids too: unmapped, its root's file is root's.
    remapped.out("commit", "copier", "copied:1")
    assert remapped.out("run", "--rm", "--userns", "host", "copied:1", "stat", "-c", "%u:%g",
                        "/root/out.txt").strip() == "0:0"
    remapped.out("rm", "-f", "copier")


def test_a_start_under_another_mapping_is_refused(remap_base, busybox_tar):
    base = remap_base / "d"
    with private_daemon(base, busybox_tar, *remap_args(remap_base)) as first:
        first.out("create", "--name", "kept", "base", "true")
    with private_daemon(base, busybox_tar) as second:  # the same root, no --userns-remap
        result = second.cli("start", "kept")
        assert result.returncode != 0
        assert "created with --userns-remap" in result.stderr.decode()
        second.out("rm", "kept")


def test_chowned_copies_when_idmapped_mounts_are_not_used(remap_base, busybox_tar):
    with private_daemon(remap_base / "d", busybox_tar, *remap_args(remap_base, "--userns-layers", "copy")) as daemon:
        info = json.loads(daemon.out("info"))
        assert info["userns"]["layers"] == "chowned copies"
        daemon.out("run", "-d", "--name", "one", "base", "sleep", "300")
        daemon.out("run", "-d", "--name", "two", "base", "sleep", "300")
        pid = inspect(daemon, "one")["State"]["Pid"]
        assert host_ids(pid) == (BASE_UID, BASE_UID)
        assert daemon.out("exec", "one", "stat", "-c", "%u:%g", "/bin/busybox").strip() == "0:0"
        assert daemon.out("exec", "two", "touch", "/bin/written").strip() == ""
        # One copy per mapping and layer, shared by both containers, owned by the mapped root.
        copies = sorted((daemon.root / "userns" / f"{BASE_UID}.{BASE_UID}" / "layers").iterdir())
        image_layers = inspect(daemon, "one")["GraphDriver"]["Data"]["LowerDir"].split(":")
        assert len(copies) == len(image_layers)
        assert (copies[0] / "bin" / "busybox").stat().st_uid == BASE_UID
        for name in ("one", "two"):
            mountinfo = Path(f"/proc/{inspect(daemon, name)['State']['Pid']}/mountinfo").read_text()
            assert str(copies[0]) in mountinfo
        daemon.out("rm", "-f", "one", "two")


def test_host_network_devices_copy_up_and_privileged_under_the_mapping(remapped):
    # --network host: not the container's network namespace (its /sys is the host's, bound).
    assert "lo" in remapped.out("run", "--rm", "--network", "host", "base", "ls", "/sys/class/net").split()
    remapped.out("run", "-d", "--name", "peer", "base", "sleep", "300")
    joined = remapped.out("run", "--rm", "--network", "container:peer", "base", "ip", "-o", "link")
    assert "eth0" in joined
    remapped.out("rm", "-f", "peer")
    # A --device node is a bind mount of the host's (mknod is refused in a user namespace).
    assert remapped.out("run", "--rm", "--device", "/dev/null:/dev/mynull", "base", "sh", "-c",
                        "echo x > /dev/mynull && echo written").strip() == "written"
    # An empty volume over an image directory gets the image's files, owned by the mapped ids.
    remapped.out("run", "--rm", "-v", "cfg:/etc", "base", "cat", "/etc/passwd")
    volume = Path(json.loads(remapped.out("volume", "inspect", "cfg"))[0]["Mountpoint"])
    assert (volume / "passwd").stat().st_uid == BASE_UID
    remapped.out("volume", "rm", "cfg")
    # --privileged: every capability, in the user namespace only.
    output = remapped.out("run", "--rm", "--privileged", "base", "sh", "-c",
                          "grep CapEff /proc/self/status; cat /proc/self/uid_map")
    assert output.split()[2:] == ["0", str(BASE_UID), str(COUNT)]
    assert int(output.split()[1], 16) != 0


def test_the_other_defaults_still_apply_under_the_mapping(remapped):
    script = ("grep Seccomp: /proc/self/status; wc -c < /proc/keys; cat /proc/sys/net/ipv4/ip_forward; "
              "echo > /proc/sys/kernel/hostname 2>/dev/null || echo read-only; cat; echo done")
    remapped.out("run", "-d", "-i", "--name", "checks", "--memory", "64m", "--sysctl", "net.ipv4.ip_forward=1",
                 "--tmpfs", "/run", "--read-only", "base", "sh", "-c", script)
    container_id = inspect(remapped, "checks")["Id"]
    limit = Path("/sys/fs/cgroup/memory", remapped.cgroup_parent, container_id, "memory.limit_in_bytes")
    assert int(limit.read_text()) == 64 << 20
    result = remapped.cli("attach", "checks", input=b"from-stdin\n")  # attach: stdin in, output out
    assert result.returncode == 0, result.stderr
    lines = remapped.out("logs", "checks").split("\n")
    assert lines[:6] == ["Seccomp:\t2", "0", "1", "read-only", "from-stdin", "done"], lines
    remapped.out("rm", "checks")

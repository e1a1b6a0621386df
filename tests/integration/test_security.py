"""The security defaults and options of issue 18 on the real kernel (docs/security.md): the
default seccomp profile refuses what docker's refuses, the capability and privilege flags
open exactly what they name, setuid works unless no-new-privileges.

The busybox image has no tool for most syscalls: ``probe.c`` beside this file is built
static with gcc (scripts/setup.sh installs it) and added to an image of its own, with a
setuid-root copy. It prints 0 or the errno of one syscall made with harmless arguments.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, private_daemon
from tests.rootfs import build_rootfs
from tests.tools import require

pytestmark = pytest.mark.integration

PROBE_SOURCE = Path(__file__).with_name("probe.c")
UNCONFINED = ("--security-opt", "seccomp=unconfined")

#: probe -> (its errno in a default container, the flags that let it through as docker does).
#: Let through, the kernel answers itself (0, or EINVAL/ENOENT/ENOSYS for the harmless
#: arguments the probe passes), never EPERM.
REFUSED = {
    "unshare-user": (errno.EPERM, UNCONFINED),
    "clone-user": (errno.EPERM, UNCONFINED),
    "mount": (errno.EPERM, ("--cap-add", "SYS_ADMIN")),
    "keyctl": (errno.EPERM, UNCONFINED),
    "add-key": (errno.EPERM, UNCONFINED),
    "bpf": (errno.EPERM, ("--cap-add", "SYS_ADMIN")),
    "perf-event-open": (errno.EPERM, ("--cap-add", "PERFMON")),
    "userfaultfd": (errno.EPERM, UNCONFINED),
    "io-uring-setup": (errno.ENOSYS, UNCONFINED),
    "open-by-handle-at": (errno.EPERM, ("--cap-add", "DAC_READ_SEARCH")),
    "kexec-load": (errno.EPERM, (*UNCONFINED, "--cap-add", "SYS_BOOT")),
    "init-module": (errno.EPERM, ("--cap-add", "SYS_MODULE")),
    "clock-settime": (errno.EPERM, ("--cap-add", "SYS_TIME")),
    "swapon": (errno.EPERM, (*UNCONFINED, "--cap-add", "SYS_ADMIN")),
    "reboot": (errno.EPERM, ("--cap-add", "SYS_BOOT")),
}


@pytest.fixture(scope="module")
def probe_tar(tmp_path_factory) -> Path:
    """An image tar: busybox, /bin/probe, and /bin/suid-probe (setuid root)."""
    require("busybox", "gcc")
    directory = tmp_path_factory.mktemp("probe")
    rootfs = build_rootfs(directory / "rootfs")
    subprocess.run(["gcc", "-static", "-O2", "-o", str(rootfs / "bin" / "probe"), str(PROBE_SOURCE)], check=True)
    shutil.copy2(rootfs / "bin" / "probe", rootfs / "bin" / "suid-probe")
    os.chown(rootfs / "bin" / "suid-probe", 0, 0)
    os.chmod(rootfs / "bin" / "suid-probe", 0o4755)
    target = directory / "probe.tar"
    with tarfile.open(target, "w") as tar:
        for entry in sorted(rootfs.iterdir()):
            tar.add(entry, arcname=entry.name)
    return target


@pytest.fixture(scope="module")
def secure(tmp_path_factory, busybox_tar, probe_tar):
    """One daemon for the module, with the busybox image as `base` and the probe image as `probe`."""
    if not ROOT:
        pytest.skip("needs root")
    with private_daemon(tmp_path_factory.mktemp("daemon"), busybox_tar) as instance:
        instance.out("import", str(probe_tar), "probe")
        yield instance


def probe(daemon, names, *flags: str) -> dict[str, int]:
    """Run the probes ``names`` in one container started with ``flags``: probe -> errno (0: allowed)."""
    script = "; ".join(f"echo {name} $(probe {name})" for name in names)
    output = daemon.out("run", "--rm", *flags, "probe", "sh", "-c", script)
    return {name: int(value) for name, value in (line.split() for line in output.splitlines())}


def status(daemon, *flags: str) -> dict[str, str]:
    text = daemon.out("run", "--rm", *flags, "base", "cat", "/proc/self/status")
    return {key: value.strip() for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def test_a_default_container_has_the_seccomp_filter_and_no_no_new_privs(secure):
    fields = status(secure)
    assert fields["Seccomp"] == "2"
    assert fields["NoNewPrivs"] == "0"
    assert secure.out("run", "--rm", "base", "grep", "Seccomp:", "/proc/self/status").split() == ["Seccomp:", "2"]


def test_the_default_profile_refuses_what_docker_refuses(secure):
    found = probe(secure, REFUSED)
    assert found == {name: expected for name, (expected, _) in REFUSED.items()}


def test_busybox_unshare_of_a_user_namespace_is_not_permitted(secure):
    refused = secure.cli("run", "--rm", "base", "unshare", "-U", "true")
    assert refused.returncode != 0 and b"Operation not permitted" in refused.stderr
    assert secure.cli("run", "--rm", *UNCONFINED, "base", "unshare", "-U", "true").returncode == 0
    # The user namespace, then a mount inside it: what the profile is there to stop.
    nested = ("unshare", "-U", "-r", "-m", "mount", "-t", "tmpfs", "none", "/tmp")
    assert secure.cli("run", "--rm", "base", *nested).returncode != 0
    assert secure.cli("run", "--rm", *UNCONFINED, "base", *nested).returncode == 0


@pytest.mark.parametrize("flags", sorted({flags for _, flags in REFUSED.values()}))
def test_each_refusal_is_lifted_by_its_flags_as_in_docker(secure, flags):
    names = [name for name, (_, given) in REFUSED.items() if given == flags]
    found = probe(secure, names, *flags)
    assert all(found[name] != errno.EPERM for name in names), found


def test_a_process_outside_the_container_cannot_be_traced(secure):
    outside = secure.process.pid  # the daemon: not in the container's pid namespace
    found = secure.out("run", "--rm", "probe", "probe", "ptrace", str(outside))
    assert int(found) in (errno.ESRCH, errno.EPERM)


def test_setuid_works_unless_no_new_privileges(secure):
    assert secure.out("run", "--rm", "-u", "nobody", "probe", "suid-probe", "euid").strip() == "0"
    kept = secure.out("run", "--rm", "-u", "nobody", "--security-opt", "no-new-privileges", "probe",
                      "suid-probe", "euid")
    assert kept.strip() == "65534"
    fields = status(secure, "--security-opt", "no-new-privileges=true")
    assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2"


def test_unconfined_and_privileged_have_no_filter(secure):
    assert status(secure, *UNCONFINED)["Seccomp"] == "0"
    privileged = status(secure, "--privileged")
    assert privileged["Seccomp"] == "0"
    assert int(privileged["CapEff"], 16) == int(Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0], 16)


def test_privileged_can_add_a_link_mount_and_see_unmasked_paths(secure):
    script = ("ip link add dy0 type bridge && ip link show dy0 >/dev/null && mount -t tmpfs none /mnt "
              "&& echo 1 > /proc/sys/net/ipv4/ip_forward && test -e /dev/kmsg && echo ok")
    assert secure.out("run", "--rm", "--privileged", "base", "sh", "-c", f"mkdir -p /mnt; {script}").strip() == "ok"
    denied = secure.cli("run", "--rm", "base", "sh", "-c", "ip link add dy0 type bridge")
    assert denied.returncode != 0


def test_cap_drop_all_and_cap_add(secure):
    assert int(status(secure, "--cap-drop", "ALL")["CapEff"], 16) == 0
    only = status(secure, "--cap-drop", "all", "--cap-add", "cap_net_admin")
    assert int(only["CapEff"], 16) == 1 << 12
    added = status(secure, "--cap-add", "NET_ADMIN", "--cap-drop", "CHOWN")
    assert int(added["CapEff"], 16) == (0xA80425FB | 1 << 12) & ~1
    assert secure.out("run", "--rm", "--cap-add", "NET_ADMIN", "base", "sh", "-c",
                      "ip link add dy0 type bridge && echo ok").strip() == "ok"


def test_a_profile_file_replaces_the_default(secure, tmp_path):
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EACCES}]}))
    result = secure.cli("run", "--rm", "--security-opt", f"seccomp={profile}", "base", "mkdir", "/made")
    assert result.returncode != 0 and b"Permission denied" in result.stderr
    assert secure.out("run", "--rm", "--security-opt", f"seccomp={profile}", "probe", "probe", "keyctl").strip() == "0"


def test_sysctls_group_add_and_inspect(secure):
    output = secure.out("run", "--name", "tuned", "--sysctl", "kernel.shmmax=1048576", "--sysctl",
                        "net.ipv4.ip_forward=1", "--group-add", "daemon", "--group-add", "4242", "--cap-add", "SYS_TIME",
                        "--cap-drop", "MKNOD", "--security-opt", "no-new-privileges",
                        "base", "sh", "-c", "cat /proc/sys/kernel/shmmax /proc/sys/net/ipv4/ip_forward; id -G")
    assert output.split() == ["1048576", "1", "0", "1", "4242"]
    assert Path("/proc/sys/kernel/shmmax").read_text().strip() != "1048576"  # the container's own
    host = json.loads(secure.out("inspect", "tuned"))[0]["HostConfig"]
    assert host["CapAdd"] == ["CAP_SYS_TIME"] and host["CapDrop"] == ["CAP_MKNOD"]
    assert host["Privileged"] is False and host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Sysctls"] == {"kernel.shmmax": "1048576", "net.ipv4.ip_forward": "1"}
    assert host["GroupAdd"] == ["daemon", "4242"]
    secure.out("rm", "tuned")


def test_refused_options_name_the_cause(secure):
    for flags, words in (
        (("--sysctl", "vm.swappiness=10"), b"vm.swappiness"),
        (("--sysctl", "kernel.domainname=x", "--network", "host"), b"kernel.domainname"),
        (("--sysctl", "net.ipv4.ip_forward=1", "--network", "host"), b"--network host"),
        (("--security-opt", "label=disable"), b"SELinux"),
        (("--security-opt", "apparmor=unconfined"), b"AppArmor"),
        (("--cap-add", "CAP_FLY"), b"unknown capability"),
    ):
        result = secure.cli("run", "--rm", *flags, "base", "true")
        assert result.returncode == 125 and words in result.stderr, (flags, result.stderr)
    assert secure.out("ps", "-aq") == ""


def test_an_exec_gets_the_containers_filter_and_groups(secure):
    secure.out("run", "-d", "--name", "sleeper", "--group-add", "4242", "base", "sleep", "60")
    try:
        output = secure.out("exec", "sleeper", "sh", "-c", "grep Seccomp: /proc/self/status; id -G")
        assert output.split() == ["Seccomp:", "2", "0", "4242"]
    finally:
        secure.out("rm", "-f", "sleeper")


def test_exec_privileged_gets_every_capability_and_keeps_the_filter(secure):
    secure.out("run", "-d", "--name", "capped", "--cap-drop", "ALL", "base", "sleep", "60")
    try:
        def exec_status(*flags: str) -> dict[str, str]:
            text = secure.out("exec", *flags, "capped", "cat", "/proc/self/status")
            return {key: value.strip() for key, value in (line.split(":", 1) for line in text.splitlines() if ":" in line)}

        plain, privileged = exec_status(), exec_status("--privileged")
        assert int(plain["CapEff"], 16) == 0 and int(plain["CapBnd"], 16) == 0
        assert int(privileged["CapEff"], 16) == int(status(secure, "--privileged")["CapEff"], 16) != 0
        assert privileged["Seccomp"] == plain["Seccomp"] == "2"
    finally:
        secure.out("rm", "-f", "capped")


#: What dockyard refuses and podman (containers-common's profile, runc) allows: docker
#: refuses them too (docs/security.md, "Compared with podman").
STRICTER_THAN_PODMAN = {"unshare-user", "clone-user", "keyctl"}


def test_dockyard_refuses_what_podman_refuses_and_what_docker_adds(secure, probe_tar, podman_dir):
    store = ["podman", "--root", str(podman_dir / "root"), "--runroot", str(podman_dir / "run"),
             "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--events-backend", "none"]
    subprocess.run([*store, "import", str(probe_tar), "probe:1"], check=True, capture_output=True, timeout=120)
    script = "; ".join(f"echo {name} $(probe {name})" for name in REFUSED)
    result = subprocess.run([*store, "run", "--rm", "--cgroup-parent", f"/{podman_dir.name}", "--runtime", "runc",
                             "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
                             "localhost/probe:1", "sh", "-c", script], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()
    by_podman = {name: int(value) for name, value in (line.split() for line in result.stdout.decode().splitlines())}
    by_dockyard = probe(secure, REFUSED)
    refused_by_podman = {name for name, value in by_podman.items() if value}
    refused_by_dockyard = {name for name, value in by_dockyard.items() if value}
    assert refused_by_dockyard == refused_by_podman | STRICTER_THAN_PODMAN, (by_dockyard, by_podman)

"""config.json to the bundle stage's config (supervisor/ociruntime/bundle.py): pure, no root."""

from __future__ import annotations

import pytest

from supervisor.ociruntime.bundle import Host, parse_mount_options, translate
from supervisor.ociruntime.errors import RuntimeCommandError
from supervisor.ociruntime.template import default_spec


@pytest.fixture
def bundle_dir(tmp_path):
    (tmp_path / "rootfs").mkdir()
    return tmp_path


def test_the_default_spec_translates_to_the_stage_config(bundle_dir):
    bundle = translate(default_spec(["echo", "hi"], terminal=False), str(bundle_dir), "c1")
    stage = bundle.stage
    assert stage["argv"] == ["echo", "hi"] and stage["rootfs"] == str(bundle_dir / "rootfs")
    assert stage["readonly_rootfs"] is True and stage["hostname"] == "dockyard"
    assert ["mount", ""] in stage["namespaces"] and ["network", ""] in stage["namespaces"]
    assert stage["rlimits"] == ["nofile 1024 1024"] and stage["no_new_privileges"] is True
    assert stage["capabilities"]["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    proc = next(mount for mount in stage["mounts"] if mount[2] == "/proc")
    assert proc[:3] == ["proc", "proc", "/proc"]
    sysfs = next(mount for mount in stage["mounts"] if mount[2] == "/sys")
    assert sysfs[3] == 0x1 | 0x2 | 0x4 | 0x8  # ro nosuid nodev noexec
    assert stage["default_devices"] is True
    assert bundle.resources == {"devices": [{"allow": False, "access": "rwm"}]}


def test_mount_options_split_into_flags_propagation_and_data():
    flags, propagation, data = parse_mount_options(["rbind", "ro", "rslave", "mode=755", "size=1k"])
    assert flags == 0x1000 | 0x4000 | 0x1
    assert propagation == 0x80000 | 0x4000
    assert data == "mode=755,size=1k"
    assert parse_mount_options(["ro", "rw"])[0] == 0


def test_a_bind_mount_of_dev_turns_off_the_default_devices(bundle_dir):
    config = default_spec(["true"])
    config["mounts"].append({"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]})
    assert translate(config, str(bundle_dir), "c1").stage["default_devices"] is False


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("process"), "process is required"),
    (lambda c: c.update(ociVersion="invalid"), "ociVersion 'invalid' is not a 1.x SemVer version"),
    (lambda c: c["process"].update(args=[]), "process.args must be a non-empty list"),
    (lambda c: c["process"].update(cwd="relative"), "process.cwd 'relative' is not an absolute path"),
    (lambda c: c["linux"].update(namespaces=[{"type": "mount"}]), "hostname needs a UTS namespace"),
    (lambda c: c["linux"]["namespaces"].append({"type": "time"}), "the time namespace is not supported"),
    (lambda c: c["linux"]["namespaces"].append({"type": "pid"}), "pid is listed twice"),
    (lambda c: c["linux"].update(namespaces=[{"type": "pid"}, {"type": "uts"}]), "a mount namespace is required"),
    (lambda c: c["linux"]["namespaces"].append({"type": "user"}), "needs linux.uidMappings"),
    (lambda c: c["process"]["capabilities"].update(bounding="CAP_KILL"), "must be a list of capability names"),
    (lambda c: c["process"].update(rlimits=[{"type": "RLIMIT_NOPE", "hard": 1, "soft": 1}]), "unknown limit"),
    (lambda c: c["linux"].update(sysctl={"../x": "1"}), "invalid key"),
    (lambda c: c["linux"].update(rootfsPropagation="sideways"), "is not a propagation mode"),
    (lambda c: c["linux"].update(intelRdt={"closID": "x"}), "linux.intelRdt is not supported"),
    (lambda c: c["root"].update(path="missing"), "no such directory"),
    (lambda c: c["mounts"].append({"destination": "relative", "type": "tmpfs"}), "is not an absolute path"),
    (lambda c: c["linux"].update(devices=[{"path": "/dev/x", "type": "z"}]), "is not one of c, b, u, p"),
])
def test_invalid_or_unsupported_fields_are_refused_with_their_name(bundle_dir, change, message):
    config = default_spec(["true"])
    change(config)
    with pytest.raises(RuntimeCommandError, match="config.json: .*" if message else "") as raised:
        translate(config, str(bundle_dir), "c1")
    assert message in raised.value.message


def test_unknown_capabilities_are_left_out_as_runc_does(bundle_dir):
    config = default_spec(["true"])
    config["process"]["capabilities"]["bounding"] = ["CAP_KILL", "CAP_FROM_THE_FUTURE"]
    assert translate(config, str(bundle_dir), "c1").stage["capabilities"]["bounding"] == ["CAP_KILL"]


def test_apparmor_is_refused_only_where_the_host_enforces_it(bundle_dir):
    config = default_spec(["true"])
    config["process"]["apparmorProfile"] = "containers-default"
    translate(config, str(bundle_dir), "c1", Host(apparmor=False))  # ignored, as runc does
    with pytest.raises(RuntimeCommandError, match="AppArmor profiles are not supported"):
        translate(config, str(bundle_dir), "c1", Host(apparmor=True))


def test_container_ids_follow_runcs_rule(bundle_dir):
    for bad in ("", "a/b", "..", "x y"):
        with pytest.raises(RuntimeCommandError, match="invalid container id"):
            translate(default_spec(["true"]), str(bundle_dir), bad)
    translate(default_spec(["true"]), str(bundle_dir), "Ab_1+-.x")


def test_seccomp_goes_through_the_hosts_compiler(bundle_dir):
    config = default_spec(["true"])
    config["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW"}
    seen = []
    host = Host(compile_seccomp=lambda document: seen.append(document) or b"\x01\x02")
    assert translate(config, str(bundle_dir), "c1", host).stage["seccomp"] == "0102"
    assert seen == [{"defaultAction": "SCMP_ACT_ALLOW"}]


def test_a_cgroups_path_that_is_not_a_string_is_refused(bundle_dir):
    config = default_spec(["true"], terminal=False)
    config["linux"]["cgroupsPath"] = 5
    with pytest.raises(RuntimeCommandError, match="linux.cgroupsPath 5 is not a string"):
        translate(config, str(bundle_dir), "c1")


# The hand-written checks that replaced three regular expressions (no ``re`` on run's path):
# the same answer as the expressions for every string, corner cases and random ones.
ORIGINAL_PATTERNS = {
    "valid_oci_version": r"^1\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?\Z",
    "valid_id": r"^[\w+\-.]+\Z",
    "valid_sysctl_key": r"^[a-zA-Z0-9_]+(?:[./][a-zA-Z0-9_-]+)+\Z",
}
CORNER_CASES = ["", "1", "1.", "1.0", "1.0.", "1.0.2", "1.0.2-dev", "1.2.3-rc.1+build.5", "1.2.3+b", "1.2.3-",
                "1.2.3+", "1.2.3-a+b+c", "2.0.0", "1.0.2\n", "1.١.٢", "1.0.0-ü", "a", "a_b", "a+b-c.d", "é1", "a b",
                "a/b", "..", ".", "net.ipv4.ip_forward", "net/ipv4/conf/all/forwarding", "kernel.msgmax", "net",
                "net.", ".net", "net..x", "net-x.y", "net.x-y", "fs.mqueue.queues_max", "a.b/c", "a\n.b", "x.y\n"]


@pytest.mark.parametrize("name", sorted(ORIGINAL_PATTERNS))
def test_the_hand_written_checks_answer_as_the_regular_expressions(name):
    import random
    import re

    from supervisor.ociruntime import bundle

    check, pattern = getattr(bundle, name), re.compile(ORIGINAL_PATTERNS[name])
    generator = random.Random(23)
    alphabet = "01239.-+_/abzAZ é\n١²"
    samples = CORNER_CASES + ["1." + "".join(generator.choice(alphabet) for _ in range(generator.randrange(8)))
                              for _ in range(3000)]
    samples += ["".join(generator.choice(alphabet) for _ in range(generator.randrange(1, 8))) for _ in range(3000)]
    wrong = [text for text in samples if check(text) != bool(pattern.match(text))]
    assert wrong == []


def test_the_capability_names_are_security_py_s_table_in_bit_order():
    # bundle.py reads supervisor/capabilities.py, so that create does not load security.py's libc (ctypes).
    from supervisor.ociruntime.bundle import CAPABILITIES
    from supervisor.runtime.security import CAPABILITIES as TABLE

    assert CAPABILITIES == tuple(sorted(TABLE, key=TABLE.get))

"""The supervisor as a library, on the real kernel: docs/operations.md's embedding example run
as written, and the event callback's contract with real containers (issue 15, items 3-4)."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from supervisor import Config, ContainerSpec, Supervisor
from supervisor.runtime import libc
from tests.conftest import cgroup_dirs, kill_cgroup, link_exists, mounts_under, private_bridge, remove_link, try_rmdir

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
#: What the example names, so the test can check that it leaves nothing behind.
EXAMPLE_ROOT, EXAMPLE_RUN = Path("/var/lib/myapp"), Path("/run/myapp")
EXAMPLE_CGROUP_PARENT, EXAMPLE_BRIDGE = "myapp", "myapp0"
#: A line of 700,000 bytes: one record of more than OWN_MIN (512 KiB), which the supervisor
#: publishes from the buffer it read it into (the path that used to break the callback).
BIG_LINE = "head -c 699999 /dev/zero | tr '\\0' x; echo"


def embedding_example() -> str:
    """The first python block of docs/operations.md's "Embedding" section, as it is there."""
    text = (REPO / "docs" / "operations.md").read_text()
    section = text.split("## Embedding the supervisor in a trio program\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "docs/operations.md: no python example in the Embedding section"
    return match.group(1)


def remove_example_leftovers() -> None:
    for cgroup in cgroup_dirs(EXAMPLE_CGROUP_PARENT):
        for child in sorted(Path(cgroup).glob("*/"), reverse=True):
            kill_cgroup(child)
            try_rmdir(child)
        try_rmdir(Path(cgroup))
    remove_link(EXAMPLE_BRIDGE)
    for path in (EXAMPLE_ROOT, EXAMPLE_RUN):
        shutil.rmtree(path, ignore_errors=True)


def test_the_documented_embedding_example_runs_as_written(tmp_path, busybox_tar):
    """The example runs a container that writes 50 MB (more than the 4 MiB buffer, with no
    log collector anywhere) to its end, and stores every byte."""
    code = embedding_example()
    for name in (f'root="{EXAMPLE_ROOT}"', f'run_dir="{EXAMPLE_RUN}"', f'cgroup_parent="{EXAMPLE_CGROUP_PARENT}"',
                 f'bridge_name="{EXAMPLE_BRIDGE}"'):
        assert name in code, f"the example no longer sets {name}: update this test's clean-up"
    for path in (EXAMPLE_ROOT, EXAMPLE_RUN):
        assert not path.exists(), f"{path} exists (left by an earlier run?): remove it to run this test"
    assert cgroup_dirs(EXAMPLE_CGROUP_PARENT) == [] and not link_exists(EXAMPLE_BRIDGE)
    shutil.copy(busybox_tar, tmp_path / "rootfs.tar")
    (tmp_path / "example.py").write_text(code)
    try:
        result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, timeout=600)
        output = result.stdout.decode(errors="replace")
        assert result.returncode == 0, f"the example failed:\n{output}\n{result.stderr.decode(errors='replace')}"
        lines = output.splitlines()
        assert "exit code 0" in lines, output
        assert "bytes seen 50000000 stored 50000000" in lines, output
        assert any(re.fullmatch(r"container\.[0-9a-f]{64}\.die 0", line) for line in lines), output
        assert any(re.fullmatch(r"container\.[0-9a-f]{64}\.destroy ", line) for line in lines), output
        assert mounts_under(EXAMPLE_ROOT) == []
        assert cgroup_dirs(EXAMPLE_CGROUP_PARENT) == [], "cgroups left behind"
        assert not link_exists(EXAMPLE_BRIDGE), "bridge left behind"
    finally:
        remove_example_leftovers()


@pytest.fixture
def config(tmp_path):
    bridge, subnet = private_bridge()
    config = Config(root=tmp_path / "root", run_dir=tmp_path / "run", cgroup_parent=f"dockyard-test-{secrets.token_hex(4)}",
                    stats_interval=0, bridge_name=bridge, bridge_subnet=subnet)
    try:
        yield config
    finally:
        libc.set_child_subreaper(False)  # the Supervisor made this test process one
        left = cgroup_dirs(config.cgroup_parent)
        for cgroup in left:
            for child in sorted(Path(cgroup).glob("*/"), reverse=True):
                kill_cgroup(child)
                try_rmdir(child)
            try_rmdir(Path(cgroup))
        bridge_left = link_exists(bridge)
        remove_link(bridge)
        assert left == [], "cgroups left behind"
        assert not bridge_left, f"bridge {bridge} left behind"


async def test_the_event_callback_gets_every_record_as_bytes_whatever_its_size(config, busybox_tar):
    received: list[bytes] = []

    def on_event(topic, data, channel):  # exactly the documented signature
        if topic.startswith("log."):
            received.append(data["data"])

    async with Supervisor(config, publish=on_event) as sup:
        with open(busybox_tar, "rb") as tar:
            await sup.import_image(tar, "base")
        container = await sup.run(ContainerSpec(image="base", cmd=["sh", "-c", f"echo small; {BIG_LINE}"]))
        with trio.fail_after(60):
            assert await sup.wait(container.id) == 0
        stored = [data async for _, _, data in sup.read_logs(container.id)]
        await sup.remove(container.id)
    expected = b"small\n" + b"x" * 699_999 + b"\n"
    assert all(type(data) is bytes for data in received)
    assert b"".join(received) == expected and b"".join(stored) == expected
    assert sup.callback_errors == 0


async def test_a_callback_that_raises_is_logged_and_counted_and_the_containers_go_on(config, busybox_tar):
    """Before: the TypeError of a big record escaped `async with Supervisor` and left the
    container recorded as running, with its cgroup."""
    logged = []

    class Log:
        def error(self, event, **fields):
            logged.append((event, fields))

        def warning(self, event, **fields):
            pass

        info = debug = warning

    def on_event(topic, data, channel):
        raise RuntimeError("the application's bug")

    async with Supervisor(config, publish=on_event, log=Log()) as sup:
        with open(busybox_tar, "rb") as tar:
            await sup.import_image(tar, "base")
        container = await sup.run(ContainerSpec(image="base", cmd=["sh", "-c", BIG_LINE]))
        with trio.fail_after(60):
            assert await sup.wait(container.id) == 0
        assert container.status.value == "exited" and container.cgroup is None
        stored = b"".join([data async for _, _, data in sup.read_logs(container.id)])
        assert stored == b"x" * 699_999 + b"\n"
        second = await sup.run(ContainerSpec(image="base", cmd=["true"]))  # it carries on
        with trio.fail_after(60):
            assert await sup.wait(second.id) == 0
        errors = sup.callback_errors
    assert errors >= 6  # at least: image import, two creates, starts and dies, the record
    event, fields = logged[0]
    assert "event callback" in event and fields["error"] == "RuntimeError: the application's bug"
    assert isinstance(fields["exc_info"], RuntimeError)

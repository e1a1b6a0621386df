"""The cgroup warm-up started before the runtime's imports (supervisor/ociruntime/warmup.py)."""

from __future__ import annotations

from supervisor.ociruntime.warmup import AttachWarmUp, own_procs_files


def test_our_own_cgroup_procs_files_follow_proc_self_cgroup_under_the_usual_mount_points():
    text = "9:name=systemd:/user.slice\n3:cpu,cpuacct:/\n0::/user.slice/session-1.scope\n"
    assert own_procs_files(text, "/cg") == [
        "/cg/systemd/user.slice/cgroup.procs", "/cg/cpu,cpuacct/cgroup.procs",
        "/cg/unified/user.slice/session-1.scope/cgroup.procs", "/cg/user.slice/session-1.scope/cgroup.procs"]
    assert own_procs_files("garbage\n") == []


def test_the_attach_warm_up_does_nothing_when_no_cgroup_file_opens(tmp_path):
    warm_up = AttachWarmUp(f"1:pids:/{tmp_path.name}-not-a-cgroup\n")
    assert (warm_up.path, warm_up.finished) == ("", None)
    assert not warm_up.wait(0)

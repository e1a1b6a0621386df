"""The Engine API as docker's own tools use it: the real `docker` CLI (Debian's docker.io) and
docker-py (PyPI's `docker`) against a private dockyard daemon's <run>/docker.sock."""

from __future__ import annotations

import io
import json
import os
import select
import shutil
import socket
import subprocess
import tarfile
import time

import pytest

from tests.conftest import DOCKYARD, Daemon, private_daemon
from tests.tools import require

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def api_daemon(tmp_path_factory, busybox_tar):
    """One private daemon for the module, serving the API also on a loopback TCP port."""
    base = tmp_path_factory.mktemp("api")
    with socket.socket() as probe:  # a free loopback port for --api
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with private_daemon(base, busybox_tar, "--api", f"tcp://127.0.0.1:{port}") as instance:
        instance.api_port = port  # type: ignore[attr-defined]
        wait_for_socket(instance.run_dir / "docker.sock")
        yield instance


@pytest.fixture
def daemon(api_daemon):
    yield api_daemon
    assert api_daemon.out("ps", "-aq") == "", "a test left a container behind"


def wait_for_socket(path, timeout: float = TIMEOUT) -> None:
    """Until the API answers _ping on ``path`` (the worker starts beside the daemon)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(str(path))
                sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: d\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.05)  # polls the readiness condition itself, bounded by the deadline
    raise AssertionError(f"the Engine API did not answer on {path}")


def docker(daemon: Daemon, *args: str, input: bytes | None = None, timeout: float = TIMEOUT,
           check: bool = True) -> subprocess.CompletedProcess:
    require("docker")
    env = {**os.environ, "DOCKER_HOST": f"unix://{daemon.run_dir}/docker.sock", "DOCKER_CONFIG": str(daemon.root)}
    result = subprocess.run([shutil.which("docker"), *args], input=input, capture_output=True, timeout=timeout,
                            env=env)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)} -> {result.returncode}: {result.stderr.decode()}"
    return result


def docker_env(daemon: Daemon, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`docker` with more environment (DOCKER_BUILDKIT=0: the classic builder's API)."""
    require("docker")
    full = {**os.environ, "DOCKER_HOST": f"unix://{daemon.run_dir}/docker.sock", "DOCKER_CONFIG": str(daemon.root),
            **env}
    result = subprocess.run([shutil.which("docker"), *args], capture_output=True, timeout=120, env=full)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)} -> {result.returncode}: {result.stderr.decode()}"
    return result


def docker_client(daemon: Daemon):
    docker_py = pytest.importorskip("docker")
    return docker_py.DockerClient(base_url=f"unix://{daemon.run_dir}/docker.sock", version="auto", timeout=60)


def test_the_socket_has_the_bus_sockets_mode(daemon):
    assert (daemon.run_dir / "docker.sock").stat().st_mode & 0o777 == 0o660


def test_docker_run_ps_logs_follow_stop_rm(daemon):
    assert docker(daemon, "run", "--rm", "base", "echo", "hello from dockyard").stdout == b"hello from dockyard\n"
    failed = docker(daemon, "run", "--rm", "base", "sh", "-c", "exit 3", check=False)
    assert failed.returncode == 3
    container = docker(daemon, "run", "-d", "--name", "ticker", "-l", "team=api", "base", "sh", "-c",
                       "for i in 1 2 3; do echo tick $i; sleep 0.2; done; sleep 600").stdout.decode().strip()
    try:
        listed = docker(daemon, "ps", "--filter", "label=team=api", "--format", "{{.ID}} {{.Names}} {{.Status}}")
        short_id, name, status = listed.stdout.decode().split(maxsplit=2)
        assert (container.startswith(short_id), name) == (True, "ticker") and status.startswith("Up")
        with subprocess.Popen([shutil.which("docker"), "logs", "-f", "ticker"], stdout=subprocess.PIPE,
                              env={**os.environ, "DOCKER_HOST": f"unix://{daemon.run_dir}/docker.sock"}) as follower:
            lines = [follower.stdout.readline() for _ in range(3)]
            assert lines == [b"tick 1\n", b"tick 2\n", b"tick 3\n"]
            docker(daemon, "stop", "-t", "1", "ticker")
            assert follower.wait(TIMEOUT) == 0  # -f ends with the container
        inspected = json.loads(docker(daemon, "inspect", "ticker").stdout)[0]
        assert inspected["State"]["Status"] == "exited" and inspected["Config"]["Labels"] == {"team": "api"}
        assert docker(daemon, "ps", "-q").stdout == b""
        assert docker(daemon, "ps", "-aq").stdout.decode().strip() == container[:12]
    finally:
        docker(daemon, "rm", "-f", "ticker", check=False)
    missing = docker(daemon, "inspect", "ticker", check=False)
    assert missing.returncode == 1 and b"No such" in missing.stderr


def test_docker_exec_and_cp_both_ways(daemon, tmp_path):
    docker(daemon, "run", "-d", "--name", "files", "base", "sleep", "600")
    try:
        assert docker(daemon, "exec", "files", "sh", "-c", "echo $((6*7))").stdout == b"42\n"
        assert docker(daemon, "exec", "files", "sh", "-c", "exit 5", check=False).returncode == 5
        (tmp_path / "in.txt").write_text("into the container\n")
        docker(daemon, "cp", str(tmp_path / "in.txt"), "files:/tmp/")
        assert docker(daemon, "exec", "files", "cat", "/tmp/in.txt").stdout == b"into the container\n"
        docker(daemon, "exec", "files", "sh", "-c", "mkdir -p /out/sub && echo out > /out/sub/f")
        docker(daemon, "cp", "files:/out", str(tmp_path / "copied"))
        assert (tmp_path / "copied" / "sub" / "f").read_text() == "out\n"
        missing = docker(daemon, "cp", "files:/no/such", str(tmp_path / "x"), check=False)
        assert missing.returncode != 0 and b"no/such" in missing.stderr
    finally:
        docker(daemon, "rm", "-f", "files")


def run_on_a_terminal(daemon: Daemon, *args: str, typed: bytes = b"", until: bytes) -> tuple[bytes, int]:
    """The docker CLI on a fresh pty; ``typed`` is written once ``until``'s first half showed."""
    require("docker")
    env = {**os.environ, "DOCKER_HOST": f"unix://{daemon.run_dir}/docker.sock"}
    pid, fd = os.forkpty()
    if pid == 0:
        try:
            os.execve(shutil.which("docker"), ["docker", *args], env)
        finally:
            os._exit(127)
    seen = b""
    sent = not typed
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                seen += data
            if not sent and b"# " in seen:
                os.write(fd, typed)
                sent = True
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                return seen, os.waitstatus_to_exitcode(status)
        _, status = os.waitpid(pid, 0)
        return seen, os.waitstatus_to_exitcode(status)
    finally:
        os.close(fd)
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def test_docker_run_it_and_exec_it_through_a_pty(daemon):
    seen, code = run_on_a_terminal(daemon, "run", "-it", "--rm", "base", "sh", typed=b"echo in-$((1+1))\rexit 4\r",
                                   until=b"in-2")
    assert b"in-2\r\n" in seen  # through the container's terminal: its line discipline adds \r
    assert code == 4
    docker(daemon, "run", "-d", "--name", "shell", "base", "sleep", "600")
    try:
        seen, code = run_on_a_terminal(daemon, "exec", "-it", "shell", "sh", typed=b"echo exec-$((2+3))\rexit\r",
                                       until=b"exec-5")
        assert b"exec-5\r\n" in seen and code == 0
    finally:
        docker(daemon, "rm", "-f", "shell")


def test_docker_attach_sees_output_and_stdin_reaches_the_container(daemon):
    docker(daemon, "run", "-d", "-i", "--name", "cat", "base", "cat")
    try:
        attached = docker(daemon, "attach", "cat", input=b"through attach\n")  # EOF on stdin ends cat
        assert attached.stdout == b"through attach\n"
        assert docker(daemon, "wait", "cat").stdout == b"0\n"
    finally:
        docker(daemon, "rm", "-f", "cat")


def test_docker_events_shows_a_run_in_docker_s_shape(daemon):
    since = time.time() - 1
    docker(daemon, "run", "--rm", "--name", "eventful", "base", "true")
    until = time.time() + 1
    shown = docker(daemon, "events", "--since", f"{since:.3f}", "--until", f"{until:.3f}", "--filter",
                   "container=eventful", "--format", "{{json .}}").stdout.decode().splitlines()
    actions = [json.loads(line)["Action"] for line in shown]
    assert actions == ["create", "start", "die", "destroy"]
    first = json.loads(shown[0])
    assert first["Type"] == "container" and first["Actor"]["Attributes"]["name"] == "eventful"


def test_docker_volumes(daemon):
    docker(daemon, "volume", "create", "--label", "kind=test", "shared")
    try:
        assert docker(daemon, "volume", "ls", "-q", "--filter", "label=kind=test").stdout == b"shared\n"
        docker(daemon, "run", "--rm", "-v", "shared:/data", "base", "sh", "-c", "echo kept > /data/f")
        assert docker(daemon, "run", "--rm", "-v", "shared:/data", "base", "cat", "/data/f").stdout == b"kept\n"
    finally:
        docker(daemon, "volume", "rm", "shared")
    assert docker(daemon, "volume", "ls", "-q").stdout == b""


def test_unsupported_features_answer_with_the_feature_named(daemon):
    swarm = docker(daemon, "swarm", "init", check=False)
    assert swarm.returncode != 0 and b"swarm" in swarm.stderr
    client = docker_client(daemon)
    response = client.api._post(client.api._url("/session"))
    assert response.status_code == 501 and "BuildKit sessions" in response.json()["message"]
    assert client.api.plugins() == []  # none installed; plugin inspect is a 404 like any missing object
    client.close()
    before = docker(daemon, "ps", "-aq").stdout
    pid_host = docker(daemon, "run", "--rm", "--pid", "host", "base", "true", check=False)
    assert pid_host.returncode != 0 and b"HostConfig.PidMode 'host' is not supported" in pid_host.stderr
    assert docker(daemon, "ps", "-aq").stdout == before  # nothing was created


def test_docker_build_through_the_api_builds_tags_and_runs(daemon, tmp_path):
    (tmp_path / "hello.txt").write_text("hello from the context\n")
    (tmp_path / ".dockerignore").write_text("Dockerfile\n.dockerignore\nsecret.txt\n")
    (tmp_path / "secret.txt").write_text("not sent\n")
    (tmp_path / "Dockerfile").write_text('FROM base\nARG WHO=nobody\nCOPY . /ctx/\n'
                                         'RUN cat /ctx/hello.txt > /copy && echo "$WHO" >> /copy\nCMD ["cat", "/copy"]\n')
    env = {"DOCKER_BUILDKIT": "0"}
    try:
        built = docker_env(daemon, env, "build", "-t", "apibuilt:v1", "-t", "apibuilt:latest",
                           "--build-arg", "WHO=docker", "--iidfile", str(tmp_path / "iid"), str(tmp_path))
        out = built.stdout.decode()
        assert "Step 1/5 : FROM base" in out and "Step 5/5 : CMD" in out
        image_id = (tmp_path / "iid").read_text()
        assert f"Successfully built {image_id.removeprefix('sha256:')[:12]}" in out
        assert "Successfully tagged apibuilt:v1" in out and "Successfully tagged apibuilt:latest" in out
        ran = docker(daemon, "run", "--rm", "apibuilt:v1")
        assert ran.stdout == b"hello from the context\ndocker\n"
        # the CLI sends Dockerfile and .dockerignore always; the daemon drops them, as docker's, when excluded
        assert docker(daemon, "run", "--rm", "apibuilt:v1", "ls", "-a", "/ctx").stdout == b".\n..\nhello.txt\n"
        (tmp_path / "Dockerfile").write_text("FROM base\nRUN echo before; exit 3\n")
        failed = docker_env(daemon, env, "build", "-t", "apibuilt:broken", str(tmp_path), check=False)
        assert failed.returncode != 0 and b"Step 2/2 : RUN echo before; exit 3" in failed.stdout
        assert b"returned a non-zero code: 3" in failed.stderr
        (tmp_path / "Dockerfile").write_text("FROM base\nFROMM base\n")
        refused = docker_env(daemon, env, "build", str(tmp_path), check=False)
        assert refused.returncode != 0 and b"line 2" in refused.stderr and b"FROMM" in refused.stderr, refused.stderr
        assert docker(daemon, "images", "-q", "apibuilt:broken").stdout == b""
    finally:
        docker(daemon, "rmi", "apibuilt:v1", "apibuilt:latest", check=False)


def test_docker_py_images_build_from_a_fileobj_and_its_build_error(daemon):
    docker_py = pytest.importorskip("docker")
    client = docker_client(daemon)
    try:
        dockerfile = io.BytesIO(b'FROM base\nLABEL made.by=docker-py\nRUN echo built > /made\nCMD ["cat", "/made"]\n')
        image, logs = client.images.build(fileobj=dockerfile, tag="pybuilt:1", labels={"extra": "yes"})
        logs = list(logs)
        assert {"stream": "Step 1/4 : FROM base\n"} in logs
        assert image.tags == ["pybuilt:1"] and image.id == next(line["aux"]["ID"] for line in logs if "aux" in line)
        assert image.labels == {"made.by": "docker-py", "extra": "yes"}
        assert image.attrs["Config"]["OnBuild"] is None  # docker's field, which docker-py's tests read
        assert client.containers.run("pybuilt:1", remove=True) == b"built\n"
        with pytest.raises(docker_py.errors.BuildError) as caught:
            client.images.build(fileobj=io.BytesIO(b"FROM base\nRUN exit 7\n"), tag="pybuilt:broken")
        assert "returned a non-zero code: 7" in caught.value.msg
        assert list(caught.value.build_log)[-1]["errorDetail"]["message"] == caught.value.msg
        assert client.api.prune_builds() == {"CachesDeleted": [], "SpaceReclaimed": 0}
    finally:
        try:
            client.images.remove("pybuilt:1")
        except docker_py.errors.NotFound:
            pass
        client.close()


def test_docker_py_run_logs_exec_archive_and_wait(daemon):
    client = docker_client(daemon)
    assert client.ping() is True
    assert client.version()["ApiVersion"] == "1.43"
    assert client.containers.run("base", ["sh", "-c", "echo out; echo err >&2"], remove=True) == b"out\n"
    container = client.containers.run("base", ["sh", "-c", "echo ready; sleep 600"], detach=True, labels={"a": "b"})
    try:
        assert [c.id for c in client.containers.list(filters={"label": "a=b"})] == [container.id]
        logs = container.logs(stream=True, follow=True)
        assert next(logs) == b"ready\n"
        logs.close()  # docker-py shuts the socket down but leaves the response's file open on it:
        logs._response.close()  # without this its fd is collected later, in some other test
        result = container.exec_run(["sh", "-c", "echo $HOME; exit 2"])
        assert (result.exit_code, result.output) == (2, b"/root\n")
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as archive:
            member = tarfile.TarInfo("greeting")
            member.size = 3
            archive.addfile(member, io.BytesIO(b"hi\n"))
        assert container.put_archive("/tmp", data.getvalue())
        stream, stat = container.get_archive("/tmp/greeting")
        assert stat["name"] == "greeting" and stat["size"] == 3
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            assert archive.extractfile("greeting").read() == b"hi\n"
        container.kill()
        assert container.wait(timeout=TIMEOUT)["StatusCode"] == 137
    finally:
        container.remove(force=True)
    client.close()


def test_docker_py_events_stream_until_and_errors(daemon):
    client = docker_client(daemon)
    since = time.time()
    container = client.containers.create("base", ["true"], name="short")
    container.start()
    container.wait(timeout=TIMEOUT)
    container.remove()
    events = list(client.events(since=since, until=time.time() + 0.5, decode=True,
                                filters={"container": "short"}))
    assert [event["Action"] for event in events] == ["create", "start", "die", "destroy"]
    assert events[2]["Actor"]["Attributes"]["exitCode"] == "0"
    docker_py = pytest.importorskip("docker")
    with pytest.raises(docker_py.errors.NotFound):
        client.containers.get("no-such-container")
    with pytest.raises(docker_py.errors.ImageNotFound):
        client.images.get("no-such-image:1")
    client.close()


def test_the_api_on_loopback_tcp(daemon):
    docker_py = pytest.importorskip("docker")
    client = docker_py.DockerClient(base_url=f"tcp://127.0.0.1:{daemon.api_port}", version="auto")
    assert client.ping() is True
    # (the build tests before it may leave untagged images)
    assert [image.tags for image in client.images.list() if image.tags] == [["base:latest"]]
    client.close()


def test_a_non_loopback_api_address_is_refused_with_the_reason(tmp_path):
    result = subprocess.run([DOCKYARD, "daemon", "--root", str(tmp_path / "root"), "--run", str(tmp_path / "run"),
                             "--api", "tcp://0.0.0.0:2375"], capture_output=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert b"refusing a non-loopback address" in result.stderr and b"TLS" in result.stderr
    assert not (tmp_path / "run" / "control.sock").exists()


def test_docker_push_and_pull_through_the_api_with_a_local_registry(daemon, tmp_path):
    from tests.registry_server import Registry

    require("docker-registry")
    (tmp_path / "registry").mkdir()
    registry = Registry(tmp_path / "registry").start()
    try:
        reference = f"{registry.host}/team/base:1"
        docker(daemon, "tag", "base", reference)
        pushed = docker(daemon, "push", reference, timeout=120)
        assert b"digest: sha256:" in pushed.stdout
        docker(daemon, "rmi", reference)
        client = docker_client(daemon)
        image = client.images.pull(f"{registry.host}/team/base", tag="1")
        assert reference in image.tags
        pushed_digest = pushed.stdout.decode().split("digest: ")[1].split()[0]
        repo_digest = f"{registry.host}/team/base@{pushed_digest}"
        assert repo_digest in image.attrs["RepoDigests"]  # image inspect
        listed = client.api.images(name=f"{registry.host}/team/base")
        assert [repo_digest in row["RepoDigests"] for row in listed] == [True]  # GET /images/json
        client.close()
        assert docker(daemon, "run", "--rm", reference, "echo", "pulled").stdout == b"pulled\n"
        docker(daemon, "rmi", reference)
        missing = docker(daemon, "pull", f"{registry.host}/team/nothing:1", check=False, timeout=120)
        assert missing.returncode != 0 and b"team/nothing" in missing.stderr
    finally:
        registry.stop()


def test_docker_py_device_cgroup_rules_and_cgroupns_mode(daemon):
    docker_py = pytest.importorskip("docker")
    client = docker_client(daemon)
    rule = "c 7:128 rwm"
    container = client.containers.create("base", ["cat", "/sys/fs/cgroup/devices/devices.list"],
                                         device_cgroup_rules=[rule], cgroupns="private")
    try:
        host_config = container.attrs["HostConfig"]
        assert (host_config["DeviceCgroupRules"], host_config["CgroupnsMode"]) == ([rule], "private")
        container.start()
        assert container.wait(timeout=TIMEOUT)["StatusCode"] == 0
        if os.path.isdir("/sys/fs/cgroup/devices"):  # cgroup v1: the container's devices.list holds it
            assert rule in container.logs().decode()
    finally:
        container.remove(force=True)
    with pytest.raises(docker_py.errors.APIError, match="CgroupnsMode 'host'"):
        client.containers.create("base", "true", cgroupns="host")
    with pytest.raises(docker_py.errors.APIError, match="--device-cgroup-rule"):
        client.containers.create("base", "true", device_cgroup_rules=["c 7 rwm"])
    client.close()


def test_docker_py_updates_the_restart_policy(daemon):
    client = docker_client(daemon)
    container = client.api.create_container("base", ["sleep", "60"], host_config=client.api.create_host_config(
        restart_policy={"Name": "always", "MaximumRetryCount": 0}))
    try:
        client.api.start(container)
        client.api.update_container(container, restart_policy={"Name": "on-failure", "MaximumRetryCount": 42})
        policy = client.api.inspect_container(container)["HostConfig"]["RestartPolicy"]
        assert (policy["Name"], policy["MaximumRetryCount"]) == ("on-failure", 42)
        docker_py = pytest.importorskip("docker")
        with pytest.raises(docker_py.errors.APIError) as refused:  # told, not dropped
            client.api.update_container(container, blkio_weight=300)
        assert refused.value.status_code == 400 and "HostConfig.BlkioWeight 300" in str(refused.value)
    finally:
        client.api.remove_container(container, force=True)
    removed = docker(daemon, "run", "-d", "--rm", "base", "sleep", "60").stdout.decode().strip()
    try:
        refused = docker(daemon, "update", "--restart", "always", removed, check=False)
        assert refused.returncode != 0 and b"--restart always and --rm" in refused.stderr
    finally:
        docker(daemon, "rm", "-f", removed, check=False)
    client.close()


def test_uts_host_shows_the_host_s_hostname_and_never_changes_it(daemon):
    host_name = socket.gethostname()
    assert daemon.out("run", "--rm", "--uts", "host", "base", "hostname").strip() == host_name
    refused = daemon.cli("run", "--rm", "--uts", "host", "base", "hostname", "-F", "/etc/hostname")
    assert refused.returncode != 0  # the host's UTS namespace: the container cannot rename the host
    assert socket.gethostname() == host_name
    conflict = daemon.cli("run", "--rm", "--uts", "host", "-h", "other", "base", "true")
    assert conflict.returncode != 0 and b"conflicting options: --hostname and --uts host" in conflict.stderr
    client = docker_client(daemon)
    container = client.containers.create("base", "true", uts_mode="host")
    try:
        assert container.attrs["HostConfig"]["UTSMode"] == "host"
        assert container.attrs["Config"]["Hostname"] == host_name
    finally:
        container.remove(force=True)
        client.close()
    assert socket.gethostname() == host_name

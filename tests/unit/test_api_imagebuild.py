"""``POST /build``'s pure parts (workers/api/imagebuild.py): the query as ``image.build``'s
arguments, the Dockerfile read out of the context tar, the builder's lines as docker's."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from workers.api.http import ApiError, Request
from workers.api.imagebuild import BuildLines, build_arguments, dockerfile_name, read_dockerfile


def request(**query: str | list[str]) -> Request:
    return Request("POST", "/build", {key: value if isinstance(value, list) else [value]
                                      for key, value in query.items()}, {})


def test_the_query_becomes_image_build_s_arguments():
    args = build_arguments(request(t=["web:1", "web:latest"], buildargs=json.dumps({"A": "1", "UNSET": None}),
                                   labels='{"team": "x"}', target="final", nocache="1", pull="1",
                                   networkmode="host", platform="linux/amd64", rm="1", forcerm="0", shmsize="0"))
    assert args == {"tags": ["web:1", "web:latest"], "build_args": {"A": "1"}, "labels": {"team": "x"},
                    "no_cache": True, "network": "host", "pull": True, "target": "final",
                    "platform": "linux/amd64"}


def test_the_classic_cli_s_defaults_build_on_the_bridge_without_pull():
    args = build_arguments(request(networkmode="default", buildargs="{}", labels="{}", pull="", nocache="0"))
    assert args == {"tags": [], "build_args": {}, "labels": {}, "no_cache": False, "network": "bridge",
                    "pull": False}


@pytest.mark.parametrize("query, words", [
    ({"networkmode": "container:web"}, "networkmode `container:web`"),
    ({"buildargs": "[1]"}, "buildargs: expected a JSON object"),
    ({"labels": '{"a": 1}'}, "labels: the value of 'a' is not a string"),
    ({"buildargs": "{nope"}, "not JSON"),
    ({"remote": "https://example.com/repo.git"}, "remote contexts"),
    ({"isolation": "hyperv"}, "isolation `hyperv`"),
    ({"extrahosts": '["web:10.0.0.2"]'}, "extrahosts: extra /etc/hosts entries"),
    ({"squash": "1"}, "squash is not supported"),
])
def test_a_bad_parameter_is_a_400_naming_it(query, words):
    with pytest.raises(ApiError) as caught:
        build_arguments(request(**query))
    assert caught.value.status == 400 and words in caught.value.message


def test_the_dockerfile_must_stay_inside_the_context():
    assert dockerfile_name(request()) == "Dockerfile"
    assert dockerfile_name(request(dockerfile="./sub/Dockerfile.dev")) == "sub/Dockerfile.dev"
    # docker-py sends an outside Dockerfile as a member of the tar, then its text: docker reads the first
    assert dockerfile_name(request(dockerfile=[".dockerfile.abc", "FROM base\n"])) == ".dockerfile.abc"
    for bad in ("/etc/passwd", "../Dockerfile", "sub/../../x"):
        with pytest.raises(ApiError) as caught:
            dockerfile_name(request(dockerfile=bad))
        assert caught.value.status == 400 and "inside the context" in caught.value.message


def context_tar(files: dict[str, bytes], compress: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue()) if compress else buffer.getvalue()


@pytest.mark.parametrize("compress", [False, True])
def test_the_dockerfile_is_read_out_of_a_plain_or_gzip_context(tmp_path, compress):
    path = tmp_path / "context.tar"
    path.write_bytes(context_tar({"./Dockerfile": b"FROM base\n", "sub/Other": b"FROM other\n"}, compress))
    assert read_dockerfile(str(path), "Dockerfile") == "FROM base\n"
    assert read_dockerfile(str(path), "sub/Other") == "FROM other\n"


def test_a_missing_dockerfile_or_a_body_that_is_no_tar_is_a_400(tmp_path):
    path = tmp_path / "context.tar"
    path.write_bytes(context_tar({"app.py": b"print()\n"}))
    with pytest.raises(ApiError) as caught:
        read_dockerfile(str(path), "Dockerfile")
    assert caught.value.status == 400 and caught.value.message == "Cannot locate specified Dockerfile: Dockerfile"
    path.write_bytes(b"FROM base\n")
    with pytest.raises(ApiError) as caught:
        read_dockerfile(str(path), "Dockerfile")
    assert caught.value.status == 400 and "not a tar archive" in caught.value.message


def lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines() if line]


def test_aux_comes_before_successfully_built_as_docker_sends_it():
    out = BuildLines(quiet=False)
    data = b"".join(out.message({"stream": text}) for text in (
        "Step 1/1 : FROM base\n", " ---> 0123456789ab\n", "Successfully built 0123456789ab\n",
        "Successfully tagged web:latest\n"))
    data += out.result({"id": "0123456789ab" + "f" * 52})
    assert lines(data) == [{"stream": "Step 1/1 : FROM base\n"}, {"stream": " ---> 0123456789ab\n"},
                           {"aux": {"ID": "sha256:0123456789ab" + "f" * 52}},
                           {"stream": "Successfully built 0123456789ab\n"},
                           {"stream": "Successfully tagged web:latest\n"}]


def test_quiet_sends_only_the_id_and_a_failure_is_the_last_line():
    quiet = BuildLines(quiet=True)
    assert quiet.message({"stream": "Step 1/1 : FROM base\n"}) == b""
    assert lines(quiet.result({"id": "ab" * 32})) == [{"aux": {"ID": "sha256:" + "ab" * 32}},
                                                      {"stream": f"sha256:{'ab' * 32}\n"}]
    failing = BuildLines(quiet=False)
    assert lines(failing.failure("The command '/bin/sh -c exit 3' returned a non-zero code: 3")) == [
        {"errorDetail": {"message": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"},
         "error": "The command '/bin/sh -c exit 3' returned a non-zero code: 3"}]

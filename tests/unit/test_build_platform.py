"""The platform rules of a build's base (supervisor/build/base.py), without a daemon."""

from __future__ import annotations

import pytest

from supervisor.build.base import check_runnable, image_platform, parse_platform, same_platform
from supervisor.build.context import BuildError
from supervisor.registry.manifest import Platform, host_platform


def test_a_platform_is_linux_and_os_arch_or_os_arch_variant():
    assert parse_platform("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    for text, message in (("amd64", "want OS/ARCH"), ("linux//v7", "want OS/ARCH"), ("windows/amd64", "only linux")):
        with pytest.raises(BuildError) as caught:
            parse_platform(text)
        assert message in str(caught.value) and "--platform" in str(caught.value)


def test_a_variant_counts_only_where_both_name_one():
    assert same_platform(Platform("linux", "arm64", None), Platform("linux", "arm64", "v8"))
    assert same_platform(Platform("linux", "arm", "v7"), Platform("linux", "arm", "v7"))
    assert not same_platform(Platform("linux", "arm", "v6"), Platform("linux", "arm", "v7"))
    assert not same_platform(Platform("linux", "amd64"), Platform("linux", "arm64"))


def test_an_image_config_without_platform_fields_is_this_machines_linux():
    assert image_platform({}) == Platform("linux", host_platform().architecture)
    assert image_platform({"os": "linux", "architecture": "arm", "variant": "v7"}) == Platform("linux", "arm", "v7")


def test_run_needs_this_machines_platform():
    check_runnable(None, 3)
    check_runnable(host_platform(), 3)
    foreign = Platform("linux", "s390x" if host_platform().architecture != "s390x" else "arm64")
    with pytest.raises(BuildError) as caught:
        check_runnable(foreign, 3)
    assert f"line 3: RUN cannot run for platform {foreign}" in str(caught.value)

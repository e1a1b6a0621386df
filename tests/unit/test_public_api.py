"""The library's public names: exported by the ``supervisor`` package (docs/operations.md,
"Embedding"), imported only when used, so the CLI's start-up stays without trio."""

from __future__ import annotations

import subprocess
import sys

import pytest

import supervisor


def test_every_public_name_is_exported_from_the_package():
    from supervisor.api import Supervisor
    from supervisor.config import Config
    from supervisor.errors import DockyardError, StartError
    from supervisor.spec import ContainerSpec
    from logs.options import LogOptions

    assert (supervisor.Supervisor, supervisor.Config, supervisor.ContainerSpec, supervisor.LogOptions) == (
        Supervisor, Config, ContainerSpec, LogOptions)
    assert supervisor.StartError is StartError and issubclass(supervisor.NotFound, DockyardError)
    for name in supervisor.__all__:
        assert getattr(supervisor, name) is not None, name
    assert set(supervisor.__all__) <= set(dir(supervisor))


def test_the_package_and_the_cli_import_none_of_the_librarys_dependencies():
    code = ("import sys, supervisor, supervisor.cli, supervisor.images.tarsafe; "  # tarsafe: cp's extractor
            "print(sorted(m for m in ('trio', 'structlog', 'zmq', 'supervisor.api', 'zstandard') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    version = subprocess.run([sys.executable, "-X", "importtime", "-m", "supervisor.cli", "--version"],
                             capture_output=True, text=True)
    assert version.stdout.strip() == "dockyard 0.1.0"
    imported = {line.rsplit("|", 1)[1].strip() for line in version.stderr.splitlines() if "|" in line}
    assert not imported & {"trio", "structlog", "zmq"}, "dockyard --version imports the library's dependencies"


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        supervisor.NoSuchThing

"""scripts/setup.sh installs every program the tests and the demo call (issue 15: a green CI
on a machine with leftovers hid a missing runc)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.tools import TOOLS

TOP = Path(__file__).resolve().parents[2]
#: programs a test might reach for that a fresh Debian 12 machine does not have
#: (one string: a quoted name here is no call of the program, for any grep that looks for one)
CANDIDATES = {*TOOLS, *"crun,tini,tmux,gcc,cc,docker,dockerd,ctr,containerd,mmdebstrap,curl,jq,openssl,strace,socat,nc,keyctl,go,prove".split(",")}


def setup_packages() -> set[str]:
    text = (TOP / "scripts" / "setup.sh").read_text()
    match = re.search(r"^packages=\(([^)]*)\)", text, re.MULTILINE)
    assert match, "scripts/setup.sh has no packages=(...) line"
    return set(match.group(1).split())


def called_programs() -> dict[str, str]:
    """Programs run as a command (the first word of an argv list, or looked up with
    shutil.which / require) in tests/ (not the benchmarks, which install their own) and the demo."""
    found: dict[str, str] = {}
    sources = [path for path in (TOP / "tests").rglob("*.py") if "bench" not in path.parts]
    for path in [*sources, TOP / "scripts" / "demo.sh"]:
        text = path.read_text()
        for name in CANDIDATES:
            quoted = re.escape(name)
            if re.search(rf"""(\[\s*["']{quoted}["']|which\(["']{quoted}["']|require\([^)]*["']{quoted}["']|^\s*{quoted}\s)""",
                         text, re.MULTILINE):
                found.setdefault(name, str(path.relative_to(TOP)))
    return found


def test_setup_installs_the_package_of_every_listed_tool():
    missing = {tool: package for tool, package in TOOLS.items() if package not in setup_packages()}
    assert missing == {}, f"scripts/setup.sh does not install the packages of {missing}"


def test_every_program_the_tests_call_is_listed():
    unlisted = {name: where for name, where in called_programs().items() if name not in TOOLS}
    assert unlisted == {}, f"add these to tests/tools.py (and their package to setup.sh): {unlisted}"


def test_the_scan_finds_the_programs_the_suite_is_known_to_call():
    called = called_programs()
    for program in ("podman", "skopeo", "umoci", "iptables", "nsenter"):
        assert program in called, program

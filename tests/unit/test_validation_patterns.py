"""Every anchored validation pattern refuses a value with a newline after it (issue 25.5).

Python's ``$`` matches before a final newline, so ``re.match(r"^[a-z]+$", "web\\n")`` matches:
a name, hostname, user or tag with a trailing newline would slip through. The patterns end in
``\\Z`` (or are used with ``fullmatch``); this test finds every anchored pattern at module
level, generates values it accepts, and checks that the value plus a newline is refused.
"""

import importlib
import pkgutil
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor.errors import InvalidArgument
from supervisor.images.store import parse_reference
from supervisor.registry.reference import ReferenceError, parse as parse_registry_reference
from supervisor.spec import ContainerSpec

#: Scripts that run on their own (not imported as modules).
SCRIPTS = ("supervisor.runtime.forkserver", "workers.__main__", "supervisor.cli.__main__")


def validating_modules() -> list[str]:
    """Every module of the four packages: a validator added anywhere is checked."""
    names = []
    for package in ("bus", "logs", "supervisor", "workers"):
        module = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, f"{package}.")
                  if info.name not in SCRIPTS]
    return names


def anchored_patterns() -> list[tuple[str, re.Pattern]]:
    """Module-level compiled patterns anchored at the start: the validators."""
    found = []
    for name in validating_modules():
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if isinstance(value, re.Pattern) and value.pattern.startswith("^"):
                found.append((f"{name}.{attribute}", value))
    return found


#: Patterns whose character class takes a newline anywhere, by design: an environment
#: variable's name may hold any byte but "=" and NUL (docker checks no more).
NEWLINE_ALLOWED = {"supervisor.spec.ENV_KEY", "supervisor.exec.ENV_KEY"}
PATTERNS = [(name, pattern) for name, pattern in anchored_patterns() if name not in NEWLINE_ALLOWED]


def test_the_validators_are_found():
    names = {name for name, _ in PATTERNS}
    assert {"supervisor.spec.NAME", "supervisor.spec.HOSTNAME", "supervisor.spec.USER",
            "supervisor.images.store.TAG", "supervisor.registry.reference.TAG"} <= names


def test_no_validation_pattern_ends_in_a_dollar():
    assert [name for name, pattern in anchored_patterns() if pattern.pattern.endswith("$")] == []


@pytest.mark.parametrize("name, pattern", PATTERNS, ids=[name for name, _ in PATTERNS])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_valid_value_with_a_newline_after_it_is_refused(name, pattern, data):
    value = data.draw(st.from_regex(pattern, fullmatch=True))
    assert pattern.match(value), (name, value)
    assert pattern.match(value + "\n") is None, (name, value)


@pytest.mark.parametrize("field, value", [("name", "web\n"), ("hostname", "box\n"), ("user", "1000:1000\n"),
                                          ("user", "nobody\n")])
def test_a_spec_field_with_a_trailing_newline_is_refused(field, value):
    with pytest.raises(InvalidArgument, match=f"spec.{field}"):
        ContainerSpec(image="base", **{field: value})
    ContainerSpec(image="base", **{field: value.rstrip("\n")})


@pytest.mark.parametrize("reference", ["web:v1\n", "web\n", "library/web:latest\n"])
def test_a_reference_with_a_trailing_newline_is_refused(reference):
    with pytest.raises(InvalidArgument):
        parse_reference(reference)
    with pytest.raises(ReferenceError):
        parse_registry_reference(reference)

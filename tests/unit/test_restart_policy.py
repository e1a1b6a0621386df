"""Restart policies as a table: docker's semantics on the pure decision, with a fake clock
(run lengths are numbers, never sleeps)."""

from __future__ import annotations

import pytest

from supervisor.errors import InvalidArgument
from supervisor.restart import Exit, RestartPolicy, decide
from supervisor.spec import ContainerSpec


@pytest.mark.parametrize("text, name, retries, shown", [
    ("no", "no", 0, "no"),
    ("", "no", 0, "no"),
    ("on-failure", "on-failure", 0, "on-failure"),
    ("on-failure:3", "on-failure", 3, "on-failure:3"),
    ("on-failure:0", "on-failure", 0, "on-failure"),
    ("always", "always", 0, "always"),
    ("unless-stopped", "unless-stopped", 0, "unless-stopped"),
])
def test_parse(text, name, retries, shown):
    policy = RestartPolicy.parse(text)
    assert (policy.name, policy.maximum_retries, str(policy)) == (name, retries, shown)
    assert policy.host_config() == {"Name": name, "MaximumRetryCount": retries}


@pytest.mark.parametrize("text, says", [
    ("sometimes", "invalid restart policy 'sometimes'"),
    ("on-failure:x", "must be a whole number"),
    ("on-failure:-1", "must be a whole number"),
    ("always:3", "cannot be used with 'always'"),
    ("unless-stopped:1", "cannot be used with 'unless-stopped'"),
])
def test_bad_policies_are_refused_naming_the_flag(text, says):
    with pytest.raises(InvalidArgument) as error:
        RestartPolicy.parse(text)
    assert says in error.value.message
    assert error.value.details["flag"] == "--restart"


def test_the_spec_carries_the_policy_and_refuses_it_with_rm():
    spec = ContainerSpec.from_map({"image": "base", "restart": "on-failure:2"})
    assert spec.restart_policy == RestartPolicy("on-failure", 2)
    assert ContainerSpec.from_map(spec.to_map()) == spec
    assert ContainerSpec(image="base").restart == "no"
    with pytest.raises(InvalidArgument, match="--restart always and --rm"):
        ContainerSpec(image="base", restart="always", auto_remove=True)
    with pytest.raises(InvalidArgument, match="must be a string"):
        ContainerSpec.from_map({"image": "base", "restart": 3})


def crash(code=1, *, user_stopped=False, count=0, ran_for=0.5, previous=0, started=True) -> Exit:
    return Exit(exit_code=code, user_stopped=user_stopped, restart_count=count, ran_for=ran_for,
                previous_attempt=previous, ever_started=started)


# policy, exit, restart?
TABLE = [
    ("no", crash(1), False),
    ("no", crash(0), False),
    ("on-failure", crash(1), True),
    ("on-failure", crash(0), False),
    ("on-failure", crash(137, user_stopped=True), False),
    ("on-failure", crash(1, count=1000), True),  # no maximum
    ("on-failure:3", crash(1, count=2), True),
    ("on-failure:3", crash(1, count=3), False),
    ("always", crash(0), True),
    ("always", crash(1), True),
    ("always", crash(143, user_stopped=True), False),
    ("unless-stopped", crash(0), True),
    ("unless-stopped", crash(143, user_stopped=True), False),
    ("always", crash(127, started=False), False),  # its first start failed: docker leaves it
    ("on-failure", crash(255), True),  # killed with the daemon (reconciled): a failure
]


@pytest.mark.parametrize("policy, exit, restarts", TABLE)
def test_policy_table(policy, exit, restarts):
    decision = decide(RestartPolicy.parse(policy), exit)
    assert decision.restart is restarts, decision.reason
    if not restarts:
        assert decision.attempt == 0 and decision.reason


def test_a_crash_loop_backs_off_from_100ms_doubling_to_a_minute():
    policy = RestartPolicy.parse("always")
    attempt, delays = 0, []
    for _ in range(12):
        decision = decide(policy, crash(1, ran_for=0.2, previous=attempt))
        attempt = decision.attempt
        delays.append(decision.delay)
    assert delays[:4] == [0.1, 0.2, 0.4, 0.8]
    assert delays[-2:] == [60.0, 60.0]
    assert all(later >= earlier for earlier, later in zip(delays, delays[1:]))


def test_a_run_of_ten_seconds_resets_the_backoff():
    policy = RestartPolicy.parse("on-failure")
    assert decide(policy, crash(1, ran_for=9.9, previous=5)).attempt == 6
    decision = decide(policy, crash(1, ran_for=10.0, previous=5))
    assert (decision.attempt, decision.delay) == (1, 0.1)

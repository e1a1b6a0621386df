import pytest

from supervisor.errors import InvalidState
from supervisor.state import EVENTS, Status, advance, _TABLE


def test_every_pair_of_status_and_event_is_either_legal_or_refused_with_a_clear_error():
    for status in Status:
        for event in EVENTS:
            if (status, event) in _TABLE:
                assert advance("web", status, event) is _TABLE[(status, event)]
            else:
                with pytest.raises(InvalidState) as info:
                    advance("web", status, event)
                message = str(info.value)
                assert "web" in message and status.value in message and event.replace("_", " ") in message


def test_predicates_follow_the_table():
    assert Status.CREATED.can_start() and Status.EXITED.can_start()
    assert not Status.RUNNING.can_start() and not Status.REMOVING.can_start()
    assert Status.RUNNING.can_kill() and not Status.EXITED.can_kill()
    assert not Status.RUNNING.can_remove() and Status.RUNNING.can_remove(force=True)
    assert Status.PAUSED.running and Status.PAUSED.can_kill() and Status.PAUSED.can_remove(force=True)
    assert Status.RUNNING.can_pause() and not Status.PAUSED.can_pause() and Status.PAUSED.can_unpause()
    assert not Status.PAUSED.can_start() and not Status.PAUSED.can_remove()
    assert Status.EXITED.can_remove() and Status.DEAD.can_remove()


def test_start_of_a_running_container_names_it_and_its_state():
    with pytest.raises(InvalidState, match="cannot start container web: it is running"):
        advance("web", Status.RUNNING, "start")


def test_unknown_event_is_a_programming_error():
    with pytest.raises(ValueError):
        advance("web", Status.CREATED, "explode")

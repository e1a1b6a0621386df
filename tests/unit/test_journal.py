from supervisor.journal import Journal


def event(seq, ts):
    return {"v": 1, "topic": f"container.x.e{seq}", "seq": seq, "ts": ts, "source": "t", "data": {}}


def test_replay_by_time_window(tmp_path):
    journal = Journal(tmp_path, capacity=100)
    for seq in range(1, 11):
        journal.append(event(seq, float(seq)))
    assert [e["seq"] for e in journal.replay(since=3, until=5)] == [3, 4, 5]
    assert [e["seq"] for e in journal.replay()] == list(range(1, 11))
    assert journal.last_seq() == 10
    journal.close()


def test_bounded_keeps_the_newest_and_survives_reopen(tmp_path):
    journal = Journal(tmp_path, capacity=10)
    for seq in range(1, 24):
        journal.append(event(seq, float(seq)))
    kept = [e["seq"] for e in journal.replay()]
    assert 5 <= len(kept) <= 10 and kept == list(range(kept[0], 24))
    journal.close()
    reopened = Journal(tmp_path, capacity=10)
    assert [e["seq"] for e in reopened.replay()] == kept
    assert reopened.last_seq() == 23
    reopened.close()


def test_a_torn_tail_after_a_crash_keeps_everything_before_it(tmp_path):
    journal = Journal(tmp_path, capacity=100)
    for seq in range(1, 4):
        journal.append(event(seq, float(seq)))
    journal.close()
    with open(tmp_path / "events.1", "ab") as handle:
        handle.write(b"\x86\xa1v")  # the start of a map, cut off
    reopened = Journal(tmp_path, capacity=100)
    assert [e["seq"] for e in reopened.replay()] == [1, 2, 3]
    reopened.append(event(4, 4.0))  # appends after a torn tail must stay readable
    assert [e["seq"] for e in reopened.replay()] == [1, 2, 3, 4]
    reopened.close()


def test_replay_after_a_seq_is_a_cursor(tmp_path):
    journal = Journal(tmp_path, capacity=10)
    assert journal.first_seq() == 0
    for seq in range(1, 24):
        journal.append(event(seq, float(seq)))
    first = journal.first_seq()
    assert 14 <= first <= 19  # at least half the capacity kept
    assert [e["seq"] for e in journal.replay(after_seq=20)] == [21, 22, 23]
    assert [e["seq"] for e in journal.replay(after_seq=0)] == list(range(first, 24))
    assert [e["seq"] for e in journal.replay(since=22, after_seq=20)] == [22, 23]
    assert list(journal.replay(after_seq=23)) == []
    journal.close()

from hypothesis import given, strategies as st

from logs.lines import LineSplitter


def test_lines_across_chunks():
    splitter = LineSplitter()
    assert splitter.feed(b"hel") == []
    assert splitter.feed(b"lo\nwor") == [(b"hello\n", False)]
    assert splitter.feed(b"ld\n\n") == [(b"world\n", False), (b"\n", False)]
    assert splitter.flush() == []


def test_last_line_without_newline_comes_out_at_flush():
    splitter = LineSplitter()
    splitter.feed(b"a\nb")
    assert splitter.flush() == [(b"b", False)]


def test_long_lines_are_cut_into_partial_pieces():
    splitter = LineSplitter(max_line=4)
    out = splitter.feed(b"abcdefghij\n")
    assert out == [(b"abcd", True), (b"efgh", True), (b"ij\n", False)]


@given(st.lists(st.binary(max_size=50), max_size=30), st.integers(min_value=1, max_value=16))
def test_no_byte_is_lost_or_reordered(chunks, max_line):
    splitter = LineSplitter(max_line=max_line)
    pieces = []
    for chunk in chunks:
        pieces += splitter.feed(chunk)
    pieces += splitter.flush()
    assert b"".join(p for p, _ in pieces) == b"".join(chunks)
    assert all(len(p) <= max_line for p, _ in pieces)
    assert all(p.endswith(b"\n") or partial or i == len(pieces) - 1 for i, (p, partial) in enumerate(pieces))

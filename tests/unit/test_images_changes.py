"""supervisor/images/changes.py: diff computation (pure, and on real layers), and the walks of
diff, commit and export against a container that changes its files meanwhile (issue 25)."""

from __future__ import annotations

import ctypes
import functools
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from supervisor.images import changes, tarwrite
from supervisor.images.changes import UpperEntry, compute_diff, container_diff
from supervisor.images.fdwalk import WalkWarnings
from supervisor.images.layerview import LayerView, Meta
from supervisor.images.tarwrite import write_layer, write_tree
from tests.layers import make_lower, make_upper

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="overlay whiteouts are 0/0 devices: mknod needs root")

DIR = Meta("dir", 0o755, 0, 0, 1)
FILE = Meta("file", 0o644, 0, 0, 1)


# --- pure: diff ---------------------------------------------------------------------------


def fake_lower(tree: dict[str, Meta]):
    def lookup(path):
        return tree.get(path)

    def children(path):
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in tree if p.startswith(prefix)})

    return lookup, children


LOWER = {
    "/bin": DIR, "/bin/sh": FILE, "/bin/vi": FILE,
    "/etc": DIR, "/etc/passwd": FILE, "/etc/group": FILE,
    "/usr": DIR, "/usr/local": DIR, "/usr/local/bin": DIR,
    "/var": DIR, "/var/cache": DIR, "/var/cache/a": FILE, "/var/cache/b": FILE,
    "/link": Meta("symlink"),
}


def test_diff_added_changed_deleted_with_every_ancestor_changed():
    upper = [
        UpperEntry("/bin", DIR), UpperEntry("/bin/vi", None),               # deleted
        UpperEntry("/etc", DIR), UpperEntry("/etc/passwd", FILE),           # changed (copied up)
        UpperEntry("/new", FILE),                                           # added
        UpperEntry("/usr", DIR), UpperEntry("/usr/local", DIR), UpperEntry("/usr/local/bin", DIR),
        UpperEntry("/usr/local/bin/tool", FILE),                            # deep add
        UpperEntry("/gone", None),                                          # whiteout of nothing
    ]
    assert compute_diff(upper, *fake_lower(LOWER)) == [
        ("C", "/bin"), ("D", "/bin/vi"), ("C", "/etc"), ("C", "/etc/passwd"), ("A", "/new"),
        ("C", "/usr"), ("C", "/usr/local"), ("C", "/usr/local/bin"), ("A", "/usr/local/bin/tool"),
    ]


def test_diff_of_an_opaque_directory_deletes_what_was_below_and_changes_what_is_made_again():
    upper = [
        UpperEntry("/var", DIR),
        UpperEntry("/var/cache", DIR, opaque=True),
        UpperEntry("/var/cache/b", FILE),        # made again
        UpperEntry("/var/cache/c", FILE),        # new
        UpperEntry("/var/cache/sub", DIR),
        UpperEntry("/var/cache/sub/x", FILE),
    ]
    assert compute_diff(upper, *fake_lower(LOWER)) == [
        ("C", "/var"), ("C", "/var/cache"), ("D", "/var/cache/a"), ("C", "/var/cache/b"),
        ("A", "/var/cache/c"), ("A", "/var/cache/sub"), ("A", "/var/cache/sub/x"),
    ]


def test_diff_of_a_copied_up_directory_alone_is_empty_unless_its_metadata_changed():
    assert compute_diff([UpperEntry("/etc", DIR)], *fake_lower(LOWER)) == []
    chmodded = Meta("dir", 0o700, 0, 0, 1)
    assert compute_diff([UpperEntry("/etc", chmodded)], *fake_lower(LOWER)) == [("C", "/etc")]


def test_diff_of_a_type_change_and_a_new_directory():
    upper = [UpperEntry("/link", DIR), UpperEntry("/link/inside", FILE), UpperEntry("/etc", DIR),
             UpperEntry("/etc/group", DIR)]
    assert compute_diff(upper, *fake_lower(LOWER)) == [
        ("C", "/etc"), ("C", "/etc/group"), ("C", "/link"), ("A", "/link/inside"),
    ]


# --- the filesystem shell (root: whiteouts are devices) ---------------------------------------


@needs_root
def test_container_diff_on_real_layers(tmp_path):
    lower, upper = make_lower(tmp_path), make_upper(tmp_path)
    (upper / "keep").mkdir()  # copied up, unchanged: not reported
    os.utime(upper / "keep", ns=(os.stat(lower / "keep").st_atime_ns, os.stat(lower / "keep").st_mtime_ns))
    assert container_diff(str(upper), [str(lower)]) == [
        ("C", "/bin"), ("D", "/bin/vi"), ("C", "/etc"), ("C", "/etc/passwd"), ("A", "/fifo"), ("A", "/hard"),
        ("A", "/new"), ("A", "/soft"), ("C", "/var"), ("C", "/var/cache"), ("D", "/var/cache/a"),
        ("D", "/var/cache/b"), ("A", "/var/cache/c"),
    ]


# --- walks of a live container's files (issue 25): the container changes them meanwhile ------

RENAME_EXCHANGE = 2


def exchange(first: Path, second: Path) -> None:
    """renameat2(RENAME_EXCHANGE): what a container does to swap a directory and a symlink."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(-100, os.fsencode(str(first)), -100, os.fsencode(str(second)), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), "renameat2", str(first))


@pytest.fixture
def racing(tmp_path):
    """An upper dir with /data/sub (a directory) and /data/link (a symlink to a host directory
    holding a secret), a lower layer, and the secret."""
    host = tmp_path / "host"
    host.mkdir()
    secret = "host-secret-" + os.urandom(4).hex()
    (host / secret).write_text(secret)
    upper = tmp_path / "upper"
    (upper / "data" / "sub").mkdir(parents=True)
    (upper / "data" / "sub" / "inside").write_text("inside")
    os.symlink(str(host), upper / "data" / "link")
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    return upper, lower, secret


def meddling(entries, when: str, act):
    """The entries of a walk, with ``act()`` run right after the one at ``when`` came out:
    the container acting between two steps of the daemon's walk."""
    for entry in entries:
        yield entry
        if entry.path == when:
            act()


class MeddledView(LayerView):
    def __init__(self, layers, when, act):
        super().__init__(layers)
        self._when, self._act = when, act

    def walk(self, path="/", warnings=None):
        return meddling(super().walk(path, warnings), self._when, self._act)


def tar_names_and_data(data: bytes) -> tuple[list[str], bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        contents = b"".join(tar.extractfile(m).read() for m in tar if m.isreg())
    return names, contents


def test_a_directory_swapped_for_a_symlink_after_it_was_met_is_read_as_the_directory(racing, monkeypatch):
    upper, lower, secret = racing
    swap = functools.partial(exchange, upper / "data" / "sub", upper / "data" / "link")
    walk = changes.walk_tree
    # The walk meets /data/sub as a directory, and the container swaps it for the symlink
    # before the walk lists it.
    for operation in ("export", "commit", "diff"):
        if (upper / "data" / "sub").is_symlink():
            swap()  # back to the start
        if operation == "export":  # and cp out: the merged view
            output = io.BytesIO()
            write_tree(MeddledView([str(upper), str(lower)], "/data/sub", swap), "/", output)
        else:
            for module in (changes, tarwrite):  # diff's walk and commit's
                monkeypatch.setattr(module, "walk_tree",
                                    lambda root, found: meddling(walk(root, found), "/data/sub", swap))
            if operation == "commit":
                output = io.BytesIO()
                write_layer(str(upper), output)
            else:
                paths = [path for _, path in container_diff(str(upper), [str(lower)])]
                assert "/data/sub/inside" in paths and not any(secret in path for path in paths)
                continue
            monkeypatch.undo()
        assert (upper / "data" / "sub").is_symlink(), operation  # the swap happened
        names, contents = tar_names_and_data(output.getvalue())
        assert "data/sub/inside" in names and contents == b"inside", operation  # the directory it had opened
        assert secret not in " ".join(names) and secret.encode() not in contents, operation


def test_entries_that_vanish_or_change_type_mid_walk_are_skipped_or_taken_as_they_are(tmp_path, monkeypatch):
    lower = tmp_path / "lower"
    lower.mkdir()

    def make_upper(name: str) -> Path:
        upper = tmp_path / name
        upper.mkdir()
        for entry in ("a", "b", "c", "d", "f"):
            (upper / entry).write_text(entry)
        os.symlink("a", upper / "e")
        return upper

    def meddle(upper: Path) -> None:
        for entry in ("b", "c", "d", "e", "f"):
            (upper / entry).unlink()  # b vanishes
        (upper / "c").mkdir()  # a file becomes a directory
        os.symlink("/", upper / "d")  # a file becomes a symlink (to the host's root, seen from here)
        (upper / "e").write_text("was a link")  # a symlink becomes a file: readlink would fail (EINVAL)
        os.mkfifo(upper / "f")  # a file becomes a FIFO: opening it would block

    walk = changes.walk_tree
    for write in ("tree", "layer"):
        upper = make_upper(write)
        warnings = WalkWarnings()
        output = io.BytesIO()
        if write == "tree":
            view = MeddledView([str(upper), str(lower)], "/a", functools.partial(meddle, upper))
            write_tree(view, "/", output, warnings=warnings)
        else:
            monkeypatch.setattr(tarwrite, "walk_tree", lambda root, found: meddling(
                walk(root, found), "/a", functools.partial(meddle, upper)))
            write_layer(str(upper), output, warnings)
        with tarfile.open(fileobj=io.BytesIO(output.getvalue())) as tar:
            members = {member.name: member for member in tar}
            assert tar.extractfile(members["e"]).read() == b"was a link", write
        assert sorted(members) == ["a", "c", "d", "e", "f"], write
        assert members["c"].isdir() and members["d"].issym() and members["d"].linkname == "/", write
        assert members["f"].isfifo(), write
        assert warnings.count == 1 and warnings.messages() == ["/b vanished while it was read: skipped"], write

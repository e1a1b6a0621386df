"""supervisor/images/layerview.py: the merged view of layer directories, read without mounting."""

from __future__ import annotations

import os

import pytest

from supervisor.images.fdwalk import open_contents
from supervisor.images.layerview import LayerView
from tests.layers import make_lower, make_upper

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="overlay whiteouts are 0/0 devices: mknod needs root")


@needs_root
def test_merged_view_follows_overlay_rules(tmp_path):
    lower, upper = make_lower(tmp_path), make_upper(tmp_path)
    view = LayerView([str(upper), str(lower)])
    assert view.children("/bin") == ["sh"]
    assert view.children("/var/cache") == ["c"]
    assert view.lookup("/bin/vi") is None and view.lookup("/var/cache/a") is None
    assert view.lookup("/etc/passwd").kind == "file"
    os.symlink("/etc", upper / "etclink")
    assert view.resolve("/etclink/../bin/sh") == "/bin/sh"
    with pytest.raises(FileNotFoundError):
        view.resolve("/soft/x")  # through a file
    assert view.resolve("/soft", follow_last=True) == "/new"
    walked = [entry.path for entry in view.walk("/")]
    assert "/bin/vi" not in walked and "/var/cache/a" not in walked and "/var/cache/c" in walked


def test_symlinks_resolve_inside_the_root_never_towards_the_host(tmp_path):
    layer = tmp_path / "layer"
    (layer / "etc").mkdir(parents=True)
    (layer / "etc" / "passwd").write_text("container")
    os.symlink("/etc", layer / "escape")
    os.symlink("../../../../../../etc", layer / "up")
    view = LayerView([str(layer)])
    assert view.resolve("/escape/passwd") == "/etc/passwd"
    assert view.resolve("/up/passwd") == "/etc/passwd"  # ".." stops at the container's root
    with view.open("/etc/passwd") as entry, os.fdopen(open_contents(entry.fd)) as passwd:
        assert passwd.read() == "container"

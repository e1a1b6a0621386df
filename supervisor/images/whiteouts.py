"""How a deletion is written: overlayfs' notation and the image layer tar's, and the pure
conversion between them.

Apart from :mod:`~supervisor.images.tarsafe` (which turns tar whiteouts into overlay ones)
and :mod:`~supervisor.images.tarwrite` (which turns overlay whiteouts into tar ones)
because both directions must agree on one table, and the merged view
(:mod:`~supervisor.images.layerview`) and ``diff`` read the same notation::

    overlayfs (upper dir, layer dirs)           image layer tar (OCI / docker)
    ---------------------------------------     -----------------------------------------
    a file, link, dir, ... at its path          the same member
    a 0/0 character device ``dir/NAME``         an empty file ``dir/.wh.NAME`` (a whiteout)
    xattr ``trusted.overlay.opaque=y`` on dir   the dir, then an empty ``dir/.wh..wh..opq``

No filesystem access here.
"""

from __future__ import annotations

import os
import stat

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_XATTR_PREFIX = "trusted.overlay."
OPAQUE_XATTR = "trusted.overlay.opaque"
#: overlayfs features a layer cannot express: a commit refuses an upper dir that uses them.
UNSUPPORTED_OVERLAY_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")


def whiteout_name(name: str) -> str:
    """The tar member name of the whiteout of ``name``: ``dir/x`` -> ``dir/.wh.x``."""
    head, _, tail = name.rpartition("/")
    return f"{head}/{WHITEOUT_PREFIX}{tail}" if head else f"{WHITEOUT_PREFIX}{tail}"


def opaque_marker(directory: str) -> str:
    """The tar member that makes ``directory`` opaque: ``dir/.wh..wh..opq``."""
    return f"{directory}/{OPAQUE_MARKER}" if directory else OPAQUE_MARKER


def is_whiteout(info: os.stat_result) -> bool:
    """overlayfs' whiteout: a character device with device number 0/0."""
    return stat.S_ISCHR(info.st_mode) and info.st_rdev == 0

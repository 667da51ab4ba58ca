"""Writing a file so that a reader sees the old contents or the new ones, never a part; and the
checks of output paths a command makes before its work starts, so a run is not lost at its end to
a path it cannot write."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from worldssm.errors import WorldssmError


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:  # a full disk: name the file it was for
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


def check_out_file(path, flag: str) -> Path:
    """`path` can be written as a file: it is not a directory and its folder exists.

    Raises:
        WorldssmError: naming `flag` and what is wrong.
    """
    p = Path(path)
    if p.is_dir():
        raise WorldssmError(f"{flag} {str(p)!r} is a directory; give a file name")
    parent = p.parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise WorldssmError(f"{flag} {str(p)!r}: its folder {str(parent)!r} {what}")
    return p


def check_out_dir(path, flag: str) -> Path:
    """`path` is a directory or can be made one: nothing that is not a directory stands on it
    or on a folder above it.

    Raises:
        WorldssmError: naming `flag` and what is wrong.
    """
    p = Path(path)
    for q in (p, *p.parents):
        if q.exists():
            if not q.is_dir():
                where = "" if q == p else f" (at {str(q)!r})"
                raise WorldssmError(f"{flag} {str(p)!r}: a file stands where a directory should be{where}")
            break
    return p

"""One writer per directory: an advisory lock on a run or data directory.

`DirLock(path, purpose)` takes an exclusive `fcntl.flock` on `path/.worldssm.lock` and writes who
holds it (pid, host, time, purpose, command line) into that file. A second process that tries
the same directory gets a `DirectoryBusy` error naming the holder. The kernel drops the lock
when the holder exits, however it exits (kill -9 included), so a lock file left behind by a
dead process never blocks anyone: the next process takes the lock and rewrites the file.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

from worldssm.errors import WorldssmError

LOCK_NAME = ".worldssm.lock"


class DirectoryBusy(WorldssmError):
    """Another process holds the directory's lock; the message names it."""


class DirLock:
    """An exclusive lock on a directory for the life of this object (or a `with` block).

    Args:
        path: the directory (created if missing).
        purpose: what the holder is doing ("training", "collecting"), shown to a second process.

    Raises:
        DirectoryBusy: another live process holds the lock.
        WorldssmError: the lock file cannot be created (the message says why).
    """

    def __init__(self, path, purpose: str):
        import fcntl

        self.path = Path(path)
        self.file = self.path / LOCK_NAME
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
            self._fd = os.open(self.file, flags, 0o644)
        except OSError as exc:
            raise WorldssmError(f"cannot lock {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder()
            os.close(self._fd)
            self._fd = None
            raise DirectoryBusy(f"{self.path} is in use: {holder}; wait for it to finish or stop it") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                "purpose": purpose, "command": " ".join(sys.argv)[:500]}
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps(info).encode(), 0)

    def _read_holder(self) -> str:
        try:
            info = json.loads(os.pread(self._fd, 4096, 0).decode())
            return (f"{info['purpose']} by pid {info['pid']} on {info['host']} since {info['since']} "
                    f"({info['command']})")
        except (OSError, ValueError, KeyError, TypeError):
            return "another process holds its lock"

    def release(self) -> None:
        """Drop the lock (the file stays; it is harmless once unlocked)."""
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self):
        self.release()

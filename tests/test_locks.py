"""Directory locks: a second process is refused with the holder named; a killed holder frees it."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from worldssm.locks import LOCK_NAME, DirectoryBusy, DirLock

HOLD = textwrap.dedent("""
    import sys, time
    from worldssm.locks import DirLock
    lock = DirLock(sys.argv[1], "training")
    print("HELD", flush=True)
    time.sleep(60)
""")


def test_second_process_is_refused_and_a_killed_holder_frees_the_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        with pytest.raises(DirectoryBusy, match=rf"training by pid {holder.pid} on .* since .*wait for it"):
            DirLock(tmp_path, "collecting")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with DirLock(tmp_path, "collecting") as lock:  # the kernel dropped the dead holder's lock
        assert lock.file.name == LOCK_NAME
        assert f'"pid": {os.getpid()}' in (tmp_path / LOCK_NAME).read_text()
    DirLock(tmp_path, "again").release()  # released: free again


def test_a_symlinked_lock_file_is_refused(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).symlink_to(target)
    with pytest.raises(Exception, match="cannot lock"):
        DirLock(tmp_path / "run", "training")
    assert target.read_text() == "keep me"

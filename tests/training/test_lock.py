"""The run-folder lock: a second holder is refused with a message naming the first; a dead holder's lock is gone."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from mocokit.training.lock import LOCK_FILE, RunFolderError, RunLock, RunLocked

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock: POSIX only (Windows runs unlocked)")


def test_a_second_holder_is_refused_until_the_first_releases(tmp_path):
    run = tmp_path / "run"
    with RunLock() as first:
        first.acquire(run)
        assert first.held and f"pid {os.getpid()} on " in (run / LOCK_FILE).read_text()
        second = RunLock()
        refused = rf"{run} is in use by .*pid {os.getpid()}.*resume=auto.*Nothing was written"
        with pytest.raises(RunLocked, match=refused):
            second.acquire(run)
        assert not second.held and run.is_dir()  # the refusal did not remove the holder's folder
    assert not (run / LOCK_FILE).exists()
    with RunLock() as again:
        again.acquire(run)
        assert again.held


def test_a_folder_created_for_nothing_is_removed_and_one_that_was_written_to_is_kept(tmp_path):
    with RunLock() as lock:
        lock.acquire(tmp_path / "a" / "b" / "run")
    assert list(tmp_path.iterdir()) == []  # every folder acquire() made, and nothing else
    with RunLock() as lock:
        lock.acquire(tmp_path / "kept")
        (tmp_path / "kept" / "config.yaml").write_text("x")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["config.yaml"]


HOLDER = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"pid %d on test-host since now" % os.getpid())
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_lock_held_by_another_process_is_refused_and_vanishes_when_it_is_killed(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLocked, match=f"pid {holder.pid} on test-host"):
            RunLock().acquire(run)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (run / LOCK_FILE).exists()  # a killed holder cannot clean up, but its lock died with it
    with RunLock() as lock:
        lock.acquire(run)
        assert lock.held


def test_an_unwritable_folder_is_a_clear_error(tmp_path, monkeypatch):
    """Simulated: the tests may run as root, whom permissions do not stop."""
    real_open = os.open

    def refuse(path, *args, **kwargs):
        if str(path).endswith(LOCK_FILE):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(RunFolderError, match="cannot write in the run folder .*Permission denied.*choose another"):
        RunLock().acquire(tmp_path / "run")
    assert not (tmp_path / "run").exists()

"""One `pretrain` per run folder: an operating-system lock on `run_dir/.lock`, held while the run trains.

The lock is `flock(LOCK_EX | LOCK_NB)` on an open file, so the kernel releases it when the holder exits, however it
exits (SIGKILL, OOM killer, power cut of a remote client aside): a stopped or killed run never leaves a stale lock,
and resuming it (`resume=auto`) takes the lock again. A second `pretrain` into a folder whose run is alive is refused
with a message naming the holder (pid, host and start time, written inside the file), before it writes anything.

Only the main process of a run takes the lock (it is the only one that writes files). Two runs in one Python process
also exclude each other: flock locks belong to open files, not to processes. Where `fcntl` does not exist
(Windows) or the file system refuses locks, the run goes on unlocked after a warning.
"""

from __future__ import annotations

import errno
import os
import socket
import time
import warnings
from pathlib import Path
from types import TracebackType

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunFolderError(RuntimeError):
    """A run folder that cannot be used: not creatable or writable, or in use by another run."""


class RunLocked(RunFolderError):
    """Another live `pretrain` holds the run folder."""


class RunLock:
    """`acquire(run_dir)` creates run_dir if needed and locks it; `release()` (or leaving the `with` block) unlocks,
    deletes the lock file, and removes the folders `acquire` created if they are still empty (a run refused before
    writing anything leaves no trace)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._path: Path | None = None
        self._created: list[Path] = []  # folders acquire() made, deepest first

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, run_dir: Path) -> None:
        run_dir = Path(run_dir)
        self._created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._remove_created_folders()
            raise RunFolderError(f"cannot create the run folder {run_dir} ({error.strerror or error}); choose a "
                                 "writable run.dir") from None
        if fcntl is None:
            return
        path = run_dir / LOCK_FILE
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                self._remove_created_folders()
                raise RunFolderError(f"cannot write in the run folder {run_dir} ({error.strerror or error}); make "
                                     "it writable or choose another run.dir") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                holder = _read_holder(fd)
                os.close(fd)
                if error.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise RunLocked(
                        f"{run_dir} is in use by another `mocokit pretrain` ({holder or 'holder unknown'}). Wait for "
                        "it to finish or stop it, then run the same command again to continue (resume=auto); or "
                        "choose another run.dir. Nothing was written."
                    ) from None
                warnings.warn(f"cannot lock {path} ({error.strerror}); training without protection against a "
                              "second run in the same folder", stacklevel=2)
                return
            # The previous holder deletes the file when it releases; if that happened between our open and our
            # lock, we hold a file no one else will open: start again on the current one.
            if _same_file(fd, path):
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 .encode())
        self._fd, self._path = fd, path

    def release(self) -> None:
        if self._fd is not None:
            if self._path is not None and _same_file(self._fd, self._path):
                self._path.unlink(missing_ok=True)  # while still locked, so nobody locks the old file meanwhile
            os.close(self._fd)  # releases the lock
            self._fd = self._path = None
        self._remove_created_folders()

    def _remove_created_folders(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # only succeeds when empty: a run that wrote something keeps its folder
            except OSError:
                break
        self._created = []

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        return ""

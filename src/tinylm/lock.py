"""One writer per output: an exclusive lock on a hidden file beside the output directory.

    with hold_lock(run_dir, "run"):      # RUN's parent/.RUN.lock
        ... write RUN ...

The lock is `fcntl.flock` on `.NAME.lock` next to NAME (not inside it: a run or dataset
directory is created, renamed aside and renamed into place while it is held). The kernel
releases it when the process ends for any reason, SIGKILL included, so a dead writer
never blocks the next one. A second writer is refused at once, in one line naming the
holder's PID (written into the lock file). The file is removed on a clean release; one a
killed process leaves behind holds only a stale PID and is reused.

While the lock is held, temporary files beside or inside the output can only be a dead
writer's, so the holder may clean them up (see training/trainer.py and data/prepare.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from tinylm.errors import TinyLMError


def lock_path(target: Path) -> Path:
    """The lock file of an output directory: `.NAME.lock` beside it."""
    target = Path(target).absolute()
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def hold_lock(target: Path, what: str) -> Iterator[None]:
    """Hold the write lock of `target` for the block; `what` ("run", "dataset") names it
    in the refusal a second writer gets."""
    path = lock_path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path, target, what)
    try:
        yield
    finally:
        # Unlink before unlocking: a waiter that opened the old file sees it is gone
        # (inode check in _acquire) and starts over on a new one.
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)


def _acquire(path: Path, target: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise TinyLMError(
                f"{target}: {who} is writing this {what} (lock {path}); wait for it to "
                "finish or stop it, or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)  # the holder released and removed it between our open and flock


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None

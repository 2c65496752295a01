"""Writing files and directories whole or not at all.

Everything tinylm writes for later stages (datasets, checkpoints, results) is first
written under a temporary name beside its destination, fsynced, then renamed into place,
so a crash never leaves a damaged file under the final name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tinylm.errors import TinyLMError
from tinylm.faults import kill_point

TEMP_MARK = ".tmp-"  # .NAME.tmp-PID: being written
OLD_MARK = ".old-"  # .NAME.old-PID: being replaced


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file or nothing: a temporary file beside it, fsynced, then renamed."""
    if path.is_dir():
        raise TinyLMError(f"{path}: is a directory; name a file to write")
    tmp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        with open(tmp, mode) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        kill_point("write:before-rename")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk, say: no half-written temp file stays
        raise
    fsync_dir(path.parent)


def temp_dir_beside(dest: Path) -> Path:
    """A fresh, empty hidden directory next to dest, to build its replacement in."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}{TEMP_MARK}{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


@contextmanager
def built_dir(dest: Path) -> Iterator[Path]:
    """Build a directory's replacement in a temporary one beside it: put in place whole
    when the block ends, removed (nothing left behind) when it raises."""
    tmp = temp_dir_beside(dest)
    try:
        yield tmp
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished directory tmp to dest, replacing what was there.

    Its files are fsynced first. A directory cannot be renamed over a non-empty one, so
    an existing dest is renamed aside first and removed last.
    """
    for file in tmp.iterdir():
        if file.is_file():
            with open(file, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(tmp)
    old = dest.parent / f".{dest.name}{OLD_MARK}{os.getpid()}"
    if dest.exists():
        dest.rename(old)
        kill_point("replace:set-aside")  # the next writer (holding the lock) puts it back
    tmp.rename(dest)
    fsync_dir(dest.parent)
    shutil.rmtree(old, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temporaries(folder: Path) -> list[Path]:
    """Remove the hidden .NAME.tmp-PID / .NAME.old-PID files and directories that a killed
    writer left in `folder` (not below it). Only for the holder of the folder's lock
    (tinylm.lock): a live writer's temporaries look the same."""
    removed = []
    for p in folder.iterdir() if folder.is_dir() else ():
        if not (p.name.startswith(".") and (TEMP_MARK in p.name or OLD_MARK in p.name)):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    return removed

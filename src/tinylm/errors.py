"""The one error type a user can cause. The CLI prints its message and exits 2."""

import errno

DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class TinyLMError(Exception):
    """A problem with the user's input (path, data, config), not a bug in tinylm.

    The message is one line: what is wrong and how to fix it.
    """


def is_out_of_memory(err: BaseException) -> bool:
    """torch's CUDA OutOfMemoryError, or the CPU allocator's RuntimeError."""
    return type(err).__name__ == "OutOfMemoryError" or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )


def disk_full(err: BaseException) -> bool:
    """An OSError of a full disk or quota, or the same error inside safetensors' Rust
    writer (SafetensorError, which carries only its message)."""
    if isinstance(err, OSError):
        return err.errno in DISK_FULL
    text = str(err)
    return type(err).__name__ == "SafetensorError" and any(
        f"(os error {code})" in text for code in DISK_FULL
    )

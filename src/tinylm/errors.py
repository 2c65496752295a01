"""The one error type a user can cause. The CLI prints its message and exits 2."""


class TinyLMError(Exception):
    """A problem with the user's input (path, data, config), not a bug in tinylm.

    The message is one line: what is wrong and how to fix it.
    """


def is_out_of_memory(err: BaseException) -> bool:
    """torch's CUDA OutOfMemoryError, or the CPU allocator's RuntimeError."""
    return type(err).__name__ == "OutOfMemoryError" or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )

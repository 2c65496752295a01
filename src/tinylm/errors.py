"""The one error type a user can cause. The CLI prints its message and exits 2."""


class TinyLMError(Exception):
    """A problem with the user's input (path, data, config), not a bug in tinylm.

    The message is one line: what is wrong and how to fix it.
    """

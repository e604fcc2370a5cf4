"""One exception type for mistakes a user can fix (bad config, missing file, bad data).

The CLI prints these as a single line and exits with status 2; anything else is a bug
and keeps its traceback.
"""


class MetanbError(ValueError):
    """A user-facing error: the message says what was wrong and what to do instead."""

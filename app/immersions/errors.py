"""The one exception type a user can meet.

Anything a performer or technician can cause (a missing model, a bad audio file, a
bad config value) raises `ImmersionsError` with a message that says what went wrong
and what to do. The CLI prints it as one line and exits non-zero.
"""


class ImmersionsError(Exception):
    """A user-facing error: the message is one line, what went wrong and what to do."""

"""The one exception type that reaches the user as a one-line message.

Library code raises ``UserError`` for anything the user can fix (a missing folder, a bad flag
value, a corrupt checkpoint). The CLI front ends print its message on one line and exit with
status 2; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line with the fix."""

"""Errors that users cause: each carries a message naming the file and the fix."""


class UserError(Exception):
    """A problem with the user's input (bad file, no face, wrong model), not a bug.

    The CLI prints these as one line without a traceback; batch jobs record them and go on.
    """

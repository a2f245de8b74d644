"""Errors the command line prints as one line: problems with the installation or environment
that the user fixes (a wrong OpenCV build, a missing system library), not bugs."""


class SetupError(RuntimeError):
    """Something installed is missing or unsuitable; the message says what to install."""

"""Errors the command line prints as one line, not bugs: problems with the installation or
environment that the user fixes (a wrong OpenCV build, a missing system library), and problems
with what the user asked for (flags, paths, inputs)."""


class SetupError(RuntimeError):
    """Something installed is missing or unsuitable; the message says what to install."""


class UsageError(Exception):
    """A problem with the command line or its inputs, printed as one line (exit code 2)."""


class OutputError(RuntimeError):
    """Where results go cannot take more (a full disk, a closed pipe): what was written before
    stays intact, and the message says how much that was."""


class WeightsError(ValueError):
    """A weight file that cannot be used (missing, truncated, corrupt, or for another label
    space); the message names the file."""

"""Errors the user can fix. The CLI turns them into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input or options: the message says what is wrong and what to do."""


class Interrupted(UserError):
    """Ctrl-C or SIGTERM stopped the work; the message says how to continue (exit code 130)."""


class CorruptArtifactError(UserError):
    """A model, index or run file that is missing, damaged or does not belong with the rest."""

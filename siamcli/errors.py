"""Errors the user can fix. The CLI turns them into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input or options: the message says what is wrong and what to do."""


class CorruptArtifactError(UserError):
    """A model, index or run file that is missing, damaged or does not belong with the rest."""

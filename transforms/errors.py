"""Errors that mean "the user gave us something wrong", reported without a traceback."""


class UserError(Exception):
    """Bad input or configuration: the CLI prints the message and exits with status 2."""

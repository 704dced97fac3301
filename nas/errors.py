"""The base class of every error caused by bad user input (reported in one line, exit 2)."""


class UserError(ValueError):
    """Bad input from the user: a one-line message naming the value and what is valid."""

"""The base of every error dmgd reports to a user as a message rather than a traceback."""


class DmgdError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

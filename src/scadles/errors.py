"""The one exception type that means "bad input": the CLI turns it into exit status 2."""


class UserError(Exception):
    """Bad input from the user (config key, value, file); its message is one line naming what."""

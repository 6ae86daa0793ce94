"""User-facing errors: raised for bad input, printed by the console scripts as one line."""


class MfnsInputError(ValueError):
    """Bad user input (file, parameter, dataset). The message names the file or parameter and the problem."""

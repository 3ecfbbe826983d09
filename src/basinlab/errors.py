"""The one exception type that basinlab raises for bad input.

Its message is a single line saying what is wrong and how to fix it; the CLI prints it and exits with code 2.
"""


class BasinlabError(ValueError):
    """Bad input from the user: a missing file, an unknown preset, an impossible size, a corrupt checkpoint."""

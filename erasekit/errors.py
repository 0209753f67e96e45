"""The one exception type users see: its message is a single line that names the fix."""


class ErasekitError(Exception):
    """Bad input or a missing resource; the CLI prints the message alone, without a traceback."""

"""The one exception type for user mistakes: the CLI prints its message on one line and exits 2."""


class ReportgenError(Exception):
    """A user-facing error: bad input, missing file, incompatible checkpoint. Message names the file."""

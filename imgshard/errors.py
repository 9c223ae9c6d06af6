"""The one exception type a user is meant to read."""


class ImgshardError(Exception):
    """A problem the user can fix. Its message is one line that names the file or config key."""

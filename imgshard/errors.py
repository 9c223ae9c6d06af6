"""The one exception type a user is meant to read."""


class ImgshardError(Exception):
    """A problem the user can fix. Its message is one line that names the file or config key."""


class DiskFull(ImgshardError):
    """The output's filesystem filled up. Raised before HDF5 writes past the end of the disk where possible:
    after a failed write, HDF5 can crash the process when it frees its objects (h5py#914)."""

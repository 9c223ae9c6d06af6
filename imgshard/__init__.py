"""imgshard: a folder of training images to one HDF5 dataset, decoded in parallel into shared memory."""

__version__ = "0.1.0"

from .errors import ImgshardError  # noqa: E402
from .read import H5ImageDataset, batches  # noqa: E402

__all__ = ["H5ImageDataset", "ImgshardError", "__version__", "batches"]

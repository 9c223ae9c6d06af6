"""imgshard: a folder of training images to one HDF5 dataset, decoded in parallel into shared memory."""

__version__ = "0.4.0"

from .errors import ImgshardError  # noqa: E402
from .read import BlockSampler, H5ImageDataset, Loader, batches, collate  # noqa: E402

__all__ = ["BlockSampler", "H5ImageDataset", "ImgshardError", "Loader", "__version__", "batches", "collate"]

"""Data shared by every task: one robust image reader, bundled offline data, datamodules."""
from normapps.data.image_io import (
    IMAGE_EXTENSIONS,
    ImageFolderDataset,
    ImageReadError,
    list_images,
    load_image,
)

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "ImageReadError", "list_images", "load_image"]

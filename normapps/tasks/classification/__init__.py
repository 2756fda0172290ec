"""Image classification with a configurable norm everywhere: the normalization study task."""
from normapps.tasks.classification.module import ClassificationModule

__all__ = ["ClassificationModule"]

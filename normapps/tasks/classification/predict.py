"""Batched prediction moved to the platform (:mod:`normapps.platform.predict`), which every
classifier task uses; this path is kept for older imports."""
from normapps.platform.predict import classify_folder, predict_batches, write_predictions

__all__ = ["classify_folder", "predict_batches", "write_predictions"]

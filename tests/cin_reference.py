"""onnxruntime as the reference for the CIN ports: moved to the package so the benchmark
scripts use it from the installed normapps (kept here for the tests' imports)."""
from normapps.tasks.style_transfer.onnx_reference import float_activation_graph, psnr, session  # noqa: F401

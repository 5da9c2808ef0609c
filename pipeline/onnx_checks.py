"""Checks on an ONNX file before onnx or onnxruntime opens it: pipeline/guard/onnx.py (external data that
points outside the model's folder is refused); this name stays for its importers."""
from pipeline.guard.errors import UnsafeModelError
from pipeline.guard.onnx import check_external_data, external_data_locations

__all__ = ["UnsafeModelError", "check_external_data", "external_data_locations"]

"""Stage 3, quantize: fp32 reference.onnx -> int8 model.onnx with onnxruntime.quantization.

The target's policy (per-channel, reduce_range, signedness) comes from its config; see the
policy table in README.md. Dynamic quantization always uses uint8 activations (onnxruntime's
DynamicQuantizeLinear is u8-only), which the stamp records truthfully.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from tqdm import tqdm

from calibration.readers import BatchReader
from pipeline.config import QuantgateError
from pipeline.manifest import Manifest, QuantizationRecord, atomic_write_bytes
from pipeline.progress import step


def _value(item) -> str:
    return str(getattr(item, "value", item))


def policy(cfg) -> QuantizationRecord:
    """What the mode and target imply, and the combinations that make no sense, refused up front."""
    mode, target = _value(cfg.mode.name), cfg.target
    activation_type = "uint8" if mode == "dynamic" else _value(target.activation_type)
    method = _value(cfg.calibration.method) if mode in ("static", "qat") else None
    if mode == "qat":
        raise QuantgateError("mode=qat is not available yet (it comes with QAT support); use mode=static or "
                             "mode=dynamic")
    if mode == "dynamic" and _value(cfg.mode.quant_format) != "QDQ":
        raise QuantgateError("mode=dynamic has no quant_format choice; leave mode.quant_format at QDQ")
    return QuantizationRecord(
        mode=mode, quant_format="QOperator" if mode == "dynamic" else _value(cfg.mode.quant_format),
        weight_type=_value(target.weight_type), activation_type=activation_type,
        per_channel=bool(target.per_channel), reduce_range=bool(target.reduce_range), calibration_method=method)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType
    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def run(cfg, manifest: Manifest, calibration_batches: list | None = None) -> Manifest:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    record = policy(cfg)
    reference = manifest.path(manifest.reference_file)
    with tempfile.TemporaryDirectory(dir=manifest.folder, prefix=".quantize-") as scratch:
        output = Path(scratch) / "model.onnx"
        if record.mode == "dynamic":
            with step(f"quantize: dynamic int8 (per_channel={record.per_channel}, "
                      f"reduce_range={record.reduce_range})"):
                quantize_dynamic(reference, output, per_channel=record.per_channel,
                                 reduce_range=record.reduce_range, weight_type=_quant_type(record.weight_type))
        else:
            if not calibration_batches:
                raise QuantgateError("mode=static needs calibration batches; calibration.n_samples must be > 0")
            with step(f"quantize: static {record.quant_format} (method {record.calibration_method}, "
                      f"activations {record.activation_type}, weights {record.weight_type}, "
                      f"per_channel={record.per_channel}, reduce_range={record.reduce_range})"):
                progress = tqdm(total=len(calibration_batches), desc="calibration batches", unit="batch")
                reader = BatchReader(calibration_batches, on_batch=lambda: progress.update(1))
                method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                          "percentile": CalibrationMethod.Percentile}[record.calibration_method]
                try:
                    quantize_static(
                        reference, output, reader, quant_format=QuantFormat[record.quant_format],
                        per_channel=record.per_channel, reduce_range=record.reduce_range,
                        activation_type=_quant_type(record.activation_type),
                        weight_type=_quant_type(record.weight_type), calibrate_method=method,
                        op_types_to_quantize=list(cfg.mode.op_types_to_quantize),
                        extra_options={"CalibTensorRangeSymmetric": False})
                finally:
                    progress.close()
        atomic_write_bytes(manifest.path(manifest.model_file), output.read_bytes())
    manifest.quantization = record
    return manifest

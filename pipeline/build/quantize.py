"""Stage 3, quantize: fp32 reference.onnx -> int8 model.onnx.

`dynamic` and `static` use onnxruntime.quantization; `qat` fine-tunes with fake quantization in
torch (pipeline/build/qat.py) and exports QDQ ONNX. The target's policy (per-channel, reduce_range,
signedness) comes from its config; see the policy table in README.md. Dynamic quantization always
uses uint8 activations (onnxruntime's DynamicQuantizeLinear is u8-only); the stamp says so.
"""
from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from calibration.readers import BatchReader
from pipeline.build import reproducible
from pipeline.manifest import Manifest, QuantizationRecord
from pipeline.progress import step


def policy(cfg) -> QuantizationRecord:
    """What the mode and target imply (the combinations that make no sense are refused by
    pipeline/config/rules.py before any work)."""
    mode, target = cfg.mode.name, cfg.target
    activation_type = "uint8" if mode == "dynamic" else target.activation_type
    method = cfg.calibration.method if mode == "static" else None
    return QuantizationRecord(
        mode=mode, quant_format="QOperator" if mode == "dynamic" else cfg.mode.quant_format,
        weight_type=target.weight_type, activation_type=activation_type,
        per_channel=bool(target.per_channel), reduce_range=bool(target.reduce_range),
        calibration_method=method if mode == "static" else ("qat" if mode == "qat" else None))


@dataclass(frozen=True)
class QuantizerKnobs:
    """onnxruntime's own knobs for one build (mode.op_types_to_quantize, nodes_to_exclude, nodes_to_quantize,
    extra_options), checked by pipeline/config/rules.py and, for node names, against the graph here."""

    op_types: tuple[str, ...]
    nodes_to_exclude: tuple[str, ...] = ()
    nodes_to_quantize: tuple[str, ...] = ()
    extra_options: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg) -> "QuantizerKnobs":
        mode = cfg.mode
        options = {key: value for key, value in mode.extra_options.items() if value is not None}
        return cls(tuple(mode.op_types_to_quantize), tuple(mode.nodes_to_exclude), tuple(mode.nodes_to_quantize),
                   options)

    def excluding(self, nodes) -> "QuantizerKnobs":
        """These knobs with more nodes kept fp32 (the accuracy gate's fallback)."""
        return replace(self, nodes_to_exclude=tuple(dict.fromkeys([*self.nodes_to_exclude, *nodes])))

    def check_node_names(self, graph_path: Path) -> None:
        """Every named node exists in the fp32 graph; a typo is refused naming close matches, never ignored."""
        import difflib

        import onnx
        from pipeline.errors import UsageError
        names = [node.name for node in onnx.load(str(graph_path), load_external_data=False).graph.node]
        for key in ("nodes_to_exclude", "nodes_to_quantize"):
            unknown = [name for name in getattr(self, key) if name not in set(names)]
            if unknown:
                hints = [f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(
                    name, names, n=3)) else "") for name in unknown]
                raise UsageError(f"mode.{key}: no node {', '.join(hints)} in the fp32 graph; list its nodes with "
                                 f"`quantgate inspect {graph_path} --nodes`")


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType
    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


def quantize_onnx(record: QuantizationRecord, reference: Path, output: Path, calibration_batches: list,
                  knobs: QuantizerKnobs, quiet: bool = False) -> None:
    """onnxruntime's dynamic or static quantization of `reference` into `output`, per the policy and knobs."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    chosen = {"op_types_to_quantize": list(knobs.op_types), "nodes_to_exclude": list(knobs.nodes_to_exclude),
              "nodes_to_quantize": list(knobs.nodes_to_quantize) or None}
    if record.mode == "dynamic":
        quantize_dynamic(reference, output, per_channel=record.per_channel, reduce_range=record.reduce_range,
                         weight_type=_quant_type(record.weight_type), extra_options=dict(knobs.extra_options),
                         **chosen)
        return
    progress = tqdm(total=len(calibration_batches), desc="calibration batches", unit="batch", disable=quiet)
    # onnxruntime logs a generic "consider pre-processing" warning on every call; ours are explicit.
    logging.getLogger().setLevel(logging.ERROR)
    reader = BatchReader(calibration_batches, on_batch=lambda: progress.update(1))
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[record.calibration_method or "minmax"]
    try:
        quantize_static(
            reference, output, reader, quant_format=QuantFormat[record.quant_format],
            per_channel=record.per_channel, reduce_range=record.reduce_range,
            activation_type=_quant_type(record.activation_type), weight_type=_quant_type(record.weight_type),
            calibrate_method=method, extra_options={"CalibTensorRangeSymmetric": False, **knobs.extra_options},
            **chosen)
    finally:
        progress.close()


def run(cfg, manifest: Manifest, nodes_to_exclude: list[str] = ()) -> Manifest:
    from pipeline.build.calibrate import load_batches

    record = policy(cfg)
    reference = manifest.path(manifest.reference_file)
    knobs = QuantizerKnobs.from_config(cfg).excluding(nodes_to_exclude)
    knobs.check_node_names(reference)
    calibration_batches = load_batches(manifest.path(manifest.calibration_file))
    with tempfile.TemporaryDirectory(dir=manifest.folder, prefix=".quantize-") as scratch:
        output = Path(scratch) / "model.onnx"
        excluded = f", {len(knobs.nodes_to_exclude)} node(s) kept fp32" if knobs.nodes_to_exclude else ""
        if record.mode == "qat":
            from pipeline.build import qat
            with step(f"quantize: QAT, {cfg.mode.qat_steps} fake-quant steps (activations {record.activation_type}, "
                      f"weights {record.weight_type}, per_channel={record.per_channel}, "
                      f"reduce_range={record.reduce_range})"):
                manifest.qat = qat.train_and_export(cfg, record, calibration_batches, output)
        else:
            what = "dynamic int8" if record.mode == "dynamic" else (
                f"static {record.quant_format} (method {record.calibration_method}, activations "
                f"{record.activation_type}, weights {record.weight_type})")
            with step(f"quantize: {what}, per_channel={record.per_channel}, reduce_range={record.reduce_range}"
                      f"{excluded}"):
                quantize_onnx(record, reference, output, calibration_batches, knobs)
        # onnxruntime's quantizer copies node metadata, and QAT's export writes its own: strip again,
        # keeping it in debug/model.nodes.json (quantized nodes point at the reference nodes they replace).
        reproducible.strip_file(manifest.folder, manifest.model_file, manifest.reference_file, source=output)
    manifest.quantization = record
    return manifest

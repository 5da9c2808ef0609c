"""Stage 6, hub files: for a model that came from a transformers checkpoint, what Optimum's
`ORTModelFor*.from_pretrained(folder, file_name="model.onnx")` and transformers' Auto classes need beside the
artifact: `config.json`, the tokenizer's or image processor's files, and `ort_config.json` describing the
quantization in Optimum's `ORTConfig` format (with a `quantgate` section: target and policy). Models without a
checkpoint (digits_cnn, an ONNX file, a torch factory) get none.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from pipeline.builder.checkpoints import PREPROCESSING_FILES, check_copied_files
from pipeline.builder.models import model_family
from pipeline.builder.quantize import QuantizerKnobs
from pipeline.builder.user_files import contained_file
from pipeline.manifest import Manifest, atomic_write_bytes

# The checkpoint's files a loader reads besides the weights (tokenizers of every kind, image processors).
ORT_CONFIG_FILE = "ort_config.json"
ORT_QUANT_TYPES = {"uint8": "QUInt8", "int8": "QInt8"}


def ort_config(cfg, manifest: Manifest) -> dict:
    """Optimum's ORTConfig.to_dict() for the quantization model.onnx was built with."""
    record = manifest.quantization
    knobs = QuantizerKnobs.from_config(cfg).for_graph(manifest.path(manifest.reference_file), record.mode)
    fallback_fp32 = [name for name in manifest.fallback.excluded_nodes if name not in manifest.fallback.dynamic_nodes] \
        if manifest.fallback else []
    excluded = list(dict.fromkeys([*knobs.nodes_to_exclude, *fallback_fp32, *knobs.fp32_convs]))
    options = knobs.extra_options
    return {
        "opset": manifest.opset, "use_external_data_format": False, "one_external_file": True, "optimization": {},
        "quantization": {
            "is_static": record.mode != "dynamic", "format": record.quant_format,
            "mode": "IntegerOps" if record.mode == "dynamic" else "QLinearOps",
            "activations_dtype": ORT_QUANT_TYPES[record.activation_type],
            "activations_symmetric": bool(options.get("ActivationSymmetric", False)),
            "weights_dtype": ORT_QUANT_TYPES[record.weight_type],
            "weights_symmetric": bool(options.get("WeightSymmetric", True)),
            "per_channel": record.per_channel, "reduce_range": record.reduce_range,
            "nodes_to_quantize": list(knobs.nodes_to_quantize), "nodes_to_exclude": excluded,
            "operators_to_quantize": list(knobs.op_types), "qdq_add_pair_to_weight": False, "qdq_dedicated_pair": False},
        "quantgate": {"target": manifest.target, "mode": record.mode, "calibration_method": record.calibration_method,
                      "artifact": manifest.model_file, "note": "written by quantgate; model.onnx is already quantized"},
    }


def run(cfg, manifest: Manifest) -> Manifest:
    checkpoint: Path | None = model_family(cfg).checkpoint_folder
    if checkpoint is None:
        return manifest
    check_copied_files(checkpoint)  # again, at copy time: the folder may have changed since the build began
    config = json.loads((checkpoint / "config.json").read_bytes())
    config.pop("_name_or_path", None)  # where it was loaded from: not part of the artifact
    atomic_write_bytes(manifest.path("config.json"), (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())
    for name in PREPROCESSING_FILES:
        source = contained_file(checkpoint, name)
        if source is not None:
            shutil.copyfile(source, manifest.path(name))
    atomic_write_bytes(manifest.path(ORT_CONFIG_FILE),
                       (json.dumps(ort_config(cfg, manifest), indent=2, sort_keys=True) + "\n").encode())
    return manifest

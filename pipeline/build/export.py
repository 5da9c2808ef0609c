"""Stage 1, load: the float model and its fp32 ONNX reference (dynamic batch and sequence axes).

For text models the graph is a sentence embedding (transformer, mean pooling over the tokens
`attention_mask` marks, L2 normalisation); the mask is an input, so padded batches give the same
embeddings as unpadded ones. For digits_cnn the pipeline trains the model first.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

from pipeline.build import reproducible
from pipeline.manifest import Manifest, atomic_write_bytes
from pipeline.build.models import model_family
from pipeline.progress import step


def export_onnx(model, example_inputs: tuple, dynamic_shapes: dict, input_names: list[str],
                output_names: list[str], opset: int) -> bytes:
    import torch

    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # The exporter warns about axis renaming and torchvision ops these models do not use.
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        target = Path(scratch) / "model.onnx"
        program = torch.onnx.export(
            model, example_inputs, dynamo=True, opset_version=opset, input_names=input_names,
            output_names=output_names, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
        program.save(str(target), external_data=False)
        return target.read_bytes()


def fit_to_runtime(cfg, manifest: Manifest, onnx_bytes: bytes) -> tuple[bytes, int]:
    """The fp32 export lowered to what the target runtime loads (IR version, opset), before
    quantization, so the quantizer works on (and keeps) versions that runtime accepts."""
    import onnx

    from pipeline.runtimes import venvs
    env = venvs.prepare(venvs.resolve(cfg.runtime))
    manifest.runtime = env.record()
    model, changes = venvs.fit_model(onnx.load_from_string(onnx_bytes), env.limits, cfg.model.name)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if not changes:
        return onnx_bytes, opset
    with step(f"export: fit to onnxruntime {env.limits['versions']['onnxruntime']} ({env.runtime.name}): "
              f"{', '.join(changes)}"):
        return model.SerializeToString(deterministic=True), opset


def run(cfg, manifest: Manifest) -> Manifest:
    import torch

    family = model_family(cfg)
    if hasattr(family, "reference_onnx"):  # model=onnx: the user's fp32 file is the reference
        with step(f"export: {cfg.model.name} ({family.source_name}): the fp32 ONNX file as the reference"):
            onnx_bytes = family.reference_onnx()
    else:
        with step(f"export: {cfg.model.name} ({family.source_name}) to ONNX (opset {cfg.model.opset})"):
            torch.manual_seed(int(cfg.model.seed))
            model = family.load_torch()
            try:
                onnx_bytes = export_onnx(model, family.example_inputs(), family.dynamic_shapes(), family.input_names,
                                         family.output_names, int(cfg.model.opset))
            except Exception as error:
                if not hasattr(family, "export_refused"):  # model=torch: the user's module, the user's fix
                    raise
                raise family.export_refused(error) from None
    onnx_bytes, opset = fit_to_runtime(cfg, manifest, onnx_bytes)
    # The exporter's per-node debug metadata (stack traces with this machine's paths) goes to
    # debug/reference.nodes.json, not into the artifact: same inputs, same bytes, in any folder.
    onnx_bytes, stripped, stripped_model = reproducible.strip_bytes(onnx_bytes)
    atomic_write_bytes(manifest.path(manifest.reference_file), onnx_bytes)
    reproducible.write_sidecar(manifest.folder, manifest.reference_file, stripped_model, stripped)
    manifest.source_model = family.source_name
    manifest.source_weights_sha256 = family.weights_sha256()
    manifest.model_kind = family.kind
    manifest.input_names, manifest.output_names = list(family.input_names), list(family.output_names)
    manifest.opset = opset
    manifest.reference_size_bytes = len(onnx_bytes)
    return manifest

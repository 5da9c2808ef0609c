"""Stage 1, load: the float model and its fp32 ONNX reference (dynamic batch and sequence axes).

For text models the graph is a sentence embedding (transformer, mean pooling over the tokens
`attention_mask` marks, L2 normalisation); the mask is an input, so padded batches give the same
embeddings as unpadded ones. For digits_cnn the pipeline trains the model first.

With model.fuse (transformer encoders: MiniLM, and model=hf's BERT-like text encoders, `fusable`, see
pipeline/builder/hf_family.py), the encoder is loaded with eager attention and exported by
torch's TorchScript exporter, the graph onnxruntime's transformer optimizer recognises (on the dynamo
exporter's sdpa graph it fuses no Attention; measured in ../shared/FACTS.md), then fused
(pipeline/builder/fuse.py): reference.onnx is the fused graph, debug/reference.unfused.onnx the export.
The TorchScript export also takes about 2 s where the dynamo export takes about 15 s.
"""
from __future__ import annotations

import dataclasses
import logging
import tempfile
import warnings
from pathlib import Path

from calibration.errors import one_line
from pipeline.builder import reference_cache, reproducible
from pipeline.builder.fuse import CONTRIB_DOMAIN, fuse_transformer
from pipeline.manifest import DEBUG_DIR, FusionRecord, Manifest, atomic_write_bytes
from pipeline.builder.models import model_family
from pipeline.errors import InputError, QuantgateError
from pipeline.progress import say, step
from pipeline.runtimes import venvs


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


def export_torchscript_instead(cfg, family, error: Exception) -> bytes:
    """A transformers architecture the dynamo exporter cannot take (Swin's windowed views of a dynamic batch: "Cannot
    view a tensor with shape [4*s99, 16, 2, 8]"), exported by the TorchScript exporter, as Optimum exports it; both
    failing is refused in words, with the way around quantgate's exporters."""
    import torch

    say(f"export: the dynamo exporter cannot export {cfg.model.name} ({one_line(error, limit=300)}); trying the "
        f"TorchScript exporter")
    torch.manual_seed(int(cfg.model.seed))
    try:
        with step(f"export: {cfg.model.name} ({family.source_name}) to ONNX (opset {cfg.model.opset}, TorchScript "
                  f"exporter)"):
            return export_torchscript(family.load_torch(), family.example_inputs(), family.dynamic_shapes(),
                                      family.input_names, family.output_names, int(cfg.model.opset))
    except Exception as second:  # noqa: BLE001 - any exporter failure: the model cannot be exported here
        raise InputError(f"neither of torch's ONNX exporters can export {family.source_name}: dynamo: "
                         f"{one_line(error, limit=300)}; TorchScript: {one_line(second, limit=300)}. Export it to "
                         f"ONNX with a dynamic batch axis yourself (e.g. optimum-cli export onnx) and build it with "
                         f"model=onnx model.path=FILE.onnx calibration=npz calibration.path=INPUTS.npz") from None


def export_torchscript(model, example_inputs: tuple, dynamic_shapes: tuple, input_names: list[str],
                       output_names: list[str], opset: int) -> bytes:
    """torch's TorchScript ONNX exporter (`dynamo=False`; deprecated in torch 2.13 but kept there), whose graphs
    onnxruntime's transformer optimizer fuses. Dynamic axes are named after `dynamic_shapes`' Dims. The graph must
    take every input in `input_names` (the exporter drops an input the model ignores)."""
    import io

    import onnx
    import torch

    dynamic_axes = {name: {axis: dim.__name__ for axis, dim in shape.items()}
                    for name, shape in zip(input_names, dynamic_shapes)}
    dynamic_axes.update({name: {0: "batch"} for name in output_names})
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's DeprecationWarning and tracer warnings
        torch.onnx.export(model, example_inputs, buffer, dynamo=False, opset_version=opset, input_names=input_names,
                          output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    taken = [i.name for i in onnx.load_from_string(buffer.getvalue()).graph.input]
    if taken != list(input_names):
        dropped = [name for name in input_names if name not in taken]
        raise QuantgateError(f"the TorchScript export takes {taken}, not {list(input_names)} (the model ignores "
                             f"{', '.join(dropped) or 'some'}); build it unfused with model.fuse=false")
    return buffer.getvalue()


def fused_torchscript_export(family, module, opset: int) -> bytes:
    """`module` (the family's, eager attention) exported by TorchScript and fused: the graph of reference.onnx with
    other weights (QAT's fine-tuned ones)."""
    import onnx

    onnx_bytes = export_torchscript(module, family.example_inputs(), family.dynamic_shapes(), family.input_names,
                                    family.output_names, opset)
    fused, _ = fuse_transformer(onnx.load_from_string(onnx_bytes), *family.attention_shape())
    return fused.SerializeToString(deterministic=True)


def fit_to_runtime(env, cfg, onnx_bytes: bytes) -> tuple[bytes, int]:
    """The fp32 export lowered to what the target runtime `env` loads (IR version, opset), before
    quantization, so the quantizer works on (and keeps) versions that runtime accepts."""
    import onnx

    model, changes = venvs.fit_model(onnx.load_from_string(onnx_bytes), env.limits, cfg.model.name)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if not changes:
        return onnx_bytes, opset
    with step(f"export: fit to onnxruntime {env.limits['versions']['onnxruntime']} ({env.runtime.name}): "
              f"{', '.join(changes)}"):
        return model.SerializeToString(deterministic=True), opset


UNFUSED_REFERENCE_FILE = f"{DEBUG_DIR}/reference.unfused.onnx"  # the export before fusion, for debugging


def fuse(cfg, manifest: Manifest, family, onnx_bytes: bytes):
    """The fused fp32 graph (onnx.ModelProto) of `onnx_bytes`; the unfused one goes to
    debug/reference.unfused.onnx."""
    import onnx

    num_heads, hidden_size = family.attention_shape()
    with step(f"export: fuse transformer operators (onnxruntime's transformer optimizer, {num_heads} heads, "
              f"hidden size {hidden_size})"):
        fused, record = fuse_transformer(onnx.load_from_string(onnx_bytes), num_heads, hidden_size)
    unfused, _, _ = reproducible.strip_bytes(onnx_bytes)
    manifest.path(DEBUG_DIR).mkdir(exist_ok=True)
    atomic_write_bytes(manifest.path(UNFUSED_REFERENCE_FILE), unfused)
    manifest.fusion = record
    say("export: fused " + (", ".join(f"{count} {op}" for op, count in record.operators.items()) or "nothing")
        + "".join(f"; left unfused: {reason}" for reason in record.left_unfused))
    return fused


def export_torch(cfg, family, fused: bool) -> bytes:
    """The family's torch module as ONNX: fused, by the TorchScript exporter with eager attention; otherwise by the
    dynamo exporter, then (unless the family refuses in its own words) the TorchScript exporter."""
    import torch

    exporter = "TorchScript exporter, eager attention" if fused else "dynamo exporter"
    label = f"export: {cfg.model.name} ({family.source_name}) to ONNX (opset {cfg.model.opset}, {exporter})"
    torch.manual_seed(int(cfg.model.seed))
    if fused:
        with step(label):
            return export_torchscript(family.load_torch(attention="eager"), family.example_inputs(),
                                      family.dynamic_shapes(), family.input_names, family.output_names,
                                      int(cfg.model.opset))
    try:
        with step(label):
            return export_onnx(family.load_torch(), family.example_inputs(), family.dynamic_shapes(),
                               family.input_names, family.output_names, int(cfg.model.opset))
    except Exception as error:
        refusal = family.export_refused(error)  # model=torch: the user's module, the user's fix
        if refusal is not None:
            raise refusal from None
        return export_torchscript_instead(cfg, family, error)


def export_reference(cfg, manifest: Manifest, family, fused: bool, env) -> dict:
    """Export (and with `fused`, fuse) the family's model; write reference.onnx, its sidecar and, fused, the
    unfused export; return what the manifest takes from it: {"fusion": FusionRecord as a dict or None, "opset"}."""
    import onnx

    onnx_bytes = family.reference_onnx()  # model=onnx: the user's fp32 file is the reference
    if onnx_bytes is not None:
        say(f"export: {cfg.model.name} ({family.source_name}): the fp32 ONNX file as the reference")
    else:
        onnx_bytes = export_torch(cfg, family, fused)
    onnx_bytes, opset = fit_to_runtime(env, cfg, onnx_bytes)
    model = fuse(cfg, manifest, family, onnx_bytes) if fused else onnx.load_from_string(onnx_bytes)
    # The exporter's per-node debug metadata (stack traces with this machine's paths) goes to
    # debug/reference.nodes.json, not into the artifact: same inputs, same bytes, in any folder.
    stripped = reproducible.strip_onnx(model)
    atomic_write_bytes(manifest.path(manifest.reference_file), model.SerializeToString(deterministic=True))
    reproducible.write_sidecar(manifest.folder, manifest.reference_file, model, stripped)
    return {"fusion": dataclasses.asdict(manifest.fusion) if fused else None, "opset": opset}


def export_or_reuse(cfg, manifest: Manifest, family, fused: bool, env) -> dict:
    """export_reference's record, from the reference cache when the family's export is kept there (a checkpoint's)
    and the cache is on; manifest.reference_cache says which ("reused", "built", "off")."""
    cache = reference_cache.usable_root(cfg, family, say)
    if cache is None:
        manifest.reference_cache = "off"
        return export_reference(cfg, manifest, family, fused, env)
    files = [manifest.reference_file, reproducible.debug_file_for(manifest.reference_file)]
    record = reference_cache.reference(cache, cfg, manifest, family, files + [UNFUSED_REFERENCE_FILE] * fused,
                                       lambda: export_reference(cfg, manifest, family, fused, env), say)
    if record["status"] == "reused":
        fused_operators = ", ".join(f"{n} {op}" for op, n in (record["fusion"] or {}).get("operators", {}).items())
        say(f"export: {cfg.model.name}: reference.onnx from the reference cache (exported {record['time_utc']}; "
            f"same checkpoint, config, versions and export code; reference_cache=false exports anew)"
            + (f"; fused {fused_operators}" if fused_operators else ""))
    manifest.reference_cache = record["status"]
    return record


def run(cfg, manifest: Manifest) -> Manifest:
    family = model_family(cfg)
    env = venvs.prepare(venvs.resolve(cfg.runtime))
    manifest.runtime = env.record()
    fused = bool(cfg.model.fuse) and family.fusable
    if fused and CONTRIB_DOMAIN not in manifest.runtime.get("max_opsets", {}):
        say(f"export: not fused: onnxruntime {manifest.runtime['versions']['onnxruntime']} ({manifest.runtime['name']}) "
            f"has no {CONTRIB_DOMAIN} operators (a minimal build?); reference.onnx is the unfused export")
        fused = False
    if family.sentence_head is not None:  # text embeddings: what follows the transformer
        manifest.sentence_embedding = family.sentence_head.describe()
        say(f"export: sentence embedding: {manifest.sentence_embedding}")
    record = export_or_reuse(cfg, manifest, family, fused, env)
    manifest.fusion = FusionRecord(**record["fusion"]) if record["fusion"] else None
    manifest.source_model = family.source_name
    manifest.source_weights_sha256 = family.weights_sha256()
    manifest.model_kind = family.kind
    manifest.input_names, manifest.output_names = list(family.input_names), list(family.output_names)
    if family.layout is not None:  # model=onnx: found from the graph (pipeline/layout.py)
        manifest.batch_axes = family.layout.to_json()
    manifest.opset = record["opset"]
    manifest.reference_size_bytes = manifest.path(manifest.reference_file).stat().st_size
    return manifest

"""Stage 3, quantize: fp32 reference.onnx -> int8 model.onnx.

`dynamic` and `static` use onnxruntime.quantization; `qat` fine-tunes with fake quantization in
torch (pipeline/builder/qat.py) and exports QDQ ONNX (a fused encoder: its fine-tuned weights, quantized here).

A static build is static QDQ where onnxruntime has a QDQ rule, and dynamic int8 where it has none: the fused
transformer operators (Attention, EmbedLayerNormalization) become QAttention and QEmbedLayerNormalization,
and the MatMuls the accuracy gate takes out of static int8 become DynamicQuantizeMatMul (other operators it
takes out stay fp32). MatMul outputs are not quantized (`OpTypesToExcludeOutputQuantization`): onnxruntime
then runs MatMulIntegerToFloat into the fp32 SkipLayerNormalization/BiasGelu that follow, with no Q/DQ pair
on the way and no per-tensor rounding of the output (MiniLM: cosine 0.937 -> 0.988 with every MatMul static).

The target's policy (per-channel, reduce_range, signedness) comes from its config; see the policy table in
docs/guides/targets.md. Dynamic quantization always uses uint8 activations (onnxruntime's DynamicQuantizeLinear is u8-only);
the stamp says so.
"""
from __future__ import annotations

import logging
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm import tqdm

from calibration.readers import BatchReader
from pipeline.builder import reproducible
from pipeline.builder.int8_nodes import fp32_words, quantizer_options, subgraph_counts
from pipeline.errors import InputError
from pipeline.manifest import Manifest, QuantizationRecord
from pipeline.progress import say, step


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


# Operators onnxruntime quantizes dynamically but has no QDQ rule for: dynamic int8 in a static build.
DYNAMIC_IN_STATIC = ("Attention", "EmbedLayerNormalization")
# Operators the gate moves from static to dynamic int8 (DynamicQuantizeMatMul); others it keeps fp32.
DYNAMIC_FALLBACK_OPS = ("MatMul",)
# Static QDQ leaves these operators' outputs in fp32 (MatMulIntegerToFloat), unless extra_options say otherwise.
STATIC_FLOAT_OUTPUT_OPS = ["MatMul"]
# Operators whose graphs static int8 runs in int8 from one convolution to the next (QuantizerKnobs.for_graph).
CONVOLUTIONS = ("Conv", "ConvTranspose")
# ... and whose outputs it leaves fp32 there: a classifier's Gemm head runs as QGemm with fp32 output (test CNN,
# batch 1, 2 threads, VNNI host: 0.67x -> 0.65x fp32, and logits no longer rounded to 8 bits per tensor).
CONV_GRAPH_FLOAT_OUTPUT_OPS = ("Gemm",)
# The extra_options onnxruntime's dynamic quantizer takes too (the dynamic pass of a static build).
DYNAMIC_EXTRA_OPTIONS = ("WeightSymmetric", "ActivationSymmetric")


@dataclass(frozen=True)
class QuantizerKnobs:
    """onnxruntime's own knobs for one build (mode.op_types_to_quantize, nodes_to_exclude, nodes_to_quantize,
    extra_options), checked by pipeline/config/rules.py and, for node names, against the graph here."""

    op_types: tuple[str, ...]
    nodes_to_exclude: tuple[str, ...] = ()
    nodes_to_quantize: tuple[str, ...] = ()
    extra_options: dict = field(default_factory=dict)
    fallback_nodes: tuple[str, ...] = ()  # the accuracy gate's: out of the mode's quantizer (see module docstring)
    conv_graph_op_types: tuple[str, ...] = ()  # static int8 of a graph with convolutions quantizes these too
    conv_min_reduction: int = 0  # ... and keeps convolutions with a smaller reduction fp32
    conv_fp32_min_macs: int = 0  # ... if they do at least this many multiply-adds per sample
    fp32_convs: tuple[str, ...] = ()  # those convolutions, found in the graph (for_graph)
    float_output_ops: tuple[str, ...] = tuple(STATIC_FLOAT_OUTPUT_OPS)  # static QDQ leaves their outputs fp32

    @classmethod
    def from_config(cls, cfg) -> "QuantizerKnobs":
        mode = cfg.mode
        options = {key: value for key, value in mode.extra_options.items() if value is not None}
        return cls(tuple(mode.op_types_to_quantize), tuple(mode.nodes_to_exclude), tuple(mode.nodes_to_quantize),
                   options, conv_graph_op_types=tuple(mode.conv_graph_op_types),
                   conv_min_reduction=int(mode.conv_min_reduction), conv_fp32_min_macs=int(mode.conv_fp32_min_macs))

    def for_graph(self, graph_path: Path, mode: str) -> "QuantizerKnobs":
        """These knobs for one fp32 graph (see `prepared`)."""
        return self.prepared(graph_path, mode)[0]

    def prepared(self, graph_path: Path, mode: str):
        """(these knobs for one fp32 graph, the graph static int8 quantizes in its place or None). A static build of a
        graph with convolutions quantizes conv_graph_op_types too (int8 from one QLinearConv to the next), keeps a Gemm
        head's output fp32 (no 8-bit rounding of the logits, no DequantizeLinear after it), keeps a stem convolution
        with a reduction below conv_min_reduction fp32 where it does enough work to matter (schema.ModeConfig), and
        quantizes the graph with its zero Pads fused into its convolutions where it has any
        (pipeline/builder/conv_prep.py; a conv_prep.Prepared)."""
        import onnx

        from pipeline.builder.conv_prep import prepare
        if mode != "static":
            return self, None
        model = onnx.load(str(graph_path), load_external_data=False)
        if not any(node.op_type in CONVOLUTIONS for node in model.graph.node):
            return self, None
        prepared = prepare(model)
        knobs = replace(self, op_types=tuple(dict.fromkeys([*self.op_types, *self.conv_graph_op_types])),
                        float_output_ops=tuple(dict.fromkeys([*self.float_output_ops, *CONV_GRAPH_FLOAT_OUTPUT_OPS])),
                        fp32_convs=tuple(self._slow_int8_convs(prepared.model)))
        return knobs, prepared if prepared.pads_fused else None

    def _slow_int8_convs(self, model) -> list[str]:
        """Non-grouped convolutions that read a graph input (the stem) with a reduction below conv_min_reduction and at
        least conv_fp32_min_macs multiply-adds per sample (output size from onnx shape inference; unknown sizes are
        left int8). A convolution inside the graph stays int8 whatever its reduction: fp32 there would cost a layout
        change on each side (transformers' MobileNetV2, 96x96: its three 1x1 convolutions with 16 and 24 input
        channels fp32 too, 0.72x fp32 at batch 1; int8, 0.67x)."""
        import onnx
        weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
        graph_inputs = {value.name for value in model.graph.input} - set(weights)
        outputs = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                   for v in onnx.shape_inference.infer_shapes(model).graph.value_info}
        slow = []
        for node in model.graph.node:
            shape = weights.get(node.input[1], ()) if node.op_type == "Conv" and len(node.input) > 1 else ()
            out = outputs.get(node.output[0], [])
            if len(shape) != 4 or _group(node) != 1 or len(out) != 4 or 0 in out[1:]:
                continue
            if node.input[0] not in graph_inputs:
                continue
            reduction = shape[1] * shape[2] * shape[3]
            if reduction < self.conv_min_reduction and reduction * out[1] * out[2] * out[3] >= self.conv_fp32_min_macs:
                slow.append(node.name)
        return slow

    def with_fallback(self, nodes) -> "QuantizerKnobs":
        """These knobs with the accuracy gate's fallback nodes."""
        return replace(self, fallback_nodes=tuple(dict.fromkeys([*self.fallback_nodes, *nodes])))

    @property
    def out_of_main_pass(self) -> list[str]:
        """Nodes the mode's own quantizer leaves alone: the user's fp32 nodes and the gate's fallback."""
        return list(dict.fromkeys([*self.nodes_to_exclude, *self.fallback_nodes, *self.fp32_convs]))

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


def _group(node) -> int:
    return next((attribute.i for attribute in node.attribute if attribute.name == "group"), 1)


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType
    return {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[name]


@contextmanager
def computed_weights_named(reference: Path, mode: str):
    """onnxruntime's dynamic quantizer raises ValueError("Expected W to be an initializer") for a convolution whose
    weight the graph computes with an operator the export stage does not fold (pipeline/builder/conventions.py): said
    in words, naming the nodes and the fix, instead of a traceback."""
    import onnx

    try:
        yield
    except ValueError as error:
        match = re.fullmatch(r"Expected (.+) to be an initializer", str(error))
        if match is None:
            raise
        readers = [node.name for node in onnx.load(str(reference), load_external_data=False).graph.node
                   if match[1] in node.input]
        raise InputError(f"mode={mode}: the weight {match[1]} of {', '.join(readers)} is computed in the graph, not "
                         f"stored, and onnxruntime's quantizer quantizes only stored weights; keep those nodes fp32 "
                         f"with mode.nodes_to_exclude=[{','.join(readers)}], or export the model with the weight "
                         f"folded into an initializer") from None


def quantize_onnx(record: QuantizationRecord, reference: Path, output: Path, calibration_batches: list,
                  knobs: QuantizerKnobs, quiet: bool = False, qdq_only: bool = False) -> list[str]:
    """onnxruntime's dynamic or static quantization of `reference` into `output`, per the policy and knobs; returns
    the nodes a static build quantized dynamically (none with `qdq_only`: a pure QDQ model, as the gate ranks)."""
    with computed_weights_named(reference, record.mode):
        return _quantize_onnx(record, reference, output, calibration_batches, knobs, quiet, qdq_only)


def _quantize_onnx(record: QuantizationRecord, reference: Path, output: Path, calibration_batches: list,
                   knobs: QuantizerKnobs, quiet: bool, qdq_only: bool) -> list[str]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_dynamic, quantize_static

    chosen = {"op_types_to_quantize": list(knobs.op_types), "nodes_to_exclude": knobs.out_of_main_pass,
              "nodes_to_quantize": list(knobs.nodes_to_quantize) or None}
    if record.mode == "dynamic":
        import onnx
        inside = quantizer_options(onnx.load(str(reference), load_external_data=False), record.mode)
        quantize_dynamic(reference, output, per_channel=record.per_channel, reduce_range=record.reduce_range,
                         weight_type=_quant_type(record.weight_type), extra_options={**inside, **knobs.extra_options},
                         **chosen)
        return []
    progress = tqdm(total=len(calibration_batches), desc="calibration batches", unit="batch", disable=quiet)
    # onnxruntime logs a generic "consider pre-processing" warning on every call; ours are explicit.
    logging.getLogger().setLevel(logging.ERROR)
    reader = BatchReader(calibration_batches, on_batch=lambda: progress.update(1))
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[record.calibration_method or "minmax"]
    dynamic_nodes = [] if qdq_only else _dynamic_in_static(reference, knobs)
    static_output = output.with_name(f"{output.stem}.qdq.onnx") if dynamic_nodes else output
    options = {"CalibTensorRangeSymmetric": False, "OpTypesToExcludeOutputQuantization": list(knobs.float_output_ops),
               **knobs.extra_options}
    # The static pass leaves the dynamic pass's operators alone: given Attention, QDQ would put Q/DQ pairs on its
    # input and weights, and the dynamic pass would then quantize a dequantized weight at every run.
    chosen["op_types_to_quantize"] = [op for op in knobs.op_types if op not in DYNAMIC_IN_STATIC]
    try:
        quantize_static(
            reference, static_output, reader, quant_format=QuantFormat[record.quant_format],
            per_channel=record.per_channel, reduce_range=record.reduce_range,
            activation_type=_quant_type(record.activation_type), weight_type=_quant_type(record.weight_type),
            calibrate_method=method, extra_options=options, **chosen)
    finally:
        progress.close()
    if dynamic_nodes:
        quantize_dynamic(static_output, output, per_channel=record.per_channel, reduce_range=record.reduce_range,
                         weight_type=_quant_type(record.weight_type), nodes_to_quantize=dynamic_nodes,
                         op_types_to_quantize=[*DYNAMIC_IN_STATIC, *DYNAMIC_FALLBACK_OPS],
                         extra_options={k: v for k, v in knobs.extra_options.items() if k in DYNAMIC_EXTRA_OPTIONS})
        static_output.unlink()
    return dynamic_nodes


def _dynamic_in_static(reference: Path, knobs: QuantizerKnobs) -> list[str]:
    """The nodes of `reference` a static build quantizes dynamically: fused transformer operators among the op types
    (and among nodes_to_quantize when given) and the gate's MatMuls, never the user's fp32 nodes."""
    import onnx

    wanted = set(knobs.nodes_to_quantize)
    nodes = []
    for node in onnx.load(str(reference), load_external_data=False).graph.node:
        if node.name in knobs.nodes_to_exclude or node.op_type not in knobs.op_types:
            continue
        if node.name in knobs.fallback_nodes:
            if node.op_type in DYNAMIC_FALLBACK_OPS:
                nodes.append(node.name)
        elif node.op_type in DYNAMIC_IN_STATIC and (not wanted or node.name in wanted):
            nodes.append(node.name)
    return nodes


FINE_TUNED_FUSED = ("the fine-tuned weights exported through the fused graph (as reference.onnx), int8 by "
                    "onnxruntime's static quantization with the QAT policy and each MatMul's learned input range")


def quantize_fine_tuned_fused(cfg, record: QuantizationRecord, result, calibration_batches: list,
                              output: Path) -> list[str]:
    """QAT of a fused transformer (`result`: qat.QatResult): its fine-tuned weights in the fused graph reference.onnx
    is, quantized like a static build with the input ranges QAT learned for each MatMul (the calibration sample's
    for the rest; pipeline/builder/qat.py says why); returns the nodes quantized dynamically."""
    from pipeline.builder.export import fused_torchscript_export
    from pipeline.builder.models import model_family

    family = model_family(cfg)
    module = family.load_torch(attention="eager")
    weights = result.weights
    unknown = set(weights) - {name for name, _ in module.named_parameters()}
    if unknown:
        raise RuntimeError(f"QAT fine-tuned parameters the module does not have: {sorted(unknown)[:5]}")
    # The exported graph holds the parameters the forward pass uses (MiniLM's unused pooler is not among them);
    # the others, and buffers (position ids), stay the module's.
    module.load_state_dict(weights, strict=False)
    fp32 = output.with_name("qat-fine-tuned.fp32.onnx")
    fp32.write_bytes(fused_torchscript_export(family, module, int(cfg.model.opset)))
    as_static = replace(record, mode="static", quant_format="QDQ", calibration_method="minmax")
    knobs = QuantizerKnobs.from_config(cfg)
    knobs = replace(knobs, extra_options={**knobs.extra_options,
                                          "TensorQuantOverrides": learned_ranges_by_tensor(fp32, result.input_ranges)})
    try:
        return quantize_onnx(as_static, fp32, output, calibration_batches, knobs, quiet=True)
    finally:
        fp32.unlink()


def learned_ranges_by_tensor(graph_path: Path, input_ranges: dict[str, tuple[float, float]]) -> dict[str, list[dict]]:
    """onnxruntime's TensorQuantOverrides (rmin/rmax) for the input of each MatMul whose linear QAT trained: the
    TorchScript export names a linear's MatMul after its module path ("/encoder/.../dense/MatMul" for the weight
    "encoder....dense.weight")."""
    import numpy as np
    import onnx

    overrides = {}
    for node in onnx.load(str(graph_path), load_external_data=False).graph.node:
        weight = node.name.rsplit("/", 1)[0].strip("/").replace("/", ".") + ".weight"
        if node.op_type == "MatMul" and weight in input_ranges:
            low, high = input_ranges[weight]
            overrides[node.input[0]] = [{"rmin": np.float32(low), "rmax": np.float32(high)}]
    return overrides


def _subgraph_counts(reference: Path, output: Path, record: QuantizationRecord) -> dict:
    """Per If/Loop/Scan body of the graph: its compute nodes and how many run int8 (said when some stay fp32)."""
    import onnx
    counts = subgraph_counts(onnx.load(str(reference), load_external_data=False),
                             onnx.load(str(output), load_external_data=False), record.mode)
    if words := fp32_words(counts):
        say(f"quantize: {words}")
    return counts


def rewrite_int8_graph(path: Path) -> dict[str, int]:
    """The int8 graph at `path` with its SkipLayerNormalizations as Add + LayerNormalization, onnxruntime's faster
    CPU kernels (pipeline/builder/fuse.py), and its fp32 operators reading activations unrounded (pipeline/builder/qdq.py);
    returns how many of each, as QuantizationRecord fields. Rewritten in place (saved only when anything was)."""
    import onnx

    from pipeline.builder.fuse import split_skip_layer_norms
    from pipeline.builder.qdq import fp32_consumers_read_fp32

    model = onnx.load(str(path))
    counts = {"layer_norms_split": split_skip_layer_norms(model),
              "fp32_inputs_unrounded": fp32_consumers_read_fp32(model)}
    if any(counts.values()):
        onnx.save(model, str(path))
    return counts


def _prepared_source(prepared, scratch: Path) -> Path | None:
    """The graph static int8 quantizes instead of the reference (pipeline/builder/conv_prep.py), written to `scratch`,
    or None."""
    import onnx
    if prepared is None:
        return None
    say(f"quantize: {prepared.words()} (as onnxruntime does for fp32)")
    path = scratch / "prepared.fp32.onnx"
    onnx.save(prepared.model, str(path))
    return path


def run(cfg, manifest: Manifest, fallback_nodes: list[str] = ()) -> Manifest:
    from pipeline.builder.calibrate import load_batches

    record = policy(cfg)
    reference = manifest.path(manifest.reference_file)
    knobs, prepared = QuantizerKnobs.from_config(cfg).with_fallback(fallback_nodes).prepared(reference, record.mode)
    knobs.check_node_names(reference)
    calibration_batches = load_batches(manifest.path(manifest.calibration_file))
    with tempfile.TemporaryDirectory(dir=manifest.folder, prefix=".quantize-") as scratch:
        output = Path(scratch) / "model.onnx"
        source = _prepared_source(prepared, Path(scratch)) or reference
        excluded = f", {len(knobs.out_of_main_pass)} node(s) out of {record.mode}" if knobs.out_of_main_pass else ""
        if record.mode == "qat":
            from pipeline.builder import qat
            with step(f"quantize: QAT, {cfg.mode.qat_steps} fake-quant steps (activations {record.activation_type}, "
                      f"weights {record.weight_type}, per_channel={record.per_channel}, "
                      f"reduce_range={record.reduce_range})"):
                if manifest.fusion is None:
                    manifest.qat = qat.train_and_export(cfg, record, calibration_batches, output)
                else:
                    result = qat.train(cfg, record, calibration_batches)
                    record = replace(record, dynamic_nodes=quantize_fine_tuned_fused(
                        cfg, record, result, calibration_batches, output))
                    manifest.qat = {**result.summary, "int8_graph": FINE_TUNED_FUSED}
        else:
            what = "dynamic int8" if record.mode == "dynamic" else (
                f"static {record.quant_format} (method {record.calibration_method}, activations "
                f"{record.activation_type}, weights {record.weight_type})")
            with step(f"quantize: {what}, per_channel={record.per_channel}, reduce_range={record.reduce_range}"
                      f"{excluded}"):
                record = replace(record, dynamic_nodes=quantize_onnx(record, source, output, calibration_batches,
                                                                     knobs))
        record = replace(record, fp32_convs=list(knobs.fp32_convs), **rewrite_int8_graph(output),
                         subgraphs=_subgraph_counts(reference, output, record))
        # onnxruntime's quantizer copies node metadata, and QAT's export writes its own: strip again,
        # keeping it in debug/model.nodes.json (quantized nodes point at the reference nodes they replace).
        reproducible.strip_file(manifest.folder, manifest.model_file, manifest.reference_file, source=output)
    manifest.quantization = record
    return manifest

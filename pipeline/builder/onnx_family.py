"""`model=onnx`: any fp32 ONNX file (`model.path`), with its external data, dynamic axes, several inputs and outputs.

The file is read and checked when the family is made, before any work: it must exist, parse, pass onnx's checker,
compute in float32 (no float16/bfloat16/double tensors) and not be quantized already (no QuantizeLinear,
DequantizeLinear, MatMulInteger, QLinear* ... nodes, no int8/uint8 initializers); one older than opset 13 is
converted up to it. Other exporters' conventions are then put in the form quantgate's tools read
(`pipeline/builder/conventions.py`): -1 and 0 dimensions are dynamic, Constant-node weights become initializers.
The export stage then writes it, external data folded in, as `reference.onnx` (lowered to the target runtime's IR
version and opset like an export). Its data comes from `calibration=npz` (`pipeline/builder/npz_data.py`), checked
against its inputs, in the model's own layout: each input's batch axis, a recurrent state's axis 1 or none for a
scalar, and the state it carries from chunk to chunk are found by `pipeline/layout.py` (docs/streaming.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration.arrays import InputSpec
from calibration.errors import one_line
from pipeline.builder.conventions import declare_dynamic_dims, fixed_size, lift_constant_weights
from pipeline.builder.family import FamilyBase
from pipeline.builder.npz_data import NpzData
from pipeline.builder.reproducible import portable_path_value
from pipeline.errors import InputError, QuantgateError
from pipeline.layout import all_graphs, find_layout, with_batch_axes
from pipeline.manifest import sha256_bytes, sha256_file

QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                 "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QGemm", "QAttention", "QEmbedLayerNormalization",
                 "DynamicQuantizeLSTM"}
PROTOBUF_LIMIT = 2 ** 31 - 1  # one .onnx file without external data
# onnxruntime's quantizer writes per-channel DequantizeLinear (an `axis` attribute: opset 13); older files are
# converted up to it (onnx's version converter), before any work.
MIN_OPSET = 13


def upgrade_opset(model, where: str):
    """The model at opset MIN_OPSET or later (onnx.version_converter), or refused in words."""
    import onnx
    from onnx import version_converter

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset >= MIN_OPSET:
        return model
    try:
        converted = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as error:  # noqa: BLE001 - the converter raises RuntimeError, ValidationError, ...
        raise InputError(f"{where} is at opset {opset}, and onnx's version converter cannot take it to opset "
                         f"{MIN_OPSET}, the oldest quantgate quantizes ({one_line(error)}); export it again with "
                         f"opset {MIN_OPSET} or later") from None
    return converted


def check_fp32(model, where: str) -> None:
    """Refuse a model that is already quantized or does not compute in float32, naming what gives it away."""
    import onnx
    from onnx import TensorProto

    quantized_types = {TensorProto.INT8, TensorProto.UINT8}
    narrow = ("INT4", "UINT4", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ")
    quantized_types |= {getattr(TensorProto, name) for name in narrow if hasattr(TensorProto, name)}
    other_floats = {TensorProto.FLOAT16: "float16", TensorProto.BFLOAT16: "bfloat16", TensorProto.DOUBLE: "float64"}
    fix_quantized = ("quantgate quantizes it itself: give the fp32 model it was made from (e.g. the export before "
                     "onnxruntime.quantization or Optimum)")
    fix_precision = "give the float32 model (e.g. export the torch module after model.float())"
    for graph in all_graphs(model.graph):
        for node in graph.node:
            if node.op_type in QUANTIZED_OPS or node.op_type.startswith("QLinear"):
                raise InputError(f"{where} is already quantized: node {node.name or '(unnamed)'} is a {node.op_type}; "
                                 f"{fix_quantized}")
            if node.op_type == "Cast":
                to = next((a.i for a in node.attribute if a.name == "to"), None)
                if to in other_floats:
                    raise InputError(f"{where} is not an fp32 model: node {node.name or '(unnamed)'} casts to "
                                     f"{other_floats[to]}; {fix_precision}")
        tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant"
                                              for a in n.attribute if a.type == onnx.AttributeProto.TENSOR]
        for tensor in tensors:
            if tensor.data_type in quantized_types:
                raise InputError(f"{where} is already quantized: initializer {tensor.name or '(a constant)'} holds "
                                 f"{TensorProto.DataType.Name(tensor.data_type).lower()} values; {fix_quantized}")
            if tensor.data_type in other_floats:
                raise InputError(f"{where} is not an fp32 model: initializer {tensor.name or '(a constant)'} is "
                                 f"{other_floats[tensor.data_type]}; {fix_precision}")
        for value in [*graph.input, *graph.output]:
            element = value.type.tensor_type.elem_type
            if element in other_floats:
                kind = "input" if value in graph.input else "output"
                raise InputError(f"{where} is not an fp32 model: {kind} {value.name} is {other_floats[element]}; "
                                 f"{fix_precision}")


def name_every_node(model):
    """`model` with a unique name on every node: unnamed ones get `<op type>_<n>`, a name used twice gets a suffix.
    The accuracy gate takes nodes out of int8 by name (onnxruntime's nodes_to_exclude), so an unnamed node could
    never be taken out, and one of two nodes sharing a name not alone."""
    nodes = [node for graph in all_graphs(model.graph) for node in graph.node]
    taken, named = {node.name for node in nodes if node.name}, set()
    for index, node in enumerate(nodes):
        if node.name and node.name not in named:  # the first node of a name keeps it
            named.add(node.name)
            continue
        base = node.name or f"{node.op_type}_{index}"
        name, suffix = base, 2
        while name in taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        node.name = name
        taken.add(name)
        named.add(name)
    return model


def read_model(path_text: str):
    """The ONNX model at model.path with its external data, checked; refused in words if it cannot be used."""
    import onnx
    from google.protobuf.message import DecodeError

    path = Path(path_text).expanduser()
    if not path.exists():
        raise InputError(f"model.path={path_text!r} does not exist; point it at an fp32 .onnx file")
    if not path.is_file():
        raise InputError(f"model.path={path_text!r} is a folder; point it at the .onnx file itself (external data "
                         f"files beside it are read too)")
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise InputError(f"model.path={path_text!r} cannot be read ({error.strerror}); check its permissions") from None
    try:
        model = onnx.load(str(path))  # external data: resolved beside the file
    except (DecodeError, ValueError, RuntimeError) as error:
        raise InputError(f"model.path={path_text!r} is not a readable ONNX model ({one_line(error)}); is it "
                         f"truncated, or another format?") from None
    except (OSError, onnx.checker.ValidationError) as error:  # a missing data file, or one outside the folder
        raise InputError(f"model.path={path_text!r}: its external data cannot be read ({one_line(error, limit=500)}); keep "
                         f"the data files beside the .onnx file (in its folder), where it names them") from None
    if not model.graph.node or not model.graph.output:
        raise InputError(f"model.path={path_text!r} holds no graph (no nodes or no outputs): not an ONNX model")
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as error:
        raise InputError(f"model.path={path_text!r} is not a valid ONNX model ({one_line(error)})") from None
    check_fp32(model, f"model.path={path_text!r}")
    model = lift_constant_weights(upgrade_opset(model, f"model.path={path_text!r}"))
    declare_dynamic_dims(model.graph)
    return name_every_node(model)


def external_files(path: Path, model) -> list[Path]:
    """The model file and the external data files it names (for the source's sha256)."""
    import onnx
    from onnx.external_data_helper import ExternalDataInfo
    names = set()
    for graph in all_graphs(model.graph):
        for tensor in graph.initializer:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                names.add(ExternalDataInfo(tensor).location)
    return [path, *sorted(path.parent / name for name in names)]


class OnnxFamily(NpzData, FamilyBase):
    """A user's fp32 ONNX file: its own reference (`reference_onnx`), no torch module."""

    kind: str  # model.kind
    input_names: list[str]  # the graph's inputs that are not initializers
    output_names: list[str]

    def __init__(self, cfg):
        import onnx

        self.cfg = cfg
        self.path = Path(cfg.model.path).expanduser()
        self.model = read_model(cfg.model.path)
        self._files = external_files(self.path, onnx.load(str(self.path), load_external_data=False))
        initializers = {tensor.name for tensor in self.model.graph.initializer}
        self._inputs = [value for value in self.model.graph.input if value.name not in initializers]
        self.input_names = [value.name for value in self._inputs]
        self.output_names = [value.name for value in self.model.graph.output]
        self.kind = str(cfg.model.kind)
        # Which axis of each input holds the examples (pipeline/layout.py): a recurrent state's is axis 1, a
        # scalar's none.
        self.layout = find_layout(self.model, dict(cfg.model.batch_axes), f"model.path={cfg.model.path!r}",
                                  dict(cfg.model.state))

    def input_specs(self) -> list[InputSpec]:
        import onnx
        specs = []
        for value in self._inputs:
            tensor = value.type.tensor_type
            if not value.type.HasField("tensor_type"):
                raise InputError(f"model.path={self.cfg.model.path!r}: input {value.name} is not a tensor (a sequence "
                                 f"or map); quantgate feeds tensors only")
            dims = tuple(fixed_size(d) for d in tensor.shape.dim) \
                if tensor.HasField("shape") else None  # None: the file does not say its rank
            specs.append(InputSpec(value.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
        return with_batch_axes(specs, self.layout)

    def data(self):
        """The npz pool; onnxruntime must also load the model and run it on the first examples (what names,
        ranks and fixed axes cannot show: an operator it lacks, axes that must agree with each other)."""
        import onnxruntime as ort
        splits = super().data()
        first = self.arrays().take(slice(0, 2))
        try:
            session = ort.InferenceSession(self.reference_onnx(), providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types
            raise InputError(f"model.path={self.cfg.model.path!r}: onnxruntime cannot load it ({one_line(error)})") \
                from None
        try:
            session.run(None, first)
        except Exception as error:  # noqa: BLE001
            shapes = {name: list(value.shape) for name, value in first.items()}
            raise InputError(f"calibration.path={self.cfg.calibration.path}: the model fails on these arrays "
                             f"({one_line(error)}); shapes {shapes}") from None
        return splits

    @property
    def source_name(self) -> str:
        return portable_path_value(str(self.cfg.model.path))

    def weights_sha256(self) -> str:
        return sha256_bytes("".join(f"{f.name}:{sha256_file(f)}\n" for f in self._files).encode())

    def reference_onnx(self) -> bytes:
        """The model as one file: its external data folded in (what the export stage writes as reference.onnx)."""
        if self.model.ByteSize() > PROTOBUF_LIMIT:
            raise QuantgateError(f"model.path={self.cfg.model.path!r} is over 2 GB with its external data folded in; "
                                 f"quantgate writes reference.onnx as one file and cannot build it")
        return self.model.SerializeToString(deterministic=True)

    def load_torch(self):
        raise QuantgateError("model=onnx has no torch module (mode=qat and export=aoti need model=torch)")

"""The model family contract: what a family must provide for quantgate to build its model, checked when registered.

A family (`model.family`) turns a config into a fp32 model, its inputs' names and its data. The stages ask the
family, never its name, so a new family is one module (its class) plus one line in the registry
(`pipeline/builder/models.py`: `register_family("name", TheFamily)`) and its `conf/model/<name>.yaml`
(docs/architecture.md, "Adding a model family").

Required (`ModelFamily`; a data member may be a class attribute, an annotation in the class body, or set as
`self.<name> = ...` in a method; the stages that read each member are named):

- `kind: str` - how verification judges the outputs (`embedding`, `classifier`, `multi_label`, `generic`, ...):
  export (manifest.model_kind), QAT (an embedding trains its linears only), the npz data (label shapes).
- `input_names: list[str]`, `output_names: list[str]` - the graph's inputs and outputs, in order: export (names
  of the ONNX graph), calibrate (arrays of calibration.npz, validation.npz, heldout.npz), QAT, export=aoti.
- `source_name: str` - the model's name in the stamp and in messages, never a path of this machine: export
  (manifest.source_model), the build task (which model an artifact folder holds).
- `weights_sha256() -> str` - the weights' identity: export (manifest.source_weights_sha256), the build task,
  the reference cache's key.
- `data() -> DataSplits` (pipeline/builder/checkpoints.py) - the pools calibration, validation and held-out
  samples are drawn from: the build task (read before any work), calibrate, QAT (a classifier's train split).
- `encode(examples, pad_to_max_length=False) -> dict[str, np.ndarray]` - examples of those pools as the model's
  input arrays, named after `input_names`: calibrate.
- The fp32 model, one of two ways: `reference_onnx() -> bytes` (the family has the ONNX graph itself,
  model=onnx), or a torch module the export stage exports: `load_torch()` (the module, in eval mode),
  `example_inputs()` (a tuple of tensors in `input_names`' order) and `dynamic_shapes()` (one
  `{axis: torch.export.Dim}` per input; axis 0 the examples): export, QAT, export=aoti.

Capabilities (optional; `FamilyBase` holds the default of each, so a family states only what it has):

- `fusable` (default False) - a transformer encoder onnxruntime's transformer optimizer fuses with model.fuse
  (pipeline/builder/fuse.py): export. A fusable family also gives `attention_shape() -> (heads, hidden size)`
  and takes `load_torch(attention="eager")` (the graph the optimizer recognises): export, QAT of a fused graph.
- `reference_onnx()` (default None: export `load_torch()`) - see above: export.
- `export_refused(error) -> Exception | None` (default None: try torch's TorchScript exporter) - the family's own
  words when torch's dynamo exporter cannot export its module (a user's module: the user's fix): export.
- `sentence_head` (default None) - what follows a text encoder to make a sentence embedding
  (pipeline/builder/sentence_head.py): export (manifest.sentence_embedding), calibrate (prompts), reference cache.
- `layout` (default None: axis 0 of every input and output) - where each input's examples lie and the state a
  model carries from chunk to chunk (pipeline/layout.py Layout): export (manifest.batch_axes), calibrate.
- `checkpoint_folder` (default None) - a transformers checkpoint the model was read from: the reference cache
  keeps the export of such a model only, and the hub-files stage copies its config and tokenizer for Optimum.
- `encode_labels(examples, labels) -> np.ndarray` (default: one int64 class id per example) - labels as saved
  beside the inputs (a token classifier's per token, a multi-label classifier's rows of 0/1): calibrate.

A registered family may also give a decoder (`register_family(..., decoder=...)`, for model.task=text-generation):
a language model the weight-only stages build from its checkpoint (pipeline/builder/decoder.py), whose contract
is `LanguageModelFamily`: the identity and data members above, `path` (the checkpoint folder) and `sequences(texts)`
(token ids of each text).

`check_family` and `check_decoder` enforce this when a family is registered: a missing member is refused in
words naming it (a TypeError: registering an incomplete family is a programming error).
"""
from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from pipeline.builder.checkpoints import DataSplits
from pipeline.builder.sentence_head import SentenceHead
from pipeline.layout import Layout

CONTRACT = "pipeline/builder/family.py"


class IdentifiedModel(Protocol):
    """What every family gives: the model's kind, names, identity and data."""

    kind: str
    input_names: list[str]
    output_names: list[str]

    @property
    def source_name(self) -> str: ...

    def weights_sha256(self) -> str: ...

    def data(self) -> DataSplits: ...


class ModelFamily(IdentifiedModel, Protocol):
    """A family the export stage builds (ONNX int8, export=aoti): the identity and data, the encoder of examples,
    the fp32 model (`reference_onnx`, or the torch trio) and the capabilities (defaults in `FamilyBase`)."""

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]: ...

    def load_torch(self) -> Any: ...

    def example_inputs(self) -> tuple: ...

    def dynamic_shapes(self) -> tuple: ...

    # capabilities: their defaults are FamilyBase's
    fusable: bool
    sentence_head: SentenceHead | None
    layout: Layout | None
    checkpoint_folder: Path | None

    def attention_shape(self) -> tuple[int, int]: ...

    def reference_onnx(self) -> bytes | None: ...

    def export_refused(self, error: Exception) -> Exception | None: ...

    def encode_labels(self, examples: list, labels: list) -> np.ndarray: ...


class LanguageModelFamily(IdentifiedModel, Protocol):
    """A decoder language model the weight-only stages build from its checkpoint (pipeline/builder/decoder.py)."""

    path: Path

    def sequences(self, texts: list[str]) -> list[np.ndarray]: ...


# The members that are data, not methods: these may also be set in a method (`self.kind = ...`).
DATA_MEMBERS = frozenset(name for protocol in (ModelFamily, LanguageModelFamily)
                         for klass in protocol.__mro__ for name in klass.__dict__.get("__annotations__", {}))
# The torch trio: the fp32 model of a family without its own reference_onnx.
TORCH_MEMBERS = ("load_torch", "example_inputs", "dynamic_shapes")


class FamilyBase:
    """The default of every capability of the contract: a family that inherits it states only what it has."""

    fusable: bool = False
    sentence_head: SentenceHead | None = None
    layout: Layout | None = None
    checkpoint_folder: Path | None = None

    def attention_shape(self) -> tuple[int, int]:
        raise TypeError(f"{type(self).__name__} is not fusable: it has no attention shape")

    def reference_onnx(self) -> bytes | None:
        """None: the export stage exports `load_torch()`."""
        return None

    def export_refused(self, error: Exception) -> Exception | None:
        """None: the export stage tries torch's TorchScript exporter when the dynamo exporter fails."""
        return None

    def encode_labels(self, examples: list, labels: list) -> np.ndarray:
        return np.asarray(labels, dtype=np.int64)


CAPABILITIES = tuple(name for name in vars(FamilyBase) if not name.startswith("_"))


def protocol_members(protocol: type) -> list[str]:
    """The members a Protocol class declares (its own and its bases'), in declaration order."""
    names: dict[str, None] = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, Protocol) or not getattr(klass, "_is_protocol", False):
            continue
        for name in (*klass.__dict__.get("__annotations__", {}), *vars(klass)):
            if not name.startswith("_"):
                names.setdefault(name)
    return list(names)


@functools.cache
def _self_assignments(filename: str) -> dict[str, frozenset[str]]:
    """For each class of a source file: the names its methods assign as `self.<name> = ...` (instance attributes,
    as a type checker infers them)."""
    try:
        tree = ast.parse(Path(filename).read_text())
    except (OSError, SyntaxError, ValueError):
        return {}
    found: dict[str, set[str]] = {}
    for body in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
        names = found.setdefault(body.name, set())
        for node in ast.walk(body):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
            for leaf in (leaf for target in targets for leaf in ast.walk(target)):
                if isinstance(leaf, ast.Attribute) and isinstance(leaf.value, ast.Name) and leaf.value.id == "self":
                    names.add(leaf.attr)
    return {name: frozenset(names) for name, names in found.items()}


def _assigned_in_methods(klass: type) -> frozenset[str]:
    """What `klass`'s methods assign to self; nothing for a class without a source file (made at run time)."""
    try:
        filename = inspect.getsourcefile(klass)
    except TypeError:  # a built-in class
        return frozenset()
    return _self_assignments(filename).get(klass.__name__, frozenset()) if filename else frozenset()


def defined_by(cls: type, name: str, skip: tuple[type, ...] = ()) -> bool:
    """Whether `cls` (or a base other than `skip` and object) defines the member `name`: as an attribute or an
    annotation in a class body, or (a data member of the contract) an assignment to self in a method."""
    bases = [klass for klass in cls.__mro__ if klass is not object and klass not in skip]
    if any(name in vars(klass) or name in klass.__dict__.get("__annotations__", {}) for klass in bases):
        return True
    return name in DATA_MEMBERS and any(name in _assigned_in_methods(klass) for klass in bases)


def missing_members(cls: type) -> list[str]:
    """The members of the contract (`ModelFamily`) that family class `cls` does not give, with why where a member
    is required by another."""
    required = [name for name in protocol_members(ModelFamily) if name not in CAPABILITIES]
    if defined_by(cls, "reference_onnx", skip=(FamilyBase,)):  # the ONNX graph itself: no torch module needed
        required = [name for name in required if name not in TORCH_MEMBERS]
    missing = [name for name in required if not defined_by(cls, name)]
    missing += [f"{name} (inherit pipeline.builder.family.FamilyBase for its default)" for name in CAPABILITIES
                if not defined_by(cls, name)]
    if getattr(cls, "fusable", False) is not False:  # True, or a property saying it per checkpoint
        if not defined_by(cls, "attention_shape", skip=(FamilyBase,)):
            missing.append("attention_shape (a fusable family gives its attention heads and hidden size)")
        load = getattr(cls, "load_torch", None)
        if callable(load) and "attention" not in inspect.signature(load).parameters:
            missing.append("load_torch(attention=...) (a fusable family loads eager attention for the fused graph)")
    return missing


def _refuse(name: str, cls: type, contract: str, missing: list[str]) -> None:
    if missing:
        raise TypeError(f"model family {name!r} ({cls.__module__}.{cls.__qualname__}) does not meet the {contract} "
                        f"contract ({CONTRACT}): missing {'; '.join(missing)}")


def check_family(name: str, cls: type) -> None:
    """Refuse family class `cls` registered as `name` unless it gives every member of `ModelFamily`."""
    if not isinstance(cls, type):
        raise TypeError(f"model family {name!r} must be registered as a class, not {type(cls).__name__}")
    _refuse(name, cls, "model family", missing_members(cls))


def check_decoder(name: str, cls: type) -> None:
    """Refuse decoder class `cls` of family `name` unless it gives every member of `LanguageModelFamily`."""
    _refuse(name, cls, "decoder family", [member for member in protocol_members(LanguageModelFamily)
                                           if not defined_by(cls, member)])


def check_instance(name: str, family: object) -> None:
    """After the family is made: the data members its class declares are set (an annotation is a promise)."""
    unset = [member for member in ("kind", "input_names", "output_names") if not hasattr(family, member)]
    if unset:
        raise TypeError(f"model family {name!r} ({type(family).__qualname__}) did not set {', '.join(unset)} when "
                        f"made; the contract ({CONTRACT}) requires them")

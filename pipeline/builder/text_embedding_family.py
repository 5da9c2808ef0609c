"""`model=minilm` (family text_embedding): any local transformers encoder, exported as a sentence embedding.

The default is the embedded all-MiniLM-L6-v2. The embedding is pooled and normalised as the checkpoint's
sentence-transformers modules.json says (pipeline/builder/sentence_head.py; without one, the mean of the tokens,
L2-normalised); the encoder is fusable (pipeline/builder/fuse.py). Its data are texts (calibration=pydoc_topics,
files or hub). The family contract it implements: pipeline/builder/family.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from calibration.sources import load_texts
from pipeline.builder.checkpoints import (DataSplits, check_max_length, check_weight_files, dataset_identity,
                                        resolve_model_path, weight_files)
from pipeline.builder.family import FamilyBase
from pipeline.builder.reproducible import portable_path_value
from pipeline.builder.sentence_head import read_sentence_head
from pipeline.errors import InputError, QuantgateError
from pipeline.manifest import sha256_bytes, sha256_file


class TextEmbeddingFamily(FamilyBase):
    """A local transformers encoder (default: the embedded all-MiniLM-L6-v2) as a sentence embedding."""

    input_names = ["input_ids", "attention_mask"]
    output_names = ["sentence_embedding"]
    kind = "embedding"
    fusable = True  # a transformer encoder: model.fuse applies (pipeline/builder/fuse.py)

    def __init__(self, cfg):
        self.cfg = cfg
        self.path = resolve_model_path(cfg.model.name_or_path)
        check_weight_files(self.path)
        check_max_length(int(cfg.model.max_length), json.loads((self.path / "config.json").read_bytes()), self.path)
        # what follows the transformer (modules.json), and the prompt texts get (config_sentence_transformers.json)
        self.sentence_head = read_sentence_head(self.path, cfg.model.prompt_name)
        self._tokenizer = None

    @property
    def checkpoint_folder(self) -> Path:
        """The transformers checkpoint (config.json, tokenizer files) the artifact folder copies for Optimum."""
        return self.path

    @property
    def source_name(self) -> str:
        # A local checkpoint is named by its folder's name, not where it lies on the build machine
        # (the stamp carries no absolute path; the weights' sha256 identifies it).
        if self.cfg.model.name_or_path is None:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return portable_path_value(self.cfg.model.name_or_path)

    def weights_sha256(self) -> str:
        return sha256_bytes("".join(f"{f.name}:{sha256_file(f)}\n" for f in weight_files(self.path)).encode())

    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer
            self._tokenizer = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
        return self._tokenizer

    def attention_shape(self) -> tuple[int, int]:
        """(attention heads, hidden size) from the checkpoint's config.json, for the transformer optimizer."""
        config = json.loads((self.path / "config.json").read_bytes())
        try:
            return int(config["num_attention_heads"]), int(config["hidden_size"])
        except KeyError as missing:
            raise InputError(f"{self.path / 'config.json'} has no {missing}: not a BERT-like encoder the transformer "
                             f"optimizer can fuse; build it unfused with model.fuse=false") from None

    def load_torch(self, attention: str | None = None):
        """The sentence-embedding module; `attention` picks transformers' attn_implementation ("eager" for a
        graph onnxruntime's transformer optimizer fuses; None: transformers' default, sdpa)."""
        import torch
        from transformers import AutoModel

        head = self.sentence_head

        class SentenceEmbedding(torch.nn.Module):
            def __init__(self, encoder):
                super().__init__()
                self.encoder = encoder

            def forward(self, input_ids, attention_mask):
                hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                return head.embed(hidden, attention_mask)

        try:
            options = {"attn_implementation": attention} if attention else {}
            encoder = AutoModel.from_pretrained(str(self.path), local_files_only=True, **options)
        except (OSError, ValueError, RuntimeError) as error:
            raise QuantgateError(f"transformers could not load {self.path}: {str(error).splitlines()[0]}") from None
        return SentenceEmbedding(encoder).eval()

    def example_inputs(self):
        import torch
        return (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))

    def dynamic_shapes(self):
        import torch
        batch = torch.export.Dim("batch", min=1, max=1024)
        sequence = torch.export.Dim("sequence", min=2, max=512)
        return tuple({0: batch, 1: sequence} for _ in self.input_names)

    def data(self) -> DataSplits:
        texts = load_texts(self.cfg.calibration)
        name = {"pydoc_topics": lambda: "pydoc_data.topics", "hub": lambda: dataset_identity(self.cfg.calibration),
                "files": lambda: dataset_identity(self.cfg.calibration)}[self.cfg.calibration.source]()
        return DataSplits(texts, texts, texts, dataset_name=str(name), shared_pool=True)

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
        from calibration.readers import tokenize  # onnxruntime.quantization, 0.7 s: only when a build encodes
        return tokenize(self.tokenizer(), self.sentence_head.prompted(examples), self.cfg.model.max_length,
                        pad_to_max_length)

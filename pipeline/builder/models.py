"""Model families: how to get the fp32 torch model, its example inputs, and its data.

`text_embedding`: any local transformers encoder (default: the embedded all-MiniLM-L6-v2),
exported as a sentence embedding: pooled and normalised as its sentence-transformers modules.json says
(pipeline/builder/sentence_head.py; without one, the mean of the tokens, L2-normalised). `digits_cnn`: a small CNN the
pipeline trains, seeded, on scikit-learn's digits. Both expose the same small interface, so the
stages do not care which one they build.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.builder.hf_family import HfFamily
from pipeline.builder.onnx_family import OnnxFamily
from pipeline.builder.sentence_head import read_sentence_head
from pipeline.builder.torch_family import TorchFamily
from pipeline.builder.checkpoints import (DataSplits, check_max_length, check_weight_files, dataset_identity,
                                        resolve_model_path, weight_files)
from pipeline.errors import InputError, QuantgateError
from pipeline.manifest import sha256_bytes, sha256_file



def as_number(value) -> float | None:
    """A table cell as a number (a missing one: NaN), or None if it is not one. A numeral written as text
    counts: csv reads a whole column as text when one of its cells is a word."""
    if value is None:
        return float("nan")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def class_ids(values: list, where: str, n_classes: int) -> list[int]:
    """Labels as integer class ids 0..n_classes-1; names ("cat") or fractions are refused, never guessed."""
    ids = []
    for number, value in enumerate(values, start=1):
        label = as_number(value)
        if label is None or not label.is_integer() or not 0 <= label < n_classes:
            raise InputError(f"{where}, row {number}: {value!r} is not a class id; labels must be integer class ids "
                             f"0..{n_classes - 1}: map names to ids first (e.g. {{'cat': 0, 'dog': 1}})")
        ids.append(int(label))
    return ids


# --------------------------------------------------------------------------- text embeddings
class TextEmbeddingFamily:
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
        from pipeline.builder.reproducible import portable_path_value
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
        from calibration.sources import load_texts
        texts = load_texts(self.cfg.calibration)
        name = {"pydoc_topics": lambda: "pydoc_data.topics", "hub": lambda: dataset_identity(self.cfg.calibration),
                "files": lambda: dataset_identity(self.cfg.calibration)}[self.cfg.calibration.source]()
        return DataSplits(texts, texts, texts, dataset_name=str(name), shared_pool=True)

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
        from calibration.readers import tokenize
        return tokenize(self.tokenizer(), self.sentence_head.prompted(examples), self.cfg.model.max_length,
                        pad_to_max_length)


# --------------------------------------------------------------------------- digits CNN
class DigitsCnnFamily:
    input_names = ["pixels"]
    output_names = ["logits"]
    kind = "classifier"
    fusable = False  # a CNN: the transformer optimizer has nothing to fuse

    def __init__(self, cfg):
        self.cfg = cfg
        self._splits = None
        self._model = None

    source_name = "digits_cnn (trained on sklearn.datasets.load_digits)"

    def splits(self):
        if self._splits is None:
            from calibration.digits import digits_splits
            self._splits = digits_splits(int(self.cfg.calibration.seed))
        return self._splits

    @staticmethod
    def architecture():
        import torch.nn as nn
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def load_torch(self):
        """Train the fp32 model (seeded, a few seconds on 2 cores); cached for the build."""
        if self._model is None:
            import torch
            from tqdm import tqdm
            from calibration.digits import to_model_input

            torch.manual_seed(int(self.cfg.model.seed))
            model = self.architecture()
            train = self.splits()["train"]
            inputs = torch.from_numpy(to_model_input(train["pixels"]))
            labels = torch.tensor(train["label"])
            optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
            generator = torch.Generator().manual_seed(int(self.cfg.model.seed))
            for _ in tqdm(range(int(self.cfg.model.train_steps)), desc="train digits_cnn (fp32)", unit="step"):
                batch = torch.randint(0, len(labels), (64,), generator=generator)
                loss = torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            self._model = model.eval()
        return self._model

    def weights_sha256(self) -> str:
        state = self.load_torch().state_dict()
        return sha256_bytes(b"".join(key.encode() + state[key].numpy().tobytes() for key in sorted(state)))

    def example_inputs(self):
        import torch
        return (torch.zeros(2, 1, 8, 8),)

    def dynamic_shapes(self):
        import torch
        return ({0: torch.export.Dim("batch", min=1, max=4096)},)

    def data(self) -> DataSplits:
        from calibration.digits import to_model_input
        splits = self.splits()
        source = self.cfg.calibration.source
        origin, columns = "the calibration data", None
        if source == "digits":
            calibration_pixels, calibration_labels = splits["calibration"]["pixels"], splits["calibration"]["label"]
        elif source == "files":
            origin = f"calibration.data_files={[str(f) for f in self.cfg.calibration.data_files]}"
            calibration_pixels, calibration_labels, columns = self._pixels_from_files(origin)
        else:
            raise QuantgateError(f"model=digits_cnn calibrates on images: use calibration=digits, or "
                                 f"calibration=files with 64 numeric pixel columns (0..1) and a label column; "
                                 f"got calibration.source={source}")
        train = splits["train"]
        return DataSplits(
            calibration_pixels, splits["validation"]["pixels"], splits["test"]["pixels"],
            calibration_labels, splits["validation"]["label"], splits["test"]["label"],
            train_inputs={"pixels": to_model_input(train["pixels"])}, train_labels=np.asarray(train["label"]),
            dataset_name=dataset_identity(self.cfg.calibration) if source == "files" else "sklearn.datasets.load_digits",
            calibration_source=origin, calibration_columns=columns)

    def _pixels_from_files(self, origin: str) -> tuple[list, list[int] | None, list[str]]:
        """User images from csv/json/parquet (`origin` names them): 64 numeric pixel columns (scaled 0..1) and
        `label`; also the pixel columns' names."""
        from calibration.sources import load_table
        table = load_table(self.cfg.calibration)
        pixel_columns = [c for c in table.column_names if c != "label"]
        if len(pixel_columns) != 64:
            raise QuantgateError(f"calibration.data_files must have 64 pixel columns (8x8) plus an optional "
                                 f"`label` column; found {len(pixel_columns)} other columns")
        rows = []
        for number, row in enumerate(table.select_columns(pixel_columns).to_list(), start=1):
            values = [as_number(row[c]) for c in pixel_columns]
            if None in values:
                column = pixel_columns[values.index(None)]
                raise InputError(f"{origin} row {number}, column {column}: {row[column]!r} is non-numeric; every "
                                 f"pixel column must be a number between 0 and 1")
            rows.append(values)
        labels = class_ids(table["label"], f"{origin} column label", 10) if "label" in table.column_names else None
        return rows, labels, pixel_columns

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
        from calibration.digits import to_model_input
        return {"pixels": to_model_input(examples)}


def hf_family(cfg):
    """model=hf: a decoder language model for model.task=text-generation (pipeline/builder/decoder.py), otherwise an
    encoder or image model with its task's head (pipeline/builder/hf_family.py)."""
    from pipeline.builder.decoder import DecoderFamily
    return DecoderFamily(cfg) if cfg.model.task == "text-generation" else HfFamily(cfg)


FAMILIES = {
    "text_embedding": TextEmbeddingFamily,
    "digits_cnn": DigitsCnnFamily,
    "hf": hf_family,
    "onnx": OnnxFamily,
    "torch": TorchFamily,
}


_FAMILY_CACHE: dict[str, object] = {}


def model_family(cfg):
    """The family for this config; one instance per model+data config in a process, so a model the
    pipeline trains (digits_cnn) is trained once per build, not once per stage."""
    from omegaconf import OmegaConf

    family = cfg.model.family
    if family not in FAMILIES:
        raise QuantgateError(f"unknown model.family {family!r}; valid: {', '.join(FAMILIES)}")
    key = json.dumps(OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True), sort_keys=True) + \
        json.dumps(OmegaConf.to_container(cfg.calibration, resolve=True, enum_to_str=True), sort_keys=True)
    if key not in _FAMILY_CACHE:
        _FAMILY_CACHE.clear()  # one build at a time per process; do not keep old models alive
        _FAMILY_CACHE[key] = FAMILIES[family](cfg)
    return _FAMILY_CACHE[key]

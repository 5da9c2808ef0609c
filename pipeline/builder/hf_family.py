"""model=hf: a Hugging Face transformers checkpoint exported with its task's head (`model.task`).

The checkpoint is a local folder or a hub id in the local hub cache (never downloaded). Each task is one
transformers AutoModel class and one output: `feature-extraction` (AutoModel: the `sentence_embedding` as
model=minilm exports it, pooled and normalised as the checkpoint's modules.json says, or `last_hidden_state`
with model.embedding_output),
`text-classification` (AutoModelForSequenceClassification: `logits` per text or sentence pair),
`token-classification` (AutoModelForTokenClassification: `logits` per token) and `image-classification`
(AutoModelForImageClassification: `logits` per image). Inputs are what the checkpoint's own tokenizer or image
processor gives and the model's forward takes (`input_ids`, `token_type_ids` where the model has them,
`attention_mask`; `pixel_values`), with dynamic batch (and sequence) axes. The text tasks of BERT-like encoders
(`FUSABLE_MODEL_TYPES`) are `fusable`: with model.fuse their reference is the fused graph, as model=minilm's
(pipeline/builder/export.py, fuse.py); image models and other architectures keep the dynamo export.

Everything that can be refused is refused when the family is made, before any export or data: an unknown task,
an architecture transformers has no such head for, a checkpoint whose weights lack the head.
"""
from __future__ import annotations

import inspect
import io
import json
from pathlib import Path

import numpy as np

from calibration.errors import one_line
from calibration.sources import load_images, load_text_examples
from pipeline.builder.checkpoints import (DataSplits, check_max_length, check_weight_files, dataset_identity,
                                        resolve_model_path, weights_digest)
from pipeline.builder.family import FamilyBase
from pipeline.builder.reproducible import portable_path_value
from pipeline.builder.sentence_head import read_sentence_head
from pipeline.errors import InputError, QuantgateError

# task: (transformers Auto class, its model_type -> class mapping in transformers.models.auto.modeling_auto, kind)
TASKS = {
    "feature-extraction": ("AutoModel", "MODEL_MAPPING_NAMES", "embedding"),
    "text-classification": ("AutoModelForSequenceClassification", "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES",
                            "classifier"),
    "token-classification": ("AutoModelForTokenClassification", "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES",
                             "classifier"),
    "image-classification": ("AutoModelForImageClassification", "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES",
                             "classifier"),
}
TEXT_INPUTS = ("input_ids", "token_type_ids", "attention_mask")
TEXT_TASKS = ("feature-extraction", "text-classification", "token-classification")
# BERT-like text encoders whose TorchScript export (eager attention) onnxruntime's transformer optimizer fuses as
# model_type "bert" (pipeline/builder/fuse.py), measured (onnxruntime 1.32, transformers 5.23) on tiny 2-layer
# checkpoints of each text task: one Attention per layer, two SkipLayerNormalization per layer, outputs equal to the
# unfused export's within 2e-7 on padded batches of real sentences (and pairs). The roberta-like types fuse a
# LayerNormalization where BERT fuses EmbedLayerNormalization (their position ids come from the padding).
# Not listed, so exported as they are (dynamo exporter): albert and megatron-bert (Attention fused in only some layers),
# mpnet and roformer (no Attention: relative or rotary positions), mobilebert (nothing fused), deberta and deberta-v2
# (not measured: TorchScript drops the token_type_ids they ignore).
FUSABLE_MODEL_TYPES = frozenset({"bert", "camembert", "data2vec-text", "distilbert", "electra", "ernie", "roberta",
                                 "xlm-roberta", "xlm-roberta-xl"})
EMBEDDING_OUTPUTS = ("sentence_embedding", "last_hidden_state")
CLASSIFIER_KINDS = ("classifier", "multi_label")
# transformers trains these heads with a sigmoid per label (BCEWithLogitsLoss) when config.problem_type says
# multi_label_classification, and with MSE (values, not classes) when it says regression; token classification is
# always one label per token.
PROBLEM_TYPE_TASKS = ("text-classification", "image-classification")
SHOWN = 25  # architectures named in a refusal


def supported_model_types(task: str) -> list[str]:
    from transformers.models.auto import modeling_auto
    return sorted(getattr(modeling_auto, TASKS[task][1]))


def _short_list(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f", ... ({len(names)} in all)" if len(names) > SHOWN else "")


class HfFamily(FamilyBase):
    """A transformers checkpoint with its task's head (the family contract: pipeline/builder/family.py)."""

    kind: str  # the task's (TASKS), or the checkpoint's problem_type's
    input_names: list[str]  # what the tokenizer gives and the forward takes, or pixel_values
    output_names: list[str]

    def __init__(self, cfg):
        self.cfg = cfg
        self.task = str(cfg.model.task) if cfg.model.task is not None else None
        if self.task not in TASKS:
            raise QuantgateError(f"model=hf needs model.task, one of: {', '.join(TASKS)} (got {self.task})")
        self.kind = TASKS[self.task][2]
        if self.task == "feature-extraction" and cfg.model.embedding_output not in EMBEDDING_OUTPUTS:
            raise QuantgateError(f"model.embedding_output={cfg.model.embedding_output!r}: valid: "
                                 f"{', '.join(EMBEDDING_OUTPUTS)}")
        self.path = resolve_model_path(cfg.model.name_or_path)
        self.config = self._check_architecture()
        problem = self.config.get("problem_type") if self.task in PROBLEM_TYPE_TASKS else None
        if problem == "multi_label_classification":
            self.kind = "multi_label"  # a sigmoid per label: judged by label sets, not argmax (fidelity.py)
        elif problem == "regression":
            self.kind = "generic"  # values, not classes: argmax of several regressed values means nothing
        if self.task in TEXT_TASKS:
            check_max_length(int(cfg.model.max_length), self.config, self.path)
        check_weight_files(self.path)
        self._model = self._load_checked()
        self._processor = None
        self.input_names = self._input_names()
        self.output_names = ["logits"] if self.task != "feature-extraction" else [str(cfg.model.embedding_output)]
        # A sentence embedding is pooled and normalised as the checkpoint's modules.json says (sentence_head.py).
        self.sentence_head = read_sentence_head(self.path, cfg.model.prompt_name) \
            if self.output_names == ["sentence_embedding"] else None

    @property
    def checkpoint_folder(self) -> Path:
        """The transformers checkpoint (config.json, tokenizer or image-processor files) the artifact folder
        copies for Optimum (pipeline/builder/hub_files.py)."""
        return self.path

    # --- what the checkpoint is, checked before any work ---------------------------------------------
    def _check_architecture(self) -> dict:
        config = json.loads((self.path / "config.json").read_bytes())
        model_type = config.get("model_type")
        supported = supported_model_types(self.task)
        if model_type not in supported:
            raise QuantgateError(
                f"{self.path.name}: architecture {model_type!r} cannot be exported for model.task={self.task} "
                f"(transformers has no {TASKS[self.task][0]} for it); supported model types for {self.task}: "
                f"{_short_list(supported)}. Tasks model=hf exports: {', '.join(TASKS)}")
        if self.task != "feature-extraction":  # a task head
            architectures = config.get("architectures") or []
            head_classes = self._task_class_names(model_type)
            suffixes = {name[name.index("For"):] for name in head_classes if "For" in name}  # ForImageClassification
            if architectures and not any(suffix in name for suffix in suffixes for name in architectures):
                raise QuantgateError(
                    f"{self.path.name} is a {', '.join(architectures)} checkpoint without the {self.task} head "
                    f"({' or '.join(head_classes)}); give a checkpoint fine-tuned for {self.task}, or "
                    f"model.task=feature-extraction")
        return config

    def _task_class_names(self, model_type: str) -> tuple[str, ...]:
        """The transformers classes of this task for `model_type`: one, or several (DeiT's image classifier with
        and without its distillation head)."""
        from transformers.models.auto import modeling_auto
        names = getattr(modeling_auto, TASKS[self.task][1])[model_type]
        return (names,) if isinstance(names, str) else tuple(names)

    def _load_checked(self, attention: str | None = None):
        import transformers
        auto = getattr(transformers, TASKS[self.task][0])
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()  # its load report: missing weights are refused below, in words
        options = {"attn_implementation": attention} if attention else {}
        try:
            model, info = auto.from_pretrained(str(self.path), local_files_only=True, output_loading_info=True,
                                               **options)
        except (OSError, ValueError, RuntimeError, KeyError) as error:
            raise QuantgateError(f"transformers could not load {self.path} for {self.task}: {one_line(error)}") from None
        finally:
            transformers.logging.set_verbosity(verbosity)
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise QuantgateError(
                f"{self.path.name}: the weights lack {len(missing)} parameter(s) of the {self.task} model "
                f"({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}): the checkpoint has no trained "
                f"{self.task} head; give a checkpoint fine-tuned for {self.task}")
        return model.eval()

    def _input_names(self) -> list[str]:
        accepted = inspect.signature(self._model.forward).parameters
        if self.task == "image-classification":
            return ["pixel_values"]
        produced = list(getattr(self.processor(), "model_input_names", TEXT_INPUTS))
        names = [name for name in TEXT_INPUTS if name in accepted and name in produced]
        if "input_ids" not in names or "attention_mask" not in names:
            raise QuantgateError(f"{self.path.name}: its tokenizer gives {produced} and the model takes "
                                 f"{list(accepted)}; model=hf exports text models that take input_ids and "
                                 f"attention_mask")
        return names

    # --- the fused graph (model.fuse, pipeline/builder/fuse.py) -------------------------------------------
    @property
    def fusable(self) -> bool:
        """A BERT-like text encoder onnxruntime's transformer optimizer fuses; images and other architectures are
        exported as they are."""
        return self.task in TEXT_TASKS and self.config.get("model_type") in FUSABLE_MODEL_TYPES

    def attention_shape(self) -> tuple[int, int]:
        """(attention heads, hidden size) from the checkpoint's config, for the transformer optimizer."""
        config = self._model.config
        try:
            return int(config.num_attention_heads), int(config.hidden_size)
        except AttributeError as missing:
            raise InputError(f"{self.path / 'config.json'} has no {missing.name}: not a BERT-like encoder the "
                             f"transformer optimizer can fuse; build it unfused with model.fuse=false") from None

    @property
    def id2label(self) -> dict[int, str] | None:
        labels = self._model.config.id2label if self.kind in CLASSIFIER_KINDS else None
        return {int(k): str(v) for k, v in labels.items()} if labels else None

    @property
    def source_name(self) -> str:
        return f"{portable_path_value(str(self.cfg.model.name_or_path))} ({self.task})"

    def weights_sha256(self) -> str:
        return weights_digest(self.path)

    def processor(self):
        """The checkpoint's own tokenizer, or image processor for image-classification."""
        if self._processor is None:
            try:
                if self.task == "image-classification":
                    from transformers import AutoImageProcessor
                    self._processor = AutoImageProcessor.from_pretrained(str(self.path), local_files_only=True)
                else:
                    from transformers import AutoTokenizer
                    self._processor = AutoTokenizer.from_pretrained(str(self.path), local_files_only=True)
            except (OSError, ValueError, KeyError) as error:
                what = "image processor (preprocessor_config.json)" if self.task == "image-classification" \
                    else "tokenizer"
                raise QuantgateError(f"{self.path.name} has no usable {what}: {one_line(error)}; save it into the "
                                     f"checkpoint folder (`save_pretrained`)") from None
        return self._processor

    # --- the model and its export ---------------------------------------------------------------------
    def load_torch(self, attention: str | None = None):
        """The task's module; `attention` picks transformers' attn_implementation ("eager" for a graph onnxruntime's
        transformer optimizer fuses; None: the checkpoint's as loaded, transformers' default sdpa). Another
        implementation than the loaded model's is a fresh load, so the family's own model never changes."""
        import torch

        model = self._model
        if attention is not None and attention != getattr(model.config, "_attn_implementation", None):
            model = self._load_checked(attention)
        names, task, head = list(self.input_names), self.task, self.sentence_head
        pooled = head is not None

        class TaskGraph(torch.nn.Module):
            """The task's output; the exporter names the inputs after `forward`'s positional arguments."""

            def __init__(self):
                super().__init__()
                self.model = model

            def run(self, **kwargs):
                out = self.model(**kwargs)
                if task != "feature-extraction":
                    return out.logits
                hidden = out.last_hidden_state
                if not pooled:
                    return hidden
                return head.embed(hidden, kwargs["attention_mask"])

        class Pixels(TaskGraph):
            def forward(self, pixel_values):
                return self.run(pixel_values=pixel_values)

        class Tokens(TaskGraph):
            def forward(self, input_ids, attention_mask):
                return self.run(input_ids=input_ids, attention_mask=attention_mask)

        class TokensAndTypes(TaskGraph):
            def forward(self, input_ids, token_type_ids, attention_mask):
                return self.run(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask)

        graphs = {("pixel_values",): Pixels, ("input_ids", "attention_mask"): Tokens,
                  ("input_ids", "token_type_ids", "attention_mask"): TokensAndTypes}
        return graphs[tuple(names)]().eval()

    def image_shape(self) -> tuple[int, int, int]:
        size = getattr(self.processor(), "crop_size", None) or getattr(self.processor(), "size", None) or {}
        size = dict(size) if not isinstance(size, int) else {"height": size, "width": size}
        side = size.get("shortest_edge")
        height, width = size.get("height", side), size.get("width", side)
        config = self._model.config
        height = height or getattr(config, "image_size", 224)
        width = width or getattr(config, "image_size", 224)
        return int(getattr(config, "num_channels", 3)), int(height), int(width)

    def example_inputs(self):
        import torch
        if self.task == "image-classification":
            return (torch.zeros(2, *self.image_shape()),)
        return tuple((torch.zeros if name == "token_type_ids" else torch.ones)(2, 8, dtype=torch.long)
                     for name in self.input_names)

    def dynamic_shapes(self):
        import torch
        batch = torch.export.Dim("batch", min=1, max=1024)
        if self.task == "image-classification":
            return ({0: batch},)
        positions = getattr(self._model.config, "max_position_embeddings", None) or 512
        sequence = torch.export.Dim("sequence", min=2, max=min(512, int(positions)))
        return tuple({0: batch, 1: sequence} for _ in self.input_names)

    # --- data ------------------------------------------------------------------------------------------
    def data(self) -> DataSplits:
        calibration_cfg = self.cfg.calibration
        source = calibration_cfg.source
        image_task = self.task == "image-classification"
        if image_task and source not in ("images", "hub"):
            raise QuantgateError(f"model.task=image-classification calibrates on images: use calibration=images "
                                 f"calibration.path=DIR (one subfolder per class), or calibration=hub; got "
                                 f"calibration={source}")
        if not image_task and source in ("images", "digits"):
            raise QuantgateError(f"model.task={self.task} calibrates on text: use calibration=files, hub or "
                                 f"pydoc_topics; got calibration={source}")
        if image_task:
            loaded = load_images(calibration_cfg, self.id2label, multi_label=self.kind == "multi_label")
            for example, path in zip(loaded["examples"], loaded["paths"]):
                self._decode(example, path)  # the model's own preprocessing takes every image, before any work
        else:
            loaded = load_text_examples(calibration_cfg, self.id2label, words=self.task == "token-classification",
                                        multi_label=self.kind == "multi_label")
        examples, labels = loaded["examples"], loaded["labels"]
        if source == "images":
            name = portable_path_value(str(calibration_cfg.path))
        elif source == "pydoc_topics":
            name = "pydoc_data.topics"
        else:
            name = dataset_identity(calibration_cfg)
        return DataSplits(examples, examples, examples, labels, labels, labels, dataset_name=str(name),
                          shared_pool=True)

    def _decode(self, data: bytes, name: str = "an image"):
        from PIL import Image
        channels = self.image_shape()[0]
        try:
            with Image.open(io.BytesIO(data)) as image:
                return image.convert("RGB" if channels == 3 else "L")
        except (OSError, ValueError) as error:
            raise InputError(f"image {name} cannot be decoded ({one_line(error)}); remove or replace it") from None

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
        if self.task == "image-classification":
            processed = self.processor()([self._decode(e) for e in examples], return_tensors="np")
            return {"pixel_values": np.asarray(processed["pixel_values"], dtype=np.float32)}
        encoded = self._tokenize(examples, pad_to_max_length)
        return {name: np.asarray(encoded[name], dtype=np.int64) for name in self.input_names}

    def _tokenize(self, examples: list, pad_to_max_length: bool = False):
        padding = "max_length" if pad_to_max_length else "longest"
        options = dict(padding=padding, truncation=True, max_length=int(self.cfg.model.max_length),
                       return_tensors="np")
        if self.task == "token-classification":
            return self.processor()([list(words) for words in examples], is_split_into_words=True, **options)
        if examples and isinstance(examples[0], tuple):
            return self.processor()([a for a, _ in examples], [b for _, b in examples], **options)
        texts = self.sentence_head.prompted(examples) if self.sentence_head else list(examples)
        return self.processor()(texts, **options)

    def encode_labels(self, examples: list, labels: list) -> np.ndarray:
        """Labels as the saved inputs need them: one class id per example; for a multi-label classifier a row of
        0/1 per label (multi-hot); for token classification one id per token, on the first sub-word of each word
        (-100 elsewhere and on padding, as transformers trains)."""
        if self.kind == "multi_label":
            multi_hot = np.zeros((len(labels), len(self.id2label)), dtype=np.int64)
            for row, ids in enumerate(labels):
                multi_hot[row, list(ids) if isinstance(ids, (list, tuple)) else [ids]] = 1
            return multi_hot
        if self.task != "token-classification":
            return np.asarray(labels, dtype=np.int64)
        encoded = self._tokenize(examples)
        width = encoded["input_ids"].shape[1]
        array = np.full((len(examples), width), -100, dtype=np.int64)
        for row, tags in enumerate(labels):
            previous = None
            for position, word in enumerate(encoded.word_ids(row)):
                if word is not None and word != previous:
                    array[row, position] = tags[word]
                previous = word
        return array


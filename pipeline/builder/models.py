"""The registry of model families: `model.family` -> the family class, checked against the contract when registered.

Every family implements the contract of pipeline/builder/family.py, in its own module; this registry is the one
place that names them. `model_family(cfg)` makes the family a config asks for, once per model and data config in
a process (a model the pipeline trains, digits_cnn, is trained once per build, not once per stage).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from omegaconf import OmegaConf

from pipeline.builder.checkpoints import resolve_model_path  # noqa: F401 - task.py imports it from here
from pipeline.builder.decoder import DecoderFamily
from pipeline.builder.digits_family import DigitsCnnFamily
from pipeline.builder.family import LanguageModelFamily, ModelFamily, check_decoder, check_family, check_instance
from pipeline.builder.hf_family import HfFamily
from pipeline.builder.onnx_family import OnnxFamily
from pipeline.builder.text_embedding_family import TextEmbeddingFamily
from pipeline.builder.torch_family import TorchFamily
from pipeline.errors import QuantgateError


@dataclass(frozen=True)
class Registered:
    """A registered family: its class, and the decoder it makes for model.task=text-generation (or None)."""

    family: type
    decoder: type | None = None

    def make(self, cfg):
        chosen = self.decoder if self.decoder is not None and cfg.model.task == "text-generation" else self.family
        return chosen(cfg)


FAMILIES: dict[str, Registered] = {}


def register_family(name: str, family: type, decoder: type | None = None) -> None:
    """Register `family` (a class implementing pipeline/builder/family.py's ModelFamily) as `model.family=name`,
    and its `decoder` (a LanguageModelFamily) if it has one; a missing member is refused here, naming it."""
    check_family(name, family)
    if decoder is not None:
        check_decoder(name, decoder)
    FAMILIES[name] = Registered(family, decoder)


register_family("text_embedding", TextEmbeddingFamily)
register_family("digits_cnn", DigitsCnnFamily)
# model=hf: an encoder or image model with its task's head, or a decoder language model for
# model.task=text-generation (pipeline/builder/decoder.py)
register_family("hf", HfFamily, decoder=DecoderFamily)
register_family("onnx", OnnxFamily)
register_family("torch", TorchFamily)


_FAMILY_CACHE: dict[str, object] = {}


def model_family(cfg) -> ModelFamily | LanguageModelFamily:
    """The family for this config (a LanguageModelFamily for a registered decoder's model.task=text-generation);
    one instance per model+data config in a process, so a model the pipeline trains (digits_cnn) is trained once
    per build, not once per stage."""
    name = cfg.model.family
    if name not in FAMILIES:
        raise QuantgateError(f"unknown model.family {name!r}; valid: {', '.join(FAMILIES)}")
    key = json.dumps(OmegaConf.to_container(cfg.model, resolve=True, enum_to_str=True), sort_keys=True) + \
        json.dumps(OmegaConf.to_container(cfg.calibration, resolve=True, enum_to_str=True), sort_keys=True)
    if key not in _FAMILY_CACHE:
        _FAMILY_CACHE.clear()  # one build at a time per process; do not keep old models alive
        family = FAMILIES[name].make(cfg)
        check_instance(name, family)
        _FAMILY_CACHE[key] = family
    return _FAMILY_CACHE[key]

"""The sentence embedding a checkpoint stands for: what sentence-transformers computes after the transformer.

A sentence-transformers checkpoint says in modules.json what follows its transformer: a Pooling module (its
config.json: `pooling_mode`, or the older `pooling_mode_*_tokens` booleans) and, for most, Normalize. BGE and
GTE-style models pool the [CLS] token, MiniLM and MPNet the mean of the tokens, some leave the vector
unnormalised. The exported graph follows that, so the fp32 reference (and the int8 artifact judged against it)
is the embedding `SentenceTransformer(folder).encode(texts)` gives, not one quantgate assumed. A checkpoint
without modules.json gets the mean of the tokens, L2-normalised.

Modules quantgate does not export (Dense, LayerNorm, a pooling that weights or picks the last token, a
transformer in a subfolder) are refused by name, never dropped silently: the artifact would compute another
embedding than the checkpoint's.

A checkpoint whose config_sentence_transformers.json names a `default_prompt_name` (e5- and bge-style retrieval
models: "query: ") has that prompt put before every text by `encode`, so its traffic starts with it: calibration,
validation and held-out texts get it too (`model.prompt_name` picks another of its prompts, '' none).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError

MODULES_FILE = "modules.json"
PROMPTS_FILE = "config_sentence_transformers.json"
# The pooling modes exported, as sentence-transformers names them (each one's vectors concatenated in the order
# the config lists them); the older boolean keys, in sentence-transformers' own concatenation order.
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
LEGACY_POOLING_KEYS = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                       "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                       "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
NO_MODULES = f"no {MODULES_FILE}: quantgate's default"


@dataclass(frozen=True)
class SentenceHead:
    """Pooling over the tokens, then (or not) L2 normalisation; `source` says where that was read."""
    pooling: tuple[str, ...] = ("mean",)
    normalize: bool = True
    source: str = NO_MODULES
    prompt: str = ""  # put before every text, as SentenceTransformer.encode does; "" = none
    prompt_source: str = ""  # where the prompt was read, e.g. "config_sentence_transformers.json default_prompt_name"

    def __post_init__(self):
        unknown = [mode for mode in self.pooling if mode not in POOLING_MODES]
        if unknown or not self.pooling:
            raise InputError(f"{self.source}: pooling {', '.join(unknown) or '(none)'} is not one quantgate exports "
                             f"(it exports {', '.join(POOLING_MODES)}); export the token states instead: "
                             f"model=hf model.task=feature-extraction model.embedding_output=last_hidden_state")

    def describe(self) -> str:
        prompt = f"; prompt {self.prompt!r} before every text ({self.prompt_source})" if self.prompt else ""
        return f"{' + '.join(self.pooling)} pooling, {'L2-normalised' if self.normalize else 'not normalised'} " \
               f"({self.source}){prompt}"

    def prompted(self, texts: list) -> list:
        """The texts as the model sees them from `SentenceTransformer.encode`: the prompt first."""
        return [self.prompt + text for text in texts] if self.prompt else list(texts)

    def embed(self, hidden, attention_mask):
        """The sentence embedding (torch), from the transformer's last hidden state and the attention mask, as
        sentence-transformers' Pooling and Normalize compute it."""
        import torch

        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        vectors = []
        for mode in self.pooling:
            if mode == "cls":  # the first token the mask keeps: [CLS], wherever the padding is
                first = attention_mask.to(torch.int32).argmax(dim=1)
                vectors.append(hidden[torch.arange(hidden.shape[0]), first])
            elif mode == "max":  # as TopK, not ReduceMax: onnxruntime's symbolic shape inference has no ReduceMax-18
                vectors.append(hidden.masked_fill(mask == 0, float("-inf")).topk(1, dim=1).values.squeeze(1))
            else:
                summed = (hidden * mask).sum(dim=1)
                tokens = mask.sum(dim=1).clamp(min=1e-9)
                vectors.append(summed / (tokens if mode == "mean" else torch.sqrt(tokens)))
        pooled = vectors[0] if len(vectors) == 1 else torch.cat(vectors, dim=-1)
        if not self.normalize:
            return pooled
        # F.normalize(pooled, dim=1) without its expand_as: the Expand it exports stops onnxruntime's symbolic shape
        # inference, and with it the SkipLayerNormalization fusion (../shared/FACTS.md).
        norm = torch.sqrt((pooled * pooled).sum(dim=1, keepdim=True))
        return pooled / norm.clamp(min=1e-12)


def read_prompt(folder: Path, prompt_name: str | None) -> tuple[str, str]:
    """(the prompt, where it was read): `prompt_name` of the checkpoint's prompts, its default prompt when None,
    none when ''."""
    if prompt_name == "":
        return "", ""
    where = f"{folder.name}/{PROMPTS_FILE}"
    try:
        config = json.loads((folder / PROMPTS_FILE).read_bytes()) if (folder / PROMPTS_FILE).is_file() else {}
        prompts = config.get("prompts") or {}
        default = config.get("default_prompt_name")
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise ValueError(f"prompts {prompts!r} is not a mapping of names to texts")
    except (OSError, ValueError, AttributeError) as error:
        raise InputError(f"{where} cannot be read ({error}); save the model again with sentence-transformers, or "
                         f"remove {PROMPTS_FILE}") from None
    name = default if prompt_name is None else prompt_name
    if name is None:
        return "", ""
    if name not in prompts:
        what = f"model.prompt_name={name}" if prompt_name is not None else f"its default_prompt_name {name!r}"
        fix = (f"its prompts: {', '.join(map(repr, prompts))}; set model.prompt_name to one of them, or "
               f"model.prompt_name='' for none") if prompts else \
            "it has no prompts; leave model.prompt_name out, or put the prompt in your calibration texts"
        raise InputError(f"{where} has no prompt named {name!r} ({what}); {fix}")
    source = f"{where} default_prompt_name" if prompt_name is None else f"model.prompt_name={name}"
    return prompts[name], source


def read_sentence_head(folder: Path, prompt_name: str | None = None) -> SentenceHead:
    """The head `folder`'s modules.json describes, or the default (mean, L2-normalised) when it has none; with the
    prompt its texts get (read_prompt)."""
    prompt, prompt_source = read_prompt(folder, prompt_name)
    listing = folder / MODULES_FILE
    if not listing.is_file():
        return SentenceHead(prompt=prompt, prompt_source=prompt_source)
    where = f"{folder.name}/{MODULES_FILE}"
    try:
        listed = json.loads(listing.read_bytes())
        modules = [(str(m["type"]).rsplit(".", 1)[-1], str(m.get("path", ""))) for m in listed]
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        raise InputError(f"{where} is not a sentence-transformers module list ({error}); save the model again with "
                         f"sentence-transformers (`model.save(folder)`), or remove {MODULES_FILE}") from None
    kinds = [kind for kind, _ in modules]
    if kinds[:1] != ["Transformer"] or modules[0][1] not in ("", "."):
        raise InputError(f"{where} does not start with a Transformer at the folder's top level ({modules[:1]}); save "
                         f"the model again with sentence-transformers (`model.save(folder)`)")
    head = kinds[1:]
    if head not in (["Pooling"], ["Pooling", "Normalize"]):
        raise InputError(f"{where} lists {' -> '.join(kinds)}: quantgate exports Transformer -> Pooling [-> Normalize] "
                         f"only, and would compute another embedding than this model's; export the token states "
                         f"instead (model=hf model.task=feature-extraction model.embedding_output=last_hidden_state) "
                         f"and apply the rest in your code")
    pooling_config = f"{folder.name}/{modules[1][1]}/config.json"
    try:
        config = json.loads((folder / modules[1][1] / "config.json").read_bytes())
        modes = config.get("pooling_mode")
        if modes is None:
            modes = [mode for key, mode in LEGACY_POOLING_KEYS.items() if config.get(key)] or ["mean"]
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
        if not all(isinstance(mode, str) for mode in modes):
            raise ValueError(f"pooling_mode {modes} is not a name or a list of names")
        include_prompt = config.get("include_prompt", True)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise InputError(f"{pooling_config}, the Pooling module's settings, cannot be read ({error}); save the model "
                         f"again with sentence-transformers") from None
    if prompt and not include_prompt:
        raise InputError(f"{pooling_config} leaves the prompt's tokens out of the pooling (include_prompt=false, as "
                         f"INSTRUCTOR models do) and this build would put the prompt {prompt!r} ({prompt_source}) "
                         f"before every text: quantgate does not export that pooling; build without the prompt "
                         f"(model.prompt_name='') and apply it in your code, or export the token states "
                         f"(model=hf model.task=feature-extraction model.embedding_output=last_hidden_state)")
    return SentenceHead(pooling=modes, normalize=head[-1] == "Normalize", source=where, prompt=prompt,
                        prompt_source=prompt_source)

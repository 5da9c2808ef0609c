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
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError

MODULES_FILE = "modules.json"
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

    def __post_init__(self):
        unknown = [mode for mode in self.pooling if mode not in POOLING_MODES]
        if unknown or not self.pooling:
            raise InputError(f"{self.source}: pooling {', '.join(unknown) or '(none)'} is not one quantgate exports "
                             f"(it exports {', '.join(POOLING_MODES)}); export the token states instead: "
                             f"model=hf model.task=feature-extraction model.embedding_output=last_hidden_state")

    def describe(self) -> str:
        return f"{' + '.join(self.pooling)} pooling, {'L2-normalised' if self.normalize else 'not normalised'} " \
               f"({self.source})"

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


def read_sentence_head(folder: Path) -> SentenceHead:
    """The head `folder`'s modules.json describes, or the default (mean, L2-normalised) when it has none."""
    listing = folder / MODULES_FILE
    if not listing.is_file():
        return SentenceHead()
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
    except (OSError, ValueError, TypeError, AttributeError) as error:
        raise InputError(f"{pooling_config}, the Pooling module's settings, cannot be read ({error}); save the model "
                         f"again with sentence-transformers") from None
    return SentenceHead(pooling=modes, normalize=head[-1] == "Normalize", source=where)

"""What an output is, for judging: its kind (logits, label sets, score, ids, token states, events, vector), the
positions that count (the attention mask) and its scale (the RMS of the fp32 reference over those positions)."""
from __future__ import annotations

import numpy as np

IDS, LABEL_SETS, LOGITS, SCORE, TOKEN_STATES, VECTOR = "ids", "label_sets", "logits", "score", "token_states", "vector"
EVENTS = "events"


# The figure each kind of decision is held to `verify.min_top1_agreement` by, and its name in words.
AGREEMENT = {LOGITS: ("top1_agreement", "top-1 agreement"), IDS: ("top1_agreement", "share of values equal to fp32's"),
             LABEL_SETS: ("label_set_agreement", "label-set agreement"),
             EVENTS: ("decision_agreement", "agreement of the per-chunk decisions (score above verify.threshold)")}
# A correlation of fewer values says nothing (two are always +-1, one has none): such scores are judged element-wise
# only (one emulated sample, a padding check of two).
MIN_SCORE_VALUES = 3


def token_mask(mask: np.ndarray | None, output: np.ndarray) -> np.ndarray | None:
    """The attention mask when this output is per token (first two axes = the mask's), else None."""
    if mask is None or output.ndim < 3 or output.shape[:2] != mask.shape[:2]:
        return None
    return mask.astype(bool)


def score_values(output: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """The values of a score output, flat: one per sample ((batch,) or (batch, 1)), or one per non-padding token
    ((batch, tokens, 1) under an attention mask); None for any other output."""
    if output.ndim >= 1 and len(output) > 0 and output.size == len(output):
        return output.reshape(-1)
    tokens = token_mask(mask, output)
    if tokens is not None and output.size == tokens.size:
        return output.reshape(tokens.shape)[tokens]
    return None


def output_kind(output: np.ndarray, model_kind: str, mask: np.ndarray | None) -> str:
    """How an output is judged (the module's docstring): by its dtype, the model's kind and its shape."""
    if not np.issubdtype(output.dtype, np.floating):
        return IDS
    if model_kind == "multi_label" and output.ndim >= 2:
        return LABEL_SETS
    if model_kind == "classifier" and output.ndim >= 2 and output.shape[-1] > 1:
        return LOGITS
    if model_kind == "event" and score_values(output, mask) is not None:
        return EVENTS
    if score_values(output, mask) is not None:
        return SCORE
    if token_mask(mask, output) is not None:
        return TOKEN_STATES
    return VECTOR


def valid_values(array: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """The values that count: non-padding positions of a per-token output, everything otherwise."""
    tokens = token_mask(mask, array)
    return array[tokens] if tokens is not None else array


def output_scale(reference: np.ndarray, mask: np.ndarray | None, floor: float = 1e-12) -> float:
    """The RMS of the fp32 output over the positions that count, at least `floor` (verify.near_zero): the unit of
    element-wise errors."""
    values = valid_values(reference, mask).astype(np.float64)
    return max(float(np.sqrt(np.mean(values ** 2))) if values.size else 0.0, floor, 1e-12)

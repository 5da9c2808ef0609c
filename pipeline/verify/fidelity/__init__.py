"""How close an artifact's outputs are: to the fp32 reference, and to the same artifact on the reference CPU.

Every output of the model is judged, whatever its rank:

- element-wise, on the output's own scale (the RMS of the fp32 reference over the positions that count),
  so a few destroyed values show even when a whole-vector cosine stays at 0.9999;
- by its kind:
  - `logits` (a classifier: argmax along the last axis, at every position of a token classifier);
  - `label_sets` (a multi-label classifier's independent yes/no labels: a logit above 0, or above 0.5 for outputs
    that are probabilities; the share of samples whose set of labels equals fp32's, held to the top-1 agreement
    bound; with multi-hot labels, subset accuracy and macro-F1 over the labels);
  - `score` (one value per sample, a reranker's or a regression's score or a one-logit classifier, or one value
    per token, `(batch, tokens, 1)`; the cosine of one number is only its sign, so scores are judged by their
    correlation with fp32's across the samples, or across the non-padding tokens, held to the cosine-mean bound);
  - `ids` (an integer output: a class id from ArgMax, a tag per token; the share of values equal to fp32's, at
    non-padding positions, held to the top-1 agreement bound);
  - `token_states` (an output whose first two axes are the batch and the sequence of an `attention_mask`: cosine
    per non-padding token, and after pooling when asked);
  - `events` (model.kind=event: one score per chunk of a detector; the share of chunks whose decision, score above
    `verify.threshold`, equals fp32's, held to the top-1 agreement bound; with 0/1 labels, accuracy of both);
  - `vector` (cosine per sample over the flattened output).
  Models of kind `embedding` and `generic` (a model a user brings, whose outputs mean nothing quantgate knows) are
  judged as token states or vectors; only `classifier` gives logits and only `multi_label` label sets;
- in groups: parts of one output on different scales (box pixels beside class probabilities) are also judged each
  as an output of its own, on its own scale (pipeline.verify.groups);
- a detector (`model.kind=detector`) also by its detections after the score threshold and NMS, matched to fp32's
  (pipeline.verify.detection): recall, precision, mean IoU.

Near-empty samples: where fp32's output of a sample is near zero (a text detector's probability map of a page
without text, ~1e-7), its direction is rounding noise and a cosine says nothing. A sample (a token, for token
states) whose fp32 RMS is under `verify.near_empty_ratio` of the output's scale is judged by magnitude instead: its
RMS error to fp32 in units of the output's scale, held to what the worst-cosine bound lets a typical sample be off
by, sqrt(2 (1 - min_cosine_worst)) (0.32 at 0.95). The output's scale is the RMS over all samples, never below
`verify.near_zero` (absolute): an output near zero on every input is judged in units of that floor.

Per-CPU numerics: int8 kernels differ by ISA (u8s8 without VNNI saturates in VPMADDUBSW), so each
profile's outputs are also compared with the same artifact's outputs on the reference CPU, on the
same samples. Kernel-to-kernel noise is not small for dynamic int8 (fp32 parts round differently by
ISA, and every layer quantizes its activations again: MiniLM differs by about half its output scale
between SSE and AVX2 kernels) but it leaves the error to fp32 where it was; saturation makes it many
times worse. So a profile fails when its largest error to fp32 exceeds the reference CPU's by more
than `verify.max_cpu_excess_error` (in units of the output's scale) and by more than
`verify.max_cpu_error_ratio` times. The bounds and the noise they were set from: docs/verification.md.

One module per concern: `kinds` (what an output is, its mask and scale), `limits` (the bounds), `figures` (one
output's figures by kind), `judging` (outputs judged within the bounds, the problems in words), `cpus` (the same
artifact on two CPUs, and the samples the emulated ones run). numpy only: the parent imports this, never a child.
"""
from pipeline.verify.fidelity.cpus import CpuComparison, choose_samples, choose_sequences, compare_cpus
from pipeline.verify.fidelity.figures import classification_figures, kind_figures, macro_f1, score_correlation
from pipeline.verify.fidelity.judging import (Judgement, Reading, judge, judge_output, keep_decisions_within_noise,
                                              output_reading, state_drift, summarize)
from pipeline.verify.fidelity.kinds import (EVENTS, IDS, LABEL_SETS, LOGITS, SCORE, TOKEN_STATES, VECTOR, output_kind,
                                            output_scale)
from pipeline.verify.fidelity.limits import Limits

__all__ = ["CpuComparison", "EVENTS", "IDS", "Judgement", "LABEL_SETS", "LOGITS", "Limits", "Reading", "SCORE",
           "TOKEN_STATES", "VECTOR", "choose_samples", "choose_sequences", "classification_figures", "compare_cpus",
           "judge", "judge_output", "keep_decisions_within_noise", "kind_figures", "macro_f1", "output_kind",
           "output_reading", "output_scale", "score_correlation", "state_drift", "summarize"]

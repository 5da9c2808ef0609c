"""Seeded, deduplicated, disjoint samples (calibration, validation, held-out), with fingerprints.

Strategies: `random`; `stratified` keeps each label's share; `length_stratified` keeps the
share of short, medium and long texts (quartiles of length), so calibration sees long inputs too.
"""
from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from dataclasses import dataclass, field

from calibration.errors import CalibrationError

STRATEGIES = ("random", "stratified", "length_stratified")


@dataclass
class Sample:
    examples: list  # texts, or pixel lists
    indices: list[int]  # row numbers in the source split
    labels: list[int] | None = field(default=None)

    def sha256(self) -> str:
        """Fingerprint of the examples themselves (not the indices): equal samples, equal hash."""
        digest = hashlib.sha256()
        for example in self.examples:
            encoded = example.encode("utf-8") if isinstance(example, str) else \
                example if isinstance(example, bytes) else repr(example).encode()
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self.examples)


def _dedup_key(example) -> str:
    if isinstance(example, str):
        return " ".join(example.lower().split())
    if isinstance(example, bytes):  # an encoded image: identical files are duplicates
        return hashlib.sha256(example).hexdigest()
    if isinstance(example, tuple) and all(isinstance(part, str) for part in example):  # a text pair, words
        return "\x1f".join(" ".join(part.lower().split()) for part in example)
    return repr(example)


def _length(example) -> int:
    """A text's length; a pair's or a word sequence's summed."""
    return len(example) if isinstance(example, str) else sum(len(part) for part in example)


def deduplicated_indices(examples: list) -> list[int]:
    """First occurrence of each example (texts compared case- and whitespace-insensitively)."""
    seen, kept = set(), []
    for index, example in enumerate(examples):
        key = _dedup_key(example)
        if key not in seen:
            seen.add(key)
            kept.append(index)
    return kept


def _strata(examples: list, labels: list[int] | None, strategy: str, candidates: list[int]) -> dict:
    if strategy == "random":
        return {0: candidates}
    if strategy == "stratified":
        if labels is None:
            raise CalibrationError("calibration.strategy=stratified needs labels; this source has none. Use "
                                 "calibration.strategy=length_stratified (text) or random")
        keys = {i: labels[i] for i in candidates}
    elif strategy == "length_stratified":
        if isinstance(examples[candidates[0]] if candidates else "", bytes):  # images have no text length
            return {0: candidates}
        lengths = sorted(_length(examples[i]) for i in candidates)
        quartiles = [lengths[len(lengths) * q // 4] for q in (1, 2, 3)]
        keys = {i: sum(_length(examples[i]) > bound for bound in quartiles) for i in candidates}
    else:
        raise CalibrationError(f"unknown calibration.strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    strata = defaultdict(list)
    for index in candidates:
        strata[keys[index]].append(index)
    return dict(strata)


def draw(examples: list, n: int, seed: int, strategy: str = "random", labels: list[int] | None = None,
         exclude: set[int] | frozenset[int] = frozenset(), deduplicate: bool = True, what: str = "sample") -> Sample:
    """n rows not in `exclude`, each stratum represented in proportion (largest remainder)."""
    if n <= 0:
        raise CalibrationError(f"the {what} size must be a positive integer, got {n}")
    candidates = deduplicated_indices(examples) if deduplicate else list(range(len(examples)))
    candidates = [i for i in candidates if i not in exclude]
    if len(candidates) < n:
        raise CalibrationError(f"the {what} needs {n} distinct examples but the source has only {len(candidates)} "
                             f"left; lower the count or add data")
    rng = random.Random(seed)
    strata = _strata(examples, labels, strategy, candidates)
    quotas = {key: n * len(rows) / len(candidates) for key, rows in strata.items()}
    counts = {key: int(quota) for key, quota in quotas.items()}
    for key in sorted(quotas, key=lambda k: (counts[k] - quotas[k], str(k)))[: n - sum(counts.values())]:
        counts[key] += 1
    chosen = []
    for key in sorted(strata, key=str):
        rows = list(strata[key])
        rng.shuffle(rows)
        chosen.extend(rows[: counts[key]])
    chosen.sort()
    return Sample([examples[i] for i in chosen], chosen, None if labels is None else [labels[i] for i in chosen])


def split_calibration_heldout(texts: list[str], n_samples: int, n_heldout: int, seed: int,
                              deduplicate: bool = True, strategy: str = "random") -> tuple[Sample, Sample]:
    """Disjoint calibration and held-out samples from one pool."""
    if n_samples <= 0 or n_heldout <= 0:
        raise CalibrationError(f"calibration.n_samples ({n_samples}) and calibration.n_heldout ({n_heldout}) "
                             f"must both be positive")
    calibration = draw(texts, n_samples, seed, strategy, deduplicate=deduplicate, what="calibration sample")
    heldout = draw(texts, n_heldout, seed + 1, strategy, exclude=set(calibration.indices), deduplicate=deduplicate,
                   what="held-out sample")
    return calibration, heldout

"""Seeded, deduplicated, disjoint calibration and held-out samples, with a fingerprint."""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from pipeline.config import QuantgateError


@dataclass
class Sample:
    texts: list[str]
    indices: list[int]  # row numbers in the source dataset

    def sha256(self) -> str:
        """Fingerprint of the examples themselves (not the indices): equal samples, equal hash."""
        digest = hashlib.sha256()
        for text in self.texts:
            encoded = text.encode("utf-8")
            digest.update(len(encoded).to_bytes(8, "little") + encoded)
        return digest.hexdigest()


def deduplicated_indices(texts: list[str]) -> list[int]:
    """First occurrence of each text, compared case- and whitespace-insensitively."""
    seen, kept = set(), []
    for index, text in enumerate(texts):
        key = " ".join(text.lower().split())
        if key not in seen:
            seen.add(key)
            kept.append(index)
    return kept


def split_calibration_heldout(texts: list[str], n_samples: int, n_heldout: int, seed: int,
                              deduplicate: bool = True) -> tuple[Sample, Sample]:
    if n_samples <= 0 or n_heldout <= 0:
        raise QuantgateError(f"calibration.n_samples ({n_samples}) and calibration.n_heldout ({n_heldout}) "
                             f"must both be positive")
    candidates = deduplicated_indices(texts) if deduplicate else list(range(len(texts)))
    if len(candidates) < n_samples + n_heldout:
        raise QuantgateError(f"the calibration source has {len(candidates)} distinct examples, fewer than "
                             f"calibration.n_samples + calibration.n_heldout = {n_samples + n_heldout}; "
                             f"lower them or add data")
    random.Random(seed).shuffle(candidates)
    calibration_rows = sorted(candidates[:n_samples])
    heldout_rows = sorted(candidates[n_samples:n_samples + n_heldout])
    return (Sample([texts[i] for i in calibration_rows], calibration_rows),
            Sample([texts[i] for i in heldout_rows], heldout_rows))

"""scikit-learn's bundled digits (1,797 8x8 images, offline) as a `datasets.DatasetDict`.

Four disjoint, label-stratified, seeded splits: train (fits the fp32 model and QAT), calibration,
validation (the build-time accuracy gate) and test (held out for verification).
"""
from __future__ import annotations

import numpy as np

SPLIT_FRACTIONS = {"train": 0.6, "calibration": 0.1, "validation": 0.1, "test": 0.2}
IMAGE_SHAPE = (1, 8, 8)
PIXEL_SCALE = 16.0  # load_digits pixels are 0..16


def digits_splits(seed: int = 0):
    import datasets
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = (digits.data / PIXEL_SCALE).astype(np.float32)
    labels = digits.target.astype(np.int64)
    rows = np.arange(len(labels))
    remaining, splits = rows, {}
    fraction_left = 1.0
    for name in ("test", "validation", "calibration"):
        share = SPLIT_FRACTIONS[name] / fraction_left
        remaining, taken = train_test_split(remaining, test_size=share, random_state=seed,
                                            stratify=labels[remaining])
        splits[name] = np.sort(taken)
        fraction_left -= SPLIT_FRACTIONS[name]
    splits["train"] = np.sort(remaining)
    return datasets.DatasetDict({
        name: datasets.Dataset.from_dict({"pixels": pixels[index].tolist(), "label": labels[index].tolist(),
                                          "row": index.tolist()})
        for name, index in splits.items()})


def to_model_input(pixels) -> np.ndarray:
    array = np.asarray(pixels, dtype=np.float32)
    return array.reshape((-1, *IMAGE_SHAPE))

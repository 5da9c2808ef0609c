"""Stage 2, calibrate: a seeded, deduplicated calibration sample and a disjoint held-out split.

The held-out inputs are saved as `heldout.npz` (arrays named after the model's inputs) for the
verify stage; the calibration batches stay in memory for the quantize stage.
"""
from __future__ import annotations

import io

import numpy as np

from calibration.readers import text_batches, tokenize
from calibration.sampling import split_calibration_heldout
from calibration.sources import load_text_dataset
from pipeline.manifest import CalibrationRecord, Manifest, atomic_write_bytes
from pipeline.progress import step
from pipeline.stages.export import load_tokenizer


def run(cfg, manifest: Manifest) -> tuple[Manifest, list[dict[str, np.ndarray]]]:
    """Returns the manifest and the calibration batches (model inputs) for quantize."""
    calibration_cfg = cfg.calibration
    source = getattr(calibration_cfg.source, "value", calibration_cfg.source)
    with step(f"calibrate: {calibration_cfg.n_samples} calibration + {calibration_cfg.n_heldout} held-out "
              f"examples from {source} (seed {calibration_cfg.seed})"):
        texts = load_text_dataset(calibration_cfg)["text"]
        calibration, heldout = split_calibration_heldout(
            texts, calibration_cfg.n_samples, calibration_cfg.n_heldout, calibration_cfg.seed,
            calibration_cfg.deduplicate)
        tokenizer = load_tokenizer(cfg)
        histogram_method = getattr(calibration_cfg.method, "value", calibration_cfg.method) != "minmax"
        batches = text_batches(tokenizer, calibration.texts, calibration_cfg.batch_size, cfg.model.max_length,
                               pad_to_max_length=histogram_method)
        heldout_inputs = tokenize(tokenizer, heldout.texts, cfg.model.max_length)
        buffer = io.BytesIO()
        np.savez(buffer, **heldout_inputs)
        atomic_write_bytes(manifest.path(manifest.heldout_file), buffer.getvalue())
    method = getattr(calibration_cfg.method, "value", calibration_cfg.method)
    dataset_name = {"pydoc_topics": "pydoc_data.topics", "hub": calibration_cfg.hub_name,
                    "files": ",".join(calibration_cfg.data_files)}[source]
    manifest.calibration = CalibrationRecord(
        dataset=str(dataset_name), split=calibration_cfg.split, n=len(calibration.texts),
        n_heldout=len(heldout.texts), method=method, sha256=calibration.sha256(),
        heldout_sha256=heldout.sha256(), seed=int(calibration_cfg.seed),
        indices=calibration.indices, heldout_indices=heldout.indices)
    return manifest, batches

"""Stage 2, calibrate: disjoint, seeded, deduplicated calibration / validation / held-out samples.

Writes `calibration.npz` (the calibration batches), `validation.npz` (the accuracy gate's inputs),
`heldout.npz` (verification's inputs; arrays named after the model inputs, plus `labels` for
classifiers) and `calibration_report.json` (coverage: are held-out activations inside the
calibration ranges?).
"""
from __future__ import annotations

import io

import numpy as np

from calibration import layout
from calibration.coverage import coverage_report, describe
from calibration.sampling import deduplicated_indices, draw
from pipeline.errors import InputError, QuantgateError
from pipeline.manifest import CalibrationRecord, Manifest, atomic_write_bytes, atomic_write_json
from pipeline.builder.checkpoints import DataSplits
from pipeline.builder.models import model_family
from pipeline.progress import say, step
from pipeline.verify.child_onnx import stream_run

FLOAT32_MAX = float(np.finfo(np.float32).max)


# Sources of text, tokenized with truncation at model.max_length (npz arrays and images are taken as they are).
TEXT_SOURCES = ("pydoc_topics", "files", "hub")


def save_npz(path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def save_batches(path, batches: list[dict[str, np.ndarray]]) -> None:
    save_npz(path, {f"{index:04d}.{name}": array for index, batch in enumerate(batches)
                    for name, array in batch.items()})


def load_batches(path) -> list[dict[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as archive:
        batches: dict[str, dict[str, np.ndarray]] = {}
        for key in sorted(archive.files):
            index, name = key.split(".", 1)
            batches.setdefault(index, {})[name] = archive[key]
    return [batches[index] for index in sorted(batches)]


def load_inputs(path, input_names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in input_names}, (archive["labels"] if "labels" in archive else None)


def rows_at_max_length(batches: list[dict[str, np.ndarray]], max_length: int) -> int:
    """How many tokenized rows fill all `max_length` tokens: the tokenizer cut any longer text there."""
    return sum(int((batch["attention_mask"].sum(axis=1) >= max_length).sum()) for batch in batches
               if "attention_mask" in batch)


def check_sample_size(n_examples: int, minimum: int) -> None:
    """Refuse, before any quantization, a calibration sample that is empty or too small."""
    if n_examples <= 0:
        raise QuantgateError("the calibration sample is empty; point calibration at data with examples")
    if n_examples < minimum:
        raise QuantgateError(f"the calibration sample has {n_examples} examples, fewer than calibration.min_samples"
                             f"={minimum}; add data or raise calibration.n_samples")


def check_source_values(data: DataSplits) -> None:
    """Refuse a calibration source that is empty, or holds NaN, inf or a number float32 cannot hold (the
    model computes in float32: 1e39 would become inf), before any export or training."""
    pool, columns = data.calibration_pool, data.calibration_columns
    if len(pool) == 0:
        raise QuantgateError("the calibration data is empty: the source holds no usable examples; point "
                             "calibration at data with examples")
    if isinstance(pool[0], (str, tuple, bytes)):  # texts, text pairs or words, encoded images
        return
    values = np.asarray(pool, dtype=np.float64).reshape(len(pool), -1)
    bad = ~(np.abs(values) <= FLOAT32_MAX)  # NaN compares false too
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        where = f"row {row + 1}, column {columns[column] if columns else column + 1}"
        if np.isfinite(values[row, column]):
            raise InputError(f"{data.calibration_source} holds {values[row, column]:g} at {where}: outside "
                             f"float32's range (+-{FLOAT32_MAX:.4g}) that the model computes in; rescale or clean "
                             f"the data and rebuild")
        raise InputError(f"{data.calibration_source} holds {int(bad.sum())} NaN or inf value(s), the first at "
                         f"{where}; clean the data (drop or impute those rows) and rebuild")


def carried_states(reference, batches: list[dict[str, np.ndarray]], record: dict, steps: int) -> list[dict]:
    """The calibration batches of a stateful model with its state inputs as a streamed fp32 run carries them: the
    examples, in order, run as sequences of `steps` chunks (pipeline/verify/child_onnx.py stream_run), and each
    chunk but a sequence's first takes the state the chunk before it returned (the data may hold only zeros)."""
    import onnxruntime as ort

    axes = record["inputs"]
    examples = layout.concatenate(batches, axes)
    n = layout.count(examples, axes)
    steps = max(1, min(steps, n))
    session = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    names = [node.name for node in session.get_outputs()]
    outputs = stream_run(session.run, names, examples, record, steps)
    for output, fed in record["state"].items():
        carried = layout.batch_first(examples[fed], axes[fed]).copy()
        follows = [i for i in range(len(outputs[output])) if i % steps]  # not a sequence's first chunk
        carried[follows] = outputs[output][[i - 1 for i in follows]]
        examples[fed] = layout.model_layout(carried, axes[fed])
    say(f"calibrate: the state input(s) {', '.join(record['state'].values())} take the states a streamed fp32 run "
        f"carries (the calibration examples as sequences of {steps} chunks)")
    sizes = [layout.count(batch, axes) for batch in batches]
    starts = np.cumsum([0, *sizes])
    return [layout.take(examples, slice(int(start), int(start + size)), axes) for start, size in zip(starts, sizes)]


def draw_samples(calibration_cfg, data: DataSplits) -> tuple:
    """The calibration, validation and held-out samples (calibration.sampling Sample), disjoint when the three
    draw from one pool. A small user file is used whole (down to calibration.min_samples, checked here); the
    validation and held-out samples still need their full counts."""
    strategy, seed, deduplicate = calibration_cfg.strategy, int(calibration_cfg.seed), calibration_cfg.deduplicate
    available = len(deduplicated_indices(data.calibration_pool)) if deduplicate else len(data.calibration_pool)
    reserved = (calibration_cfg.n_validation + calibration_cfg.n_heldout) if data.shared_pool else 0
    n_samples = min(int(calibration_cfg.n_samples), max(available - reserved, 1))
    if n_samples < calibration_cfg.n_samples:
        say(f"calibrate: the source has {available} distinct examples; calibrating on {n_samples}, not "
            f"calibration.n_samples={calibration_cfg.n_samples}")
    check_sample_size(n_samples, int(calibration_cfg.min_samples))
    calibration = draw(data.calibration_pool, n_samples, seed, strategy, data.calibration_labels,
                       deduplicate=deduplicate, what="calibration sample")
    used = set(calibration.indices) if data.shared_pool else set()
    validation = draw(data.validation_pool, calibration_cfg.n_validation, seed + 1, strategy, data.validation_labels,
                      exclude=used, deduplicate=deduplicate, what="validation sample (calibration.n_validation)")
    used |= set(validation.indices) if data.shared_pool else set()
    heldout = draw(data.heldout_pool, calibration_cfg.n_heldout, seed + 2, strategy, data.heldout_labels,
                   exclude=used, deduplicate=deduplicate, what="held-out sample (calibration.n_heldout)")
    return calibration, validation, heldout


def say_prompt(head, examples: list) -> None:
    """Say the prompt every text gets (a sentence head's), and how many texts already carried it."""
    if head is None or not head.prompt:
        return
    say(f"calibrate: every text gets the prompt {head.prompt!r} first ({head.prompt_source}), as "
        f"SentenceTransformer.encode does")
    doubled = sum(isinstance(text, str) and text.startswith(head.prompt) for text in examples)
    if doubled:
        say(f"calibrate: {doubled} of {len(examples)} calibration texts already start with {head.prompt!r} and now "
            f"read {head.prompt * 2!r}...; if your traffic carries the prompt, build with model.prompt_name=''")


def say_truncated(cfg, batches: list[dict[str, np.ndarray]], n_examples: int) -> None:
    """Say how many calibration texts model.max_length cut."""
    if cfg.calibration.source not in TEXT_SOURCES:
        return
    max_length = int(cfg.model.max_length)
    cut = rows_at_max_length(batches, max_length)
    if cut:
        say(f"calibrate: {cut} of {n_examples} calibration texts reach model.max_length={max_length} tokens and "
            f"longer ones were cut there: the artifact is calibrated, gated and verified on at most {max_length} "
            f"tokens; if real traffic is longer, build with a larger model.max_length")


def calibration_batches(cfg, manifest: Manifest, family, examples: list) -> list[dict[str, np.ndarray]]:
    """The calibration sample encoded in batches of calibration.batch_size (padded to model.max_length for the
    histogram methods), with a stateful model's state inputs as a streamed fp32 run carries them."""
    pad = cfg.calibration.method != "minmax"
    size = int(cfg.calibration.batch_size)
    batches = [family.encode(examples[start:start + size], pad) for start in range(0, len(examples), size)]
    layout_record = family.layout.to_json() if family.layout is not None else {}
    if layout_record.get("state"):
        batches = carried_states(manifest.path(manifest.reference_file), batches, layout_record,
                                 int(cfg.verify.stream_steps))
    return batches


def check_coverage(cfg, manifest: Manifest, family, batches: list[dict[str, np.ndarray]], sha256: str) -> str:
    """Write calibration_report.json (are held-out activations inside the calibration ranges?), say it, and fail
    the build when calibration is not representative; returns the report's status."""
    calibration_cfg = cfg.calibration
    with step("calibrate: coverage of held-out activations by calibration ranges"):
        heldout_inputs, _ = load_inputs(manifest.path(manifest.heldout_file), family.input_names)
        report = coverage_report(
            manifest.path(manifest.reference_file), list(cfg.mode.op_types_to_quantize), batches,
            [heldout_inputs], float(calibration_cfg.coverage_warn), float(calibration_cfg.coverage_fail),
            enforced=cfg.mode.name in ("static", "qat"))
        report["calibration_sha256"] = sha256
        atomic_write_json(manifest.path(manifest.calibration_report_file), report)
    say(describe(report))
    if report["status"] == "warn":
        say(f"WARNING: calibration may not represent real inputs: tensors {', '.join(report['worst_tensors'][:3])} "
            f"see held-out values outside their calibration range; use more calibration data "
            f"(calibration.n_samples) or data closer to real traffic (calibration=files)")
    if report["status"] == "fail":
        raise QuantgateError(
            f"calibration is not representative: {report['worst_fraction_outside']:.1%} of held-out values of "
            f"{report['worst_tensors'][0]} fall outside the calibration range (calibration.coverage_fail="
            f"{calibration_cfg.coverage_fail}); worst tensors: {', '.join(report['worst_tensors'][:3])}. Use more "
            f"or more varied calibration data (calibration.n_samples, calibration.strategy=stratified)")
    return report["status"]


def run(cfg, manifest: Manifest) -> Manifest:
    calibration_cfg = cfg.calibration
    family = model_family(cfg)
    with step(f"calibrate: {calibration_cfg.n_samples} calibration, {calibration_cfg.n_validation} validation, "
              f"{calibration_cfg.n_heldout} held-out examples ({calibration_cfg.strategy}, seed "
              f"{int(calibration_cfg.seed)})"):
        data = family.data()
        check_source_values(data)
        calibration, validation, heldout = draw_samples(calibration_cfg, data)
        batches = calibration_batches(cfg, manifest, family, calibration.examples)
        save_batches(manifest.path(manifest.calibration_file), batches)
        say_prompt(family.sentence_head, calibration.examples)
        say_truncated(cfg, batches, len(calibration))
        for sample, filename in ((validation, manifest.validation_file), (heldout, manifest.heldout_file)):
            arrays = family.encode(sample.examples)
            if sample.labels is not None:
                arrays["labels"] = family.encode_labels(sample.examples, sample.labels)
            save_npz(manifest.path(filename), arrays)
    manifest.coverage_status = check_coverage(cfg, manifest, family, batches, calibration.sha256())
    manifest.calibration = CalibrationRecord(
        dataset=data.dataset_name, split=calibration_cfg.split, n=len(calibration), n_heldout=len(heldout),
        method=calibration_cfg.method, sha256=calibration.sha256(), heldout_sha256=heldout.sha256(),
        seed=int(calibration_cfg.seed), indices=calibration.indices, heldout_indices=heldout.indices)
    return manifest

"""Verify an ONNX artifact on every CPU profile of its target, each run in its own child process.

Order of work: the fp32 reference natively; the artifact natively (no guard: a measurement), from which
the few samples the emulated profiles run are chosen (the most stressed); the artifact on the reference
CPU (verify.reference_cpu); then every profile (pipeline.verify.planning), each in a child
(pipeline.verify.sandbox running pipeline.verify.child_onnx). Each profile's outputs are judged against
fp32 (every output, pipeline.verify.fidelity) and against the reference CPU's on the same samples
(per-CPU numerics: u8s8 saturation without VNNI). Each profile also names a runtime (`haswell@ort116`;
default: the one the artifact was stamped for): the child runs in that runtime's venv
(pipeline.runtimes.venvs), after the guard has predicted in words whether that runtime loads the
artifact; the real load confirms or refutes the prediction. Token models are also checked for padding
invariance on every profile that runs. The report is pipeline.verify.report.VerifyReport.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calibration import layout
from pipeline.errors import InputError, QuantgateError
from pipeline.guard import StampError, decode_stamp, predict_load, read_onnx_header, read_onnx_versions, read_stamp
from pipeline.isa.targets import CpuProfile, profile, runtime_floor
from pipeline.manifest import MANIFEST_FILE, Manifest, atomic_write_bytes, sha256_file
from pipeline.runtimes import arm, venvs
from pipeline.verify import remote
from pipeline.verify.detection import DetectionSettings
from pipeline.verify.fidelity import (CpuComparison, Limits, choose_samples, choose_sequences, compare_cpus, judge,
                                      keep_decisions_within_noise, output_kind, output_reading, output_scale,
                                      state_drift)
from pipeline.verify.padding import Baselines, error_alone, explain, movement, quantizes_at_run_time, summarize
from pipeline.verify.planning import (child_timeout, host_cpu_features, limits_from, numerics_hint, plan_profiles,
                                      resolve_reference_cpu)
from pipeline.verify.report import (VERIFY_FILE, ArtifactRef, InputsRef, ProfileResult, ReferenceRef, VerifyReport,
                                    counted_why, overall_status)
from pipeline.verify.sandbox import EmulatorMissing, classify, run_under_profile
from pipeline.verify.scratch import scratch_folder

# --- the evidence every profile is judged against ---------------------------------------------------
def percentiles_ms(seconds: list[float]) -> dict:
    p50, p95 = np.percentile(np.asarray(seconds) * 1000.0, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95)}


@dataclass
class Evidence:
    """What every profile's outputs are judged against: the fp32 outputs on the native sample set, and the
    same artifact's outputs on the reference CPU (on the samples that CPU ran)."""

    fp32: dict[str, np.ndarray]
    mask: np.ndarray | None
    labels: np.ndarray | None
    scales: dict[str, float]
    limits: Limits
    model_kind: str
    reference_cpu: str
    reference_cpu_outputs: dict[str, np.ndarray] | None = None
    reference_cpu_ids: list[int] = field(default_factory=list)
    reference_cpu_reason: str = ""
    padding: Baselines | None = None  # fp32's own padded run and the artifact's native one (pipeline.verify.padding)
    batch_axes: dict = field(default_factory=dict)  # {"inputs": ..., "outputs": ...}: pipeline/layout.py
    groups: list = field(default_factory=list)  # parts of outputs judged on their own scales (verify/groups.py)
    detection: DetectionSettings | None = None  # a detector's detections (verify/detection.py)

    def rows(self, ids: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
        labels = self.labels[ids] if self.labels is not None and len(self.labels) > max(ids) else None
        return ({name: array[ids] for name, array in self.fp32.items()},
                self.mask[ids] if self.mask is not None else None, labels)


# --- one verification ------------------------------------------------------------------------------
def child_command(model: Path, inputs: Path, out_dir: Path, samples: int, threads: int = 0,
                  latency_repeats: int = 0, guard: bool = True, python: str | None = None,
                  padding_extra: int = 0, custom_ops: list[str] | tuple[str, ...] = (),
                  batch_axes: dict | None = None) -> list[str]:
    # `python` is a runtime environment's interpreter; it finds `pipeline` in the working folder (the repo).
    command = [python or sys.executable, "-m", "pipeline.verify.child_onnx", "--model", str(model), "--inputs",
               str(inputs), "--out", str(out_dir), "--samples", str(samples)]
    command += ["--threads", str(threads)] * bool(threads) + ["--latency-repeats", str(latency_repeats)] * bool(latency_repeats)
    # A library path as given when relative to an SSH host's folder (REMOTE_CUSTOM_OPS/...), else absolute.
    command += [part for library in custom_ops for part in (
        "--custom-ops", str(library) if str(library).startswith(REMOTE_CUSTOM_OPS + "/") else str(Path(library).resolve()))]
    command += ["--layout", json.dumps(batch_axes, sort_keys=True)] * bool(batch_axes)
    return command + ["--no-guard"] * (not guard) + ["--padding-extra", str(padding_extra)] * bool(padding_extra)


# --- runtimes: which one an artifact is verified in, and whether it will load there ----------------
def default_runtime(cfg, stamp: dict) -> venvs.Runtime:
    """runtime=... when given; else the runtime stamped into the artifact; else this venv."""
    if cfg.runtime is not None:
        return venvs.resolve(cfg.runtime)
    if "runtime" in stamp:
        built_for = json.loads(stamp["runtime"])
        return venvs.Runtime(built_for["name"], tuple(built_for["requirements"]))
    return venvs.Runtime(venvs.PINNED)


def judge_prediction(record: dict, problems: list[str]) -> str | None:
    """Set record['runtime']['confirmed'] by what the real load did; a disagreement in words, or None."""
    if record.get("failure") == "load":
        loaded = False
    elif record["status"] == "pass" or record.get("failure") in ("fidelity", "padding", "cpu_numerics"):
        loaded = True
    else:  # refused by the guard, crashed, timed out: the load was never the question
        record["runtime"]["confirmed"] = None
        return None
    predicted = not problems
    record["runtime"]["confirmed"] = loaded == predicted
    if not loaded and not predicted:
        record["reason"] = f"{'; '.join(problems)} (predicted by the guard; confirmed by the load: {record['reason']})"
    if loaded == predicted:
        return None
    if loaded:
        return (f"the guard predicted onnxruntime would refuse it ({'; '.join(problems)}), but it loaded: "
                f"prediction and reality disagree")
    return f"the guard predicted it loads, but it did not ({record['reason']}): prediction and reality disagree"


# --- padding invariance -----------------------------------------------------------------------------
def padding_plan(artifact: Path, input_names: list[str], cfg) -> dict:
    """Whether the padding check applies, and a failure that needs no run (no mask, or a mask no node reads)."""
    v = cfg.verify
    if not v.padding_check:
        return {"status": "skipped", "reason": "verify.padding_check=false"}
    if "input_ids" not in input_names:
        return {"status": "skipped", "reason": f"no input_ids input (inputs: {', '.join(input_names)}): not a "
                                               f"token-sequence model, padding does not apply"}
    if "attention_mask" not in input_names:
        return {"status": "fail", "reason": "the model takes input_ids but was exported without an attention_mask "
                "input: it cannot tell padding from tokens, so a sequence padded inside a batch gives a different "
                "result than alone; export it with attention_mask"}
    import onnx
    graph = onnx.load(str(artifact), load_external_data=False).graph
    if not any("attention_mask" in node.input for node in graph.node):
        return {"status": "fail", "reason": "attention_mask is a model input that no node reads: the mask is "
                                            "ignored, so padded batches give different results"}
    limits = Limits(v.padding_min_cosine_mean, v.padding_min_cosine_worst, v.padding_min_top1_agreement,
                    v.padding_max_abs_error, pooling=str(v.pooling))
    return {"status": "pending", "extra_tokens": v.padding_extra_tokens, "thresholds": limits.to_json(),
            "dynamic": quantizes_at_run_time(graph),
            "reason": "each held-out sequence alone vs in a batch padded past the longest, on every profile that runs"}


CHILD_RESULTS = ("outputs.npz", "run.json")  # what child_onnx writes into its --out folder
REMOTE_INPUTS, REMOTE_OUT, REMOTE_CUSTOM_OPS = "inputs.npz", "out", "custom_ops"  # in the child's folder on an SSH host


def host_files(artifact: Path, inputs: Path, custom_op_libraries=()) -> dict[str, Path]:
    """What a child on an SSH host reads, by name in its remote folder: the artifact (with any external data
    beside it, under the same relative names), the inputs, and custom-operator libraries under
    REMOTE_CUSTOM_OPS/ (numbered: two libraries may share a file name)."""
    from pipeline.guard.onnx import external_data_locations
    return {artifact.name: artifact, REMOTE_INPUTS: inputs} | {
        location: artifact.parent / location for location in external_data_locations(artifact)} | {
        remote_library_name(i, library): Path(library) for i, library in enumerate(custom_op_libraries)}


def remote_library_name(index: int, library) -> str:
    return f"{REMOTE_CUSTOM_OPS}/{index}-{Path(library).name}"


def read_child_results(out_dir: Path) -> tuple[dict, dict] | None:
    if not (out_dir / "outputs.npz").is_file():
        return None
    with np.load(out_dir / "outputs.npz") as arrays:
        outputs = {name: arrays[name] for name in arrays.files}
    return outputs, json.loads((out_dir / "run.json").read_text())


def graph_io(path: Path) -> tuple[list[str], list[str]]:
    import onnx
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as error:  # protobuf's DecodeError and friends
        raise QuantgateError(f"{path} is not a readable ONNX model: {error}") from None
    initializers = {init.name for init in graph.initializer}
    return [i.name for i in graph.input if i.name not in initializers], [o.name for o in graph.output]


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def preflight(*models: Path) -> None:
    """Refuse, before onnx or onnxruntime opens them, files that are not ONNX, point outside their
    folder for external data, or carry a stamp this quantgate cannot read."""
    from pipeline.guard import check_stamp
    from pipeline.guard.onnx import UnsafeModelError, check_external_data

    import onnx

    for model in models:
        try:
            read_onnx_header(model)
            check_external_data(model)
        except (StampError, UnsafeModelError) as error:
            raise QuantgateError(str(error)) from None
        try:  # what onnxruntime tolerates (an unused initializer declaring terabytes) other tools reject
            onnx.checker.check_model(str(model))
        except onnx.checker.ValidationError as error:
            first = str(error).strip().splitlines()[0]
            raise InputError(f"{model} is not a valid ONNX model (onnx.checker: {first}); fix or re-export it") from None
    stamp = read_stamp(models[0])
    if stamp:
        try:
            check_stamp(stamp, host_features=frozenset(), artifact=models[0].name)  # validates the stamp only
        except StampError as error:
            raise QuantgateError(str(error)) from None


def input_specs(path: Path) -> dict[str, tuple[np.dtype, int | None]]:
    """Each graph input's numpy dtype (float32, int64, bool, ...) and rank (None if unknown)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    specs = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
        specs[value.name] = (np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type)), rank)
    return specs


def load_inputs(inputs: Path, input_names: list[str],
                specs: dict[str, tuple[np.dtype, int | None]] | None = None,
                input_axes: dict | None = None) -> tuple[int, np.ndarray | None, np.ndarray | None, list[str]]:
    """Samples available, labels, attention mask and ignored arrays of the held-out .npz, whose arrays are in the
    model's layout (`input_axes`: each input's batch axis, None for one given once; axis 0 by default); refuses,
    before any profile runs, a file whose arrays do not fit the model's inputs (names, ranks, kinds of numbers,
    values the input's type cannot hold, sample counts) or whose labels are not integer class ids."""
    from calibration.arrays import check_declared_sizes
    from calibration.errors import CalibrationError
    try:
        check_declared_sizes(inputs)
    except CalibrationError as error:
        raise InputError(f"{error} (the verification inputs)") from None
    try:
        with np.load(inputs, allow_pickle=False) as arrays:
            absent = [name for name in input_names if name not in arrays.files]
            if absent:
                raise InputError(f"{inputs} has no array for model input(s) {absent}; it has {arrays.files}")
            loaded = {name: arrays[name] for name in arrays.files}  # an object array raises: no pickles
    except (ValueError, OSError, EOFError) as error:
        reason = "it holds an object array (pickles are not loaded)" if "allow_pickle" in str(error) else str(error)
        raise InputError(f"{inputs} cannot be used as inputs: {reason}; save plain numeric arrays named "
                         f"after the model inputs {input_names}") from None
    axes = {name: layout.axis_of(input_axes, name) for name in input_names}
    counts = {name: (loaded[name].shape[axes[name]] if loaded[name].ndim > axes[name] else None)
              for name in input_names if axes[name] is not None}
    if any(count is None for count in counts.values()) or len(set(counts.values())) != 1 or 0 in counts.values():
        where = {name: axis for name, axis in axes.items() if axis is not None}
        raise InputError(f"{inputs}: every batched model input needs the same number of samples on its batch axis "
                         f"{where} (and at least one); shapes: { {name: list(loaded[name].shape) for name in input_names} }"
                         f"; inputs given once: {[name for name, axis in axes.items() if axis is None] or 'none'}")
    n = next(iter(counts.values()))
    for name, (dtype, rank) in (specs or {}).items():
        array = loaded[name]
        if rank is not None and array.ndim != rank:
            where = "given once" if axes[name] is None else f"samples on axis {axes[name]}"
            raise InputError(f"{inputs}: array {name} has {array.ndim} axes {list(array.shape)}, but the model "
                             f"input {name} has {rank} ({where})")
        if dtype.kind == "f":
            check_float_values(inputs, name, array, dtype)
        elif dtype.kind in "iub" and array.dtype.kind not in "iub":
            raise InputError(f"{inputs}: array {name} holds {array.dtype}, but the model input {name} takes "
                             f"integers (token ids, masks)")
    check_inputs_vary(inputs, {name: layout.batch_first(loaded[name], axes[name]) for name in input_names
                               if axes[name] is not None}, n)  # inputs given once are the same for every sample
    labels = loaded.get("labels")
    if labels is not None:
        check_labels(inputs, labels, n)
    mask = loaded.get("attention_mask") if "attention_mask" in input_names else None
    ignored = [name for name in loaded if name not in input_names and name != "labels"]
    return n, labels, mask, ignored


def graph_layout(reference: Path, cfg) -> dict:
    """Where the examples lie in the model's inputs and outputs, and the state it carries from chunk to chunk ({} when
    batch-first and stateless), from its graph, `model.batch_axes` and `model.state` (pipeline/layout.py)."""
    import onnx

    from pipeline.layout import find_layout
    found = find_layout(onnx.load(str(reference), load_external_data=False), dict(cfg.model.batch_axes),
                        str(reference), dict(cfg.model.state))
    return found.to_json()


def check_inputs_vary(inputs: Path, arrays: dict[str, np.ndarray], n: int) -> None:
    """Inputs that carry no evidence are refused: every value of every input the same (all zeros), or most
    samples copies of others (one sample repeated): int8 would be judged on one point, and pass on it."""
    if not arrays:  # no batched input: nothing varies by sample
        return
    if all(array.size and np.all(array == array.flat[0]) for array in arrays.values()):
        values = ", ".join(f"{name} = {array.flat[0].item()!r}" for name, array in arrays.items())
        raise InputError(f"{inputs}: every value of every input is the same ({values}): such inputs say nothing "
                         f"about the model; give real held-out samples (the build's heldout.npz, or traffic)")
    if n < 2:
        return
    rows = [b"".join(np.ascontiguousarray(arrays[name][i]).tobytes() for name in sorted(arrays)) for i in range(n)]
    distinct = len(set(rows))
    if distinct * 2 < n:
        raise InputError(f"{inputs}: of its {n} samples only {distinct} are distinct (the rest repeat them): "
                         f"fidelity would be judged on {distinct} point(s) counted {n} times; give {n} different "
                         f"held-out samples (or fewer: verify.native_max_samples)")


def check_labels_fit(inputs: Path, labels: np.ndarray | None, fp32: dict[str, np.ndarray], model_kind: str,
                     notes: list[str]) -> None:
    """Labels that no output is judged against are named in the notes (never silently ignored); a classifier's
    labels that its own fp32 reference agrees with no better than always guessing the commonest class do not
    belong to these inputs (shuffled, another order): refused, since accuracy against them proves nothing."""
    if labels is None or model_kind == "multi_label":  # label sets are judged as such (fidelity.py)
        return
    if model_kind != "classifier":
        notes.append(f"labels in {inputs.name} are not judged: accuracy applies to model.kind=classifier (this "
                     f"model is {model_kind}); fidelity to fp32 is what was judged")
        return
    from pipeline.verify.fidelity import classification_figures
    classes, counts = np.unique(labels[labels >= 0], return_counts=True)
    for output in fp32.values():
        if output.ndim < 2 or output.shape[-1] < 2 or output.argmax(-1).shape != labels.shape:
            continue
        figures = classification_figures(output, output, None, labels)
        if "reference_accuracy" not in figures or len(classes) < 2 or counts.sum() < 20:
            return
        majority = counts.max() / counts.sum()
        if figures["reference_accuracy"] <= majority:
            raise InputError(f"{inputs}: the fp32 reference agrees with only {figures['reference_accuracy']:.0%} of "
                             f"its labels, no better than always guessing the commonest class ({majority:.0%}): the "
                             f"labels do not belong to these inputs (shuffled, or in another order); fix them or "
                             f"leave `labels` out")
        return
    notes.append(f"labels in {inputs.name} fit no output (shape {list(labels.shape)}): they were not judged")


def check_float_values(inputs: Path, name: str, array: np.ndarray, dtype: np.dtype) -> None:
    """A float input's array: floating-point, every value finite and within the input's type (1e39 is
    finite in float64 but inf in the model's float32)."""
    if array.dtype.kind != "f":
        raise InputError(f"{inputs}: array {name} holds {array.dtype}, but the model input {name} takes "
                         f"floating-point values")
    limit = float(np.finfo(dtype).max)
    bad = ~(np.abs(array) <= limit)  # NaN compares false too
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"{inputs}: array {name} holds {array[where]} at index {list(where)} (sample {where[0]}); the "
                         f"model input {name} takes finite {dtype} values (+-{limit:.4g}): clean or rescale the inputs")


def check_labels(inputs: Path, labels: np.ndarray, n: int) -> None:
    """Labels: one integer class id per sample (accuracy against names such as "cat" would read 0 and pass)."""
    if labels.dtype.kind not in "iu":
        raise InputError(f"{inputs}: labels holds {labels.dtype} values; labels must be integer class ids (0, 1, ...): "
                         f"map names to ids first, e.g. ids = np.unique(names, return_inverse=True)[1]")
    if labels.ndim == 0 or labels.shape[0] != n:
        raise InputError(f"{inputs}: labels has shape {list(labels.shape)}, but the inputs hold {n} samples; give one "
                         f"label per sample")


def verify_files(artifact, reference, inputs, cfg, out, *, model_kind: str | None = None,
                 output_names: list[str] | None = None, folder: Path | None = None,
                 manifest_sha256: str | None = None, batch_axes: dict | None = None) -> dict:
    """Verify `artifact` against `reference` on held-out `inputs` for cfg.target; write the report to `out`.
    `folder`: the build folder these files are a snapshot of (the report names the files there);
    `manifest_sha256`: its manifest.json's, which binds the report to that build; `batch_axes`: where the
    examples lie in each input and output as the build found it (else found here: pipeline/layout.py)."""
    artifact, reference, inputs, out = Path(artifact), Path(reference), Path(inputs), Path(out)
    for path, what in ((artifact, "artifact"), (reference, "fp32 reference"), (inputs, "inputs .npz")):
        if not path.is_file():
            raise QuantgateError(f"the {what} {path} does not exist")
    for library in cfg.verify.custom_op_libraries:
        if not Path(library).is_file():
            raise QuantgateError(f"verify.custom_op_libraries: {library} does not exist (a shared library with "
                                 f"onnxruntime's RegisterCustomOps entry point)")
    model_kind = model_kind or str(getattr(cfg.model.kind, "value", cfg.model.kind))
    preflight(artifact, reference)
    input_names, artifact_outputs = graph_io(artifact)
    reference_inputs, reference_outputs = graph_io(reference)
    judged = [name for name in (output_names or reference_outputs) if name in artifact_outputs]
    if not judged:
        raise QuantgateError(f"the artifact and the fp32 reference share no output (artifact: {artifact_outputs}, "
                             f"reference: {reference_outputs}): they are not the same model")
    if sorted(reference_inputs) != sorted(input_names):
        raise QuantgateError(f"the artifact takes inputs {input_names} but the fp32 reference takes "
                             f"{reference_inputs}: they are not the same model")
    batch_axes = batch_axes or graph_layout(reference, cfg)
    if batch_axes.get("state"):  # a stateful model: verified streamed, sequences of verify.stream_steps chunks
        batch_axes = {**batch_axes, "steps": int(cfg.verify.stream_steps)}
    n_available, labels, mask, ignored = load_inputs(inputs, input_names, input_specs(artifact),
                                                     batch_axes.get("inputs"))
    if ignored:
        progress(f"verify: {inputs.name}: arrays {ignored} match no model input and are ignored")
    try:
        stamp = read_stamp(artifact)
    except StampError as error:
        raise QuantgateError(str(error)) from None
    target = cfg.target
    # What the guard will act on is the stamp; an unstamped artifact is judged by the target's features.
    required = decode_stamp(stamp, artifact.name)["required_cpu_features"] if stamp else \
        runtime_floor(target.microarchitecture, list(target.extra_features))
    host = host_cpu_features(cfg)
    plans = plan_profiles(cfg, required, bool(stamp), host, default_runtime(cfg, stamp))
    model_versions = read_onnx_versions(artifact)
    padding = padding_plan(artifact, input_names, cfg)
    v = cfg.verify
    native_n, emulated_n = min(n_available, v.native_max_samples), min(n_available, v.emulated_max_samples)
    if "steps" in batch_axes:  # whole sequences only; the emulated profiles run emulated_n of them
        steps = batch_axes["steps"] = max(1, min(batch_axes["steps"], n_available))
        native_n = max(native_n // steps, 1) * steps
        emulated_n = min(emulated_n * steps, native_n)
    limits = limits_from(cfg)
    reference_cpu = resolve_reference_cpu(cfg, host)
    notes = []
    if ignored:
        notes.append(f"arrays {ignored} in {inputs.name} match no model input and were ignored")
    if not stamp:
        notes.append(f"the artifact has no quantgate stamp: the guard cannot refuse it on any CPU; verified for "
                     f"the target named here, {target.name}")
    elif stamp.get("target_isa") != target.name:
        notes.append(f"the artifact was stamped for {stamp.get('target_isa')}, verified here for {target.name}")

    def shown(path: Path) -> str:  # where the user's file is (not the snapshot verified)
        return str((folder / path.name) if folder else path.resolve())

    started = time.monotonic()
    scratch = ExitStack()  # the work folder, marked as this process's (pipeline/verify/scratch.py)
    work = scratch.enter_context(scratch_folder("quantgate-verify-"))
    profiles: dict[str, dict] = {}
    reference_record, evidence, selection, reference_cpu_record = None, None, None, None
    native_seconds = None
    emulated_inputs = inputs
    try:
        if any(plan.not_verified is None for plan in plans):
            progress(f"verify {target.name}: fp32 reference, native, {native_n} samples ...")
            pending = padding if padding["status"] == "pending" else None
            reference_record, ran = run_reference(reference, inputs, work / "reference", native_n, cfg, pending,
                                                  batch_axes)
            native_seconds = reference_record.get("wall_seconds")  # sizes every later child's timeout
            if ran is None:
                notes.append(f"the fp32 reference could not run natively: {reference_record['reason']}")
            else:
                fp32 = {name: ran[name] for name in judged}
                check_labels_fit(inputs, labels[:native_n] if labels is not None else None, fp32, model_kind, notes)
                window = mask[:native_n] if mask is not None else None
                reading = output_reading(fp32, model_kind, window, v)
                evidence = Evidence(fp32, window, labels[:native_n] if labels is not None else None, reading.scales,
                                    limits, model_kind, reference_cpu, batch_axes=batch_axes, groups=reading.groups,
                                    detection=reading.detection)
                if pending:
                    evidence.padding = Baselines(fp32_padding(ran, evidence, pending), padding_arrays(ran, judged)[1],
                                                 dynamic=pending["dynamic"])
                selection, emulated_inputs, reference_cpu_record = prepare_comparison(
                    artifact, inputs, work, native_n, emulated_n, evidence, cfg, notes, pending, native_seconds)

        # Each runtime prepared once per CPU family (a cached venv; on Arm a sysroot + aarch64 wheels,
        # pipeline.runtimes.arm), before any profile runs.
        envs = {}
        for runtime, family in dict.fromkeys((plan.runtime, profile(plan.name).family) for plan in plans
                                             if not plan.not_verified and not profile(plan.name).remote):
            prepare = arm.prepare if family == "aarch64" else venvs.prepare
            try:
                envs[runtime, family] = prepare(runtime, progress=lambda m: progress(f"verify {target.name}: {m}"))
            except QuantgateError as error:
                envs[runtime, family] = error

        def verify_plan(index: int, plan) -> None:
            record = profiles[plan.key]
            cpu = profile(plan.name)
            env = envs.get((plan.runtime, cpu.family)) if not plan.not_verified and not cpu.remote else None
            if isinstance(env, QuantgateError):
                plan.not_verified = f"runtime {plan.runtime.label()} could not be prepared: {env}"
            if plan.not_verified:
                record |= {"status": "not_verified", "reason": plan.not_verified, "requirement_met": False}
                progress(f"verify {target.name}: [{index}/{len(plans)}] {plan.key}: not verified ({plan.not_verified})")
                return
            ids = list(selection["emulated"]) if cpu.emulated and selection else list(range(native_n))
            if cpu.remote:  # the host's own interpreter: its versions were read there, nothing is predicted
                problems, record["host"] = [], plan.host
                record["runtime"] = {"name": f"{cpu.host}:{cpu.python}", "versions": plan.host["versions"]} | (
                    {"prepared_on_host": cpu.runtime} if cpu.runtime else {})
                if "mismatch" in plan.host:
                    notes.append(f"{plan.key}: {plan.host['mismatch']}")
                where, versions = f"ssh {cpu.host}, {cpu.python}", plan.host["versions"]
            else:  # the guard's prediction, in words, before anything runs; the child's real load proves it
                problems = predict_load(model_versions, env.limits)
                record["runtime"] = env.record() | {"prediction": {"loads": not problems, "problems": problems}}
                where, versions = "qemu -cpu " + cpu.qemu_cpu if cpu.emulated else "native", env.limits["versions"]
            progress(f"verify {target.name}: [{index}/{len(plans)}] {plan.key} ({where}, onnxruntime "
                     f"{versions['onnxruntime']}, {len(ids)} samples) ..."
                     + "".join(f"\n    guard predicts: {problem}" for problem in problems))
            record |= verify_on_profile(cpu, artifact, emulated_inputs if cpu.emulated else inputs, work / plan.key,
                                        ids, cfg, evidence, host, env.python if env else None,
                                        padding if padding["status"] == "pending" else None,
                                        emulator_args=getattr(env, "emulator_args", ()), native_seconds=native_seconds)
            disagreement = judge_prediction(record, problems) if not cpu.remote else None
            if disagreement:
                record["runtime"]["disagreement"] = disagreement
                notes.append(f"{plan.key}: {disagreement}")
            record["requirement_met"] = record["status"] == plan.expected
            if plan.required and plan.expected == "refused_by_guard" and record["status"] in ("pass", "fail"):
                record["reason"] = (f"ran on {plan.name} although it lacks features the artifact needs: the guard "
                                    f"should have refused it ({record['reason']})")
            progress(f"verify {target.name}:     {plan.key}: {record['status']} in {record['wall_seconds']:.1f} s"
                     + ("" if record["requirement_met"] else f" (expected {plan.expected}: {record['reason'][:300]})"))

        # Reports list profiles in plan order; lab hosts (their own CPUs) run in parallel, at most
        # verify.max_parallel_hosts at a time, while the local profiles (this CPU) run one after another.
        for plan in plans:
            profiles[plan.key] = {"expected": plan.expected, "required": plan.required, "why": plan.why,
                                  "cpu": plan.name, "counted": plan.required,
                                  "counted_why": counted_why(plan.required, plan.why)}
        numbered = list(enumerate(plans, 1))
        remote = {i for i, plan in numbered if profile(plan.name).remote and not plan.not_verified}
        with ThreadPoolExecutor(max_workers=max(1, min(len(remote), cfg.verify.max_parallel_hosts))) as hosts:
            running = [hosts.submit(verify_plan, i, plan) for i, plan in numbered if i in remote]
            for i, plan in numbered:
                if i not in remote:
                    verify_plan(i, plan)
            for future in running:
                future.result()
    finally:
        scratch.close()

    # The host's own run: `native`, or `native@<runtime>` when the build named a runtime.
    native_names = sorted((name for name in profiles if name.split("@")[0] == "native"), key=lambda n: n != "native")
    native_latency = profiles[native_names[0]].get("latency") if native_names else None
    if native_latency and reference_record and "latency" in reference_record:
        native_latency["fp32"] = reference_record["latency"]
    padding = summarize(padding, profiles, evidence.padding if evidence else None)
    # the fp32 reference did not run: a failure, unless it could not be run at all here (a wedged runtime)
    reference_lost = reference_record is not None and evidence is None
    reference_wedged = reference_lost and reference_record["status"] == "not_verified"
    status = overall_status(profiles, failed_elsewhere=(reference_lost and not reference_wedged)
                            or padding["status"] == "fail", unverified_elsewhere=reference_wedged)
    report = VerifyReport(
        status=status, target=target.name, required_cpu_features=required, model_kind=model_kind, output_names=judged,
        artifact=ArtifactRef(shown(artifact), sha256_file(artifact), "onnx", bool(stamp), stamp.get("target_isa")),
        reference=ReferenceRef(shown(reference), sha256_file(reference), reference_record),
        inputs=InputsRef(shown(inputs), sha256_file(inputs), n_available), manifest_sha256=manifest_sha256,
        reference_cpu=reference_cpu_record, sample_selection=selection,
        host={"cpu_features": sorted(host), "assumed": v.assume_host_features is not None},
        settings={"timeout_seconds": v.timeout_seconds, "memory_limit_mb": v.memory_limit_mb,
                  "emulated_max_samples": v.emulated_max_samples, "native_max_samples": v.native_max_samples,
                  "latency_repeats": v.latency_repeats, "reference_cpu": str(v.reference_cpu),
                  "max_cpu_excess_error": v.max_cpu_excess_error, "max_cpu_error_ratio": v.max_cpu_error_ratio}
        | ({"stream_steps": batch_axes["steps"], "state": batch_axes["state"], "max_state_drift": v.max_state_drift}
           if "steps" in batch_axes else {}),
        profiles={name: ProfileResult(**record) for name, record in profiles.items()}, padding=padding,
        latency=native_latency, notes=notes, wall_seconds=round(time.monotonic() - started, 3))
    report.save(out)
    payload = report.to_json()
    print(format_table(payload))
    if folder is None:  # a build folder's report is written by verify_folder, once it is safe to
        print(f"wrote {out}")
    return payload


def run_child(command: list[str], cpu: CpuProfile, out_dir: Path, cfg, emulator_args: list[str] | tuple[str, ...] = (),
              uploads: dict[str, Path] | None = None, native_seconds: float | None = None
              ) -> tuple[dict, tuple[dict, dict] | None]:
    """One child on one CPU: the record of what happened, and its outputs (in `out_dir`) when it ran. On an
    SSH host, `uploads` (name in the remote folder -> local file) are copied there first. `native_seconds`: the
    first native run's wall time, which sizes the child's timeout (None: this is that run)."""
    v = cfg.verify
    timeout = child_timeout(v, cpu, native_seconds)
    if cpu.remote:
        results = [f"{REMOTE_OUT}/{name}" for name in CHILD_RESULTS]
        run = remote.run_child(cpu, command, uploads or {}, out_dir, results, timeout, v.memory_limit_mb)
    else:
        run = run_under_profile(command, cpu, timeout, v.memory_limit_mb, emulator_args)
    outcome = classify(run)
    record = {"status": outcome.status, "failure": outcome.failure, "reason": outcome.reason,
              "exit_code": run.returncode, "signal": run.signal_name, "wall_seconds": round(run.wall_seconds, 3),
              "command": run.reproduce(), "stderr_tail": run.stderr_tail}
    results = read_child_results(out_dir) if outcome.status == "pass" else None
    if outcome.status == "pass" and results is None:
        record |= {"status": "fail", "failure": "error", "reason": "the child exited 0 but wrote no outputs"}
    return record, results


def run_reference(reference: Path, inputs: Path, out_dir: Path, samples: int, cfg,
                  padding: dict | None = None, batch_axes: dict | None = None) -> tuple[dict, dict | None]:
    """The fp32 reference, natively and in a child too (a broken reference must not take the parent down); given
    `padding` (a pending padding plan), also its own padded run, which tells whether the model applies its mask."""
    command = child_command(reference, inputs, out_dir, samples, latency_repeats=cfg.verify.latency_repeats, guard=False,
                            custom_ops=cfg.verify.custom_op_libraries,
                            padding_extra=padding["extra_tokens"] if padding else 0, batch_axes=batch_axes)
    record, results = run_child(command, profile("native"), out_dir, cfg)
    if results is None and padding:  # the padded batch itself failed: the reference alone (the profiles say why)
        return run_reference(reference, inputs, out_dir, samples, cfg, batch_axes=batch_axes)
    if results is None:
        record["status"] = "crashed" if record["status"] == "pass" else record["status"]
        return record, None
    outputs, info = results
    record |= {"versions": info["versions"], "samples": info["samples"]}
    if info["latency_seconds"]:
        record["latency"] = percentiles_ms(info["latency_seconds"])
    return record, outputs


def prepare_comparison(artifact: Path, inputs: Path, work: Path, native_n: int, emulated_n: int,
                       evidence: Evidence, cfg, notes: list[str], padding: dict | None = None,
                       native_seconds: float | None = None) -> tuple[dict, Path, dict]:
    """Run the artifact natively (no guard: a measurement, not a deployment), choose from that run the samples
    the emulated profiles get, and run the artifact on the reference CPU. Returns the sample selection, the
    .npz of the chosen samples, and the reference CPU's record; fills evidence.reference_cpu_* (and, given a
    pending `padding` plan, evidence.padding.native: whether the int8 graph keeps its outputs padded natively)."""
    native_dir = work / "native-measurement"
    for extra in dict.fromkeys([padding["extra_tokens"] if padding else 0, 0]):  # without padding if that failed
        record, results = run_child(child_command(artifact, inputs, native_dir, native_n, guard=False,
                                                  custom_ops=cfg.verify.custom_op_libraries, padding_extra=extra,
                                                  batch_axes=evidence.batch_axes),
                                    profile("native"), native_dir, cfg, native_seconds=native_seconds)
        if results is not None:
            break
    native = results[0] if results else None
    if native is not None and not all(name in native for name in evidence.fp32):
        native = None
    if native is not None and padding and evidence.padding is not None:
        evidence.padding.native = native_padding(native, evidence, padding)
    steps = evidence.batch_axes.get("steps")
    if native is not None and steps:
        chosen, why = choose_sequences(native, evidence.fp32, evidence.scales, steps, emulated_n // steps)
    elif native is not None:
        chosen, why = choose_samples(native, evidence.fp32, evidence.mask, evidence.scales, emulated_n)
    else:
        chosen, why = list(range(emulated_n)), f"the first {emulated_n}: the native run failed ({record['reason']})"
    input_axes = evidence.batch_axes.get("inputs") or {}
    with np.load(inputs, allow_pickle=False) as arrays:
        subset = {name: arrays[name] for name in arrays.files}
    # Every batched array (inputs on their batch axis, labels on axis 0) down to the chosen samples.
    axes = {name: layout.axis_of(input_axes, name) for name in subset}
    axes = {name: axis if axis is not None and subset[name].ndim > axis and subset[name].shape[axis] >= native_n
            else None for name, axis in axes.items()}
    subset = layout.take(subset, chosen, axes)
    emulated_inputs = work / "emulated_inputs.npz"
    np.savez(emulated_inputs, **subset)
    selection = {"native": list(range(native_n)), "emulated": chosen, "why": why}

    cpu = profile(evidence.reference_cpu)
    if not cpu.emulated:
        outputs, ids = native, list(range(native_n))
    else:
        ref_dir = work / "reference-cpu"
        progress(f"verify {cfg.target.name}: reference CPU {cpu.name} (qemu -cpu {cpu.qemu_cpu}), {len(chosen)} "
                 f"samples: the run every profile is compared with ...")
        try:
            record, results = run_child(child_command(artifact, emulated_inputs, ref_dir, 0, threads=1, guard=False,
                                                          custom_ops=cfg.verify.custom_op_libraries,
                                                          batch_axes=evidence.batch_axes),
                                        cpu, ref_dir, cfg, native_seconds=native_seconds)
        except EmulatorMissing as missing:
            record, results = {"status": "not_verified", "reason": str(missing)}, None
        outputs, ids = (results[0] if results else None), chosen
    if outputs is not None and not all(name in outputs for name in evidence.fp32):
        outputs = None
    evidence.reference_cpu_outputs, evidence.reference_cpu_ids = outputs, ids
    if outputs is None:
        evidence.reference_cpu_reason = f"the artifact did not run on the reference CPU {cpu.name}: {record['reason']}"
        notes.append(f"per-CPU numerics not measured: {evidence.reference_cpu_reason}")
    if outputs is not None:
        record.pop("stderr_tail", None)
    return selection, emulated_inputs, {"cpu": cpu.name, "samples": len(ids), "sample_ids": ids,
                                        "configured": str(cfg.verify.reference_cpu), **record}


def verify_on_profile(cpu, artifact, inputs, out_dir, ids: list[int], cfg, evidence: Evidence | None,
                      host: frozenset[str], python: str | None = None, padding: dict | None = None,
                      emulator_args: list[str] | tuple[str, ...] = (), native_seconds: float | None = None) -> dict:
    """Run the artifact on one profile (in the runtime whose interpreter is `python`) in a child; the
    record of what happened and, if it ran, how well: against fp32, against the reference CPU, and (given
    `padding`) whether padding changes it."""
    v = cfg.verify
    threads = 1 if cpu.emulated else 0  # onnxruntime's spinning pool crawls under QEMU
    uploads, child_out, custom_ops = None, out_dir, list(v.custom_op_libraries)
    if cpu.remote:  # the child runs in a folder on the host: the files it reads are copied there
        uploads = host_files(artifact, inputs, custom_ops)
        artifact, inputs, child_out = Path(artifact.name), Path(REMOTE_INPUTS), Path(REMOTE_OUT)
        custom_ops = [remote_library_name(i, library) for i, library in enumerate(custom_ops)]
    command = child_command(artifact, inputs, child_out, 0 if cpu.emulated else len(ids), threads,
                            0 if cpu.emulated else v.latency_repeats, python=python,
                            padding_extra=padding["extra_tokens"] if padding else 0, custom_ops=custom_ops,
                            batch_axes=evidence.batch_axes if evidence else None)
    try:
        record, results = run_child(command, cpu, out_dir, cfg, emulator_args, uploads, native_seconds)
    except (EmulatorMissing, remote.HostUnavailable) as missing:
        return {"status": "not_verified", "reason": str(missing), "wall_seconds": 0.0}
    record |= {"emulated": cpu.emulated, "qemu_cpu": cpu.qemu_cpu, "threads": threads}
    if results is None:
        return record
    outputs, info = results
    record |= {"versions": info["versions"], "samples": info["samples"], "sample_ids": ids, "guard": info["guard"],
               "cpu_features_seen": info["cpu_features"]}
    if info["latency_seconds"]:
        record["latency"] = {"batch": 1, "repeats": len(info["latency_seconds"]),
                             "int8": percentiles_ms(info["latency_seconds"])}
    if evidence is None:
        return record | {"status": "not_verified", "reason": "ran, but the fp32 reference did not: nothing to compare"}
    subset = len(ids) < len(next(iter(evidence.fp32.values())))  # the samples chosen for emulation
    limits = evidence.limits.per_sample_only() if subset else evidence.limits
    record["thresholds"] = limits.to_json() | {"max_cpu_excess_error": v.max_cpu_excess_error,
                                               "max_cpu_error_ratio": v.max_cpu_error_ratio}
    if subset:
        record["thresholds"]["note"] = ("the hardest samples, chosen on purpose: per-sample bounds only (means and "
                                        "agreement rates are judged on the native run of every sample)")
    fp32, mask, labels = evidence.rows(ids)
    judgement = judge(outputs, fp32, model_kind=evidence.model_kind, mask=mask, labels=labels, limits=limits,
                      scales=evidence.scales, groups=evidence.groups, detection=evidence.detection)
    record |= {"fidelity": judgement.summary, "fidelity_by_output": judgement.by_output}
    problems = list(judgement.problems)
    if evidence.batch_axes.get("state"):  # run streamed: how far the carried state drifts over the sequence
        record["state_drift"], drifted = state_drift(outputs, fp32, evidence.batch_axes["state"],
                                                     evidence.batch_axes["steps"], v.max_state_drift)
        problems += drifted
        if record["state_drift"]:  # the worst step of the worst state, beside the other figures and their bounds
            record["fidelity"]["state_drift"] = max(figures["worst"] for figures in record["state_drift"].values())
            record["thresholds"]["max_state_drift"] = v.max_state_drift
    failure = "fidelity" if problems else None
    comparison = compare_with_reference_cpu(cpu, outputs, ids, evidence, host, v)
    record["cpu_comparison"] = comparison.to_json()
    if comparison.status == "fail":
        problems.append(comparison.reason)
        failure = failure or "cpu_numerics"
    if problems:
        record |= {"status": "fail", "failure": failure, "reason": "out of bounds: " + "; ".join(problems)}
    else:
        record["reason"] = "ran; outputs within bounds of the fp32 reference" + (
            f" and of {evidence.reference_cpu}'s" if comparison.status == "pass" else "")
    if padding:
        hint = numerics_hint(cpu.name, host) if cpu.family == "x86_64" and not cpu.remote else ""
        record["padding"] = judge_padding(outputs, evidence, padding, judgement.by_output,
                                          hint if "saturation" in hint else "", ids)
        words = record["padding"].get("reason")
        if record["padding"]["status"] == "fail":
            record |= {"status": "fail", "failure": record.get("failure") or "padding",
                       "reason": words if not problems else f"{record['reason']}; {words}"}
        elif words:  # it moved, within int8's own error: the cause, in words
            record["reason"] += f"; padding: {words}"
    return record


def compare_with_reference_cpu(cpu, outputs: dict, ids: list[int], evidence: Evidence, host: frozenset[str],
                               v) -> CpuComparison:
    if evidence.reference_cpu_outputs is None:
        return CpuComparison("not_measured", evidence.reference_cpu_reason, evidence.reference_cpu)
    shared = [i for i in ids if i in evidence.reference_cpu_ids]
    if not shared:
        return CpuComparison("not_measured", "no sample ran on both this profile and the reference CPU",
                             evidence.reference_cpu)
    here = [ids.index(i) for i in shared]
    there = [evidence.reference_cpu_ids.index(i) for i in shared]
    fp32, mask, _ = evidence.rows(shared)
    return compare_cpus(cpu.name, {k: v[here] for k, v in outputs.items() if k in fp32},
                        {k: v[there] for k, v in evidence.reference_cpu_outputs.items() if k in fp32}, fp32,
                        reference_cpu=evidence.reference_cpu, mask=mask, sample_ids=shared, scales=evidence.scales,
                        max_excess_error=v.max_cpu_excess_error, max_error_ratio=v.max_cpu_error_ratio,
                        hint=numerics_hint(cpu.name, host), groups=evidence.groups)


def padding_arrays(outputs: dict, names) -> tuple[np.ndarray | None, dict, dict]:
    """The child's padding runs (child_onnx.padding_runs): the mask, each output alone and padded in a batch."""
    alone = {name: outputs[f"padding_alone.{name}"] for name in names if f"padding_alone.{name}" in outputs}
    return outputs.get("padding_mask"), alone, {name: outputs[f"padding_batched.{name}"] for name in alone}


def judge_padding(outputs: dict, evidence: Evidence, padding: dict, fidelity: dict[str, dict], hint: str = "",
                  ids: list[int] | None = None) -> dict:
    """Each sequence alone vs inside a padded batch, over the positions that are tokens. A sample whose padded output
    lies within the artifact's own error to fp32 on this profile (`fidelity`'s max_abs_error per output) keeps its
    decisions (classes, labels): a move that small only flips a decision int8 decides either way, while an ignored
    mask moves outputs further and flips clear decisions too. Outputs that moved are explained by
    pipeline.verify.padding (fp32's own padded run, the native one, this profile's int8 error; `hint`: this CPU's
    numerics in words; `ids`: the held-out samples this run holds)."""
    limits = Limits(**padding["thresholds"])
    mask, alone, batched = padding_arrays(outputs, evidence.fp32)
    judged, within_noise = {}, 0
    for name, array in alone.items():
        kind = output_kind(array, evidence.model_kind, mask)
        judged[name], kept = keep_decisions_within_noise(kind, batched[name], array, mask,
                                                         fidelity.get(name, {}).get("max_abs_error", 0.0))
        within_noise += kept
    scales = {name: output_scale(array, mask) for name, array in alone.items()}
    measured = judge(batched, alone, model_kind=evidence.model_kind, mask=mask, labels=None, limits=limits,
                     scales=scales)  # the figures as padding left them
    judgement = judge(judged, alone, model_kind=evidence.model_kind, mask=mask, labels=None, limits=limits,
                      scales=scales) if within_noise else measured
    result = {"status": "fail" if judgement.problems else "pass", "figures": measured.summary,
              "figures_by_output": measured.by_output, "samples": len(next(iter(alone.values()))) if alone else 0,
              "decisions_kept_within_int8_noise": within_noise}
    if judgement.problems:
        baselines = evidence.padding or Baselines()
        errors = error_alone(alone, baselines.fp32_alone, ids,
                             {name: fidelity.get(name, {}).get("max_abs_error", 0.0) for name in alone})
        moved = movement(measured.by_output, errors)
        result |= moved.to_json() | explain("; ".join(judgement.problems), moved, baselines, padding["extra_tokens"], hint)
    return result


def fp32_padding(outputs: dict, evidence: Evidence, padding: dict) -> dict | None:
    """The fp32 reference's own padding run, judged like a profile's (no int8 noise): does the model apply its mask?"""
    mask, alone, batched = padding_arrays(outputs, evidence.fp32)
    if len(alone) != len(evidence.fp32):
        return None
    judgement = judge(batched, alone, model_kind=evidence.model_kind, mask=mask, labels=None,
                      limits=Limits(**padding["thresholds"]),
                      scales={name: output_scale(array, mask) for name, array in alone.items()})
    return {"status": "fail" if judgement.problems else "pass", "figures": judgement.summary,
            "reason": "; ".join(judgement.problems) or "fp32 keeps its outputs padded"}


def native_padding(outputs: dict, evidence: Evidence, padding: dict) -> dict | None:
    """The artifact's native measurement run, alone vs padded: `kept` when it moved at most within its own int8 error."""
    if not all(f"padding_alone.{name}" in outputs for name in evidence.fp32):
        return None
    fidelity = judge({name: outputs[name] for name in evidence.fp32}, evidence.fp32, model_kind=evidence.model_kind,
                     mask=evidence.mask, labels=None, limits=evidence.limits, scales=evidence.scales).by_output
    result = judge_padding(outputs, evidence, padding, fidelity, ids=list(range(len(next(iter(evidence.fp32.values()))))))
    return {"status": "kept" if result["status"] == "pass" else "moved"} | {
        key: result[key] for key in ("figures", "max_movement", "int8_noise_bound", "cause", "reason") if key in result}


def format_table(report: dict) -> str:
    rows = [("profile", "expected", "status", "ok", "n", "time", "detail")]
    for name, p in report["profiles"].items():
        figures = p.get("fidelity") or {}
        detail = ", ".join(f"{key} {figures[key]:.4g}" for key in (
            "cosine_mean", "cosine_worst", "top1_agreement", "label_set_agreement", "decision_agreement",
            "score_correlation", "accuracy", "macro_f1", "detection_recall", "detection_precision",
            "near_empty_error_worst", "max_scaled_error", "state_drift") if key in figures)
        comparison = p.get("cpu_comparison") or {}
        if comparison.get("divergence") is not None:
            detail += f", vs {comparison['reference_cpu']} {comparison['divergence']:.3g}x scale"
        if p["status"] != "pass" or not detail:
            detail = p["reason"]
        if "this CPU lacks:" in detail:  # the guard's message: the missing features are the news
            detail = "guard: lacks " + detail.split("this CPU lacks:")[1].split(".")[0].strip()
        if "fp32" in (p.get("latency") or {}):
            detail += f"; batch-1 p50 int8 {p['latency']['int8']['p50_ms']:.3g} ms, fp32 {p['latency']['fp32']['p50_ms']:.3g} ms"
        ok = "yes" if p["requirement_met"] else ("no" if p["required"] else "info")
        rows.append((name, p["expected"], p["status"], ok, str(p.get("samples") or "-"),
                     f"{p.get('wall_seconds', 0):.1f}s", detail[:160]))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = [f"verify {report['target']}: {report['status'].upper()}  {report['artifact']['path']}"]
    lines += ["  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[6] for row in rows]
    padding = report.get("padding") or {}
    if padding:
        lines.append(f"  padding invariance: {padding['status']}: {padding['reason']}")
    selection = report.get("sample_selection") or {}
    if selection:
        lines.append(f"  emulated samples {selection['emulated']}: {selection['why']}")
    return "\n".join(lines + [f"  note: {note}" for note in report["notes"]])


# --- a build folder --------------------------------------------------------------------------------
def verify_snapshot(cfg, manifest: Manifest, out: Path | None = None, shown_folder: Path | None = None) -> dict:
    """Verify a build folder's ONNX artifact on a snapshot of its files: a rebuild that replaces the folder
    meanwhile can neither mix old and new files into one verification nor receive a verify.json made for
    other bytes."""
    from pipeline.guard.onnx import external_data_locations
    manifest_file = manifest.folder / MANIFEST_FILE
    manifest_sha256 = sha256_file(manifest_file)
    recorded = {record.path: record.sha256 for record in manifest.files}
    names = [manifest.model_file, manifest.reference_file, manifest.heldout_file]
    for model in names[:2]:
        names += [str(Path(model).parent / location) for location in external_data_locations(manifest.path(model))]
    with scratch_folder("quantgate-snapshot-") as snapshot:
        for name in dict.fromkeys(names):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(manifest.path(name), snapshot / name)
            except FileNotFoundError:
                raise QuantgateError(f"{manifest.folder}: {name} vanished while being read: another build is replacing "
                                     f"this folder; verify again once it has finished") from None
            if name in recorded and sha256_file(snapshot / name) != recorded[name]:
                raise QuantgateError(f"{manifest.folder}: {name} changed while being read (another build is replacing "
                                     f"this folder); verify again once it has finished")
        report_path = out or manifest.path(VERIFY_FILE)
        staged = snapshot / VERIFY_FILE
        report = verify_files(snapshot / manifest.model_file, snapshot / manifest.reference_file,
                              snapshot / manifest.heldout_file, cfg, staged, model_kind=manifest.model_kind,
                              output_names=manifest.output_names or None, folder=shown_folder or manifest.folder,
                              manifest_sha256=manifest_sha256, batch_axes=manifest.batch_axes or None)
        if not manifest_file.is_file() or sha256_file(manifest_file) != manifest_sha256:
            raise QuantgateError(f"{manifest.folder} was replaced by another build while it was being verified; its "
                                 f"verify.json was not written (it would judge other bytes): verify again")
        atomic_write_bytes(report_path, staged.read_bytes())
    print(f"wrote {(shown_folder / report_path.name) if shown_folder and out is None else report_path}")
    return report

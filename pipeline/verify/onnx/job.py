"""Planning one ONNX verification: the facts read and checked before anything runs (the files, the graph's
inputs and outputs and layout, the stamp, the profiles to run and the runtime of each, the sample counts, the
padding check, the notes so far), as one `Job`."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import QuantgateError
from pipeline.guard import StampError, decode_stamp, read_onnx_versions, read_stamp
from pipeline.isa.targets import runtime_floor
from pipeline.runtimes import venvs
from pipeline.verify.fidelity import Limits
from pipeline.verify.onnx.inputs import graph_io, graph_layout, input_specs, load_inputs, preflight
from pipeline.verify.onnx.padding_runs import padding_plan
from pipeline.verify.onnx.running import progress
from pipeline.verify.planning import Plan, host_cpu_features, limits_from, plan_profiles, resolve_reference_cpu


@dataclass
class Job:
    """One verification, planned: what runs, on what, against which bounds."""

    artifact: Path
    reference: Path
    inputs: Path
    cfg: object
    model_kind: str
    input_names: list[str]
    judged: list[str]  # the outputs judged: the reference's (or the build's) that the artifact has too
    batch_axes: dict
    n_available: int
    labels: np.ndarray | None
    mask: np.ndarray | None
    stamp: dict
    required: list[str]  # the CPU features the guard will act on
    host: frozenset[str]
    plans: list[Plan]
    model_versions: dict
    padding: dict  # padding_plan's
    native_n: int
    emulated_n: int
    limits: Limits
    reference_cpu: str
    notes: list[str]
    folder: Path | None = None  # the build folder the files are a snapshot of
    manifest_sha256: str | None = None

    @property
    def pending_padding(self) -> dict | None:
        return self.padding if self.padding["status"] == "pending" else None

    def shown(self, path: Path) -> str:
        """Where the user's file is (not the snapshot verified)."""
        return str((self.folder / path.name) if self.folder else path.resolve())


def default_runtime(cfg, stamp: dict) -> venvs.Runtime:
    """runtime=... when given; else the runtime stamped into the artifact; else this venv."""
    if cfg.runtime is not None:
        return venvs.resolve(cfg.runtime)
    if "runtime" in stamp:
        built_for = json.loads(stamp["runtime"])
        return venvs.Runtime(built_for["name"], tuple(built_for["requirements"]))
    return venvs.Runtime(venvs.PINNED)


def check_files_exist(artifact: Path, reference: Path, inputs: Path, cfg) -> None:
    for path, what in ((artifact, "artifact"), (reference, "fp32 reference"), (inputs, "inputs .npz")):
        if not path.is_file():
            raise QuantgateError(f"the {what} {path} does not exist")
    for library in cfg.verify.custom_op_libraries:
        if not Path(library).is_file():
            raise QuantgateError(f"verify.custom_op_libraries: {library} does not exist (a shared library with "
                                 f"onnxruntime's RegisterCustomOps entry point)")


def same_model(artifact: Path, reference: Path, output_names: list[str] | None) -> tuple[list[str], list[str]]:
    """The artifact's inputs and the outputs judged; refuses two files that are not the same model."""
    input_names, artifact_outputs = graph_io(artifact)
    reference_inputs, reference_outputs = graph_io(reference)
    judged = [name for name in (output_names or reference_outputs) if name in artifact_outputs]
    if not judged:
        raise QuantgateError(f"the artifact and the fp32 reference share no output (artifact: {artifact_outputs}, "
                             f"reference: {reference_outputs}): they are not the same model")
    if sorted(reference_inputs) != sorted(input_names):
        raise QuantgateError(f"the artifact takes inputs {input_names} but the fp32 reference takes "
                             f"{reference_inputs}: they are not the same model")
    return input_names, judged


def sample_counts(v, n_available: int, batch_axes: dict) -> tuple[int, int]:
    """Samples the native runs and the emulated ones get; a streamed model's in whole sequences (sets its steps)."""
    native_n, emulated_n = min(n_available, v.native_max_samples), min(n_available, v.emulated_max_samples)
    if "steps" in batch_axes:  # whole sequences only; the emulated profiles run emulated_n of them
        steps = batch_axes["steps"] = max(1, min(batch_axes["steps"], n_available))
        native_n = max(native_n // steps, 1) * steps
        emulated_n = min(emulated_n * steps, native_n)
    return native_n, emulated_n


def first_notes(inputs: Path, ignored: list[str], stamp: dict, target) -> list[str]:
    notes = []
    if ignored:
        notes.append(f"arrays {ignored} in {inputs.name} match no model input and were ignored")
    if not stamp:
        notes.append(f"the artifact has no quantgate stamp: the guard cannot refuse it on any CPU; verified for "
                     f"the target named here, {target.name}")
    elif stamp.get("target_isa") != target.name:
        notes.append(f"the artifact was stamped for {stamp.get('target_isa')}, verified here for {target.name}")
    return notes


def plan_job(artifact: Path, reference: Path, inputs: Path, cfg, model_kind: str | None = None,
             output_names: list[str] | None = None, folder: Path | None = None, manifest_sha256: str | None = None,
             batch_axes: dict | None = None) -> Job:
    """Read and check everything a verification needs before it runs anything (see verify_files)."""
    check_files_exist(artifact, reference, inputs, cfg)
    model_kind = model_kind or str(getattr(cfg.model.kind, "value", cfg.model.kind))
    preflight(artifact, reference)
    input_names, judged = same_model(artifact, reference, output_names)
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
    native_n, emulated_n = sample_counts(cfg.verify, n_available, batch_axes)
    return Job(artifact, reference, inputs, cfg, model_kind, input_names, judged, batch_axes, n_available, labels, mask,
               stamp, required, host, plans, model_versions, padding, native_n, emulated_n, limits_from(cfg),
               resolve_reference_cpu(cfg, host), first_notes(inputs, ignored, stamp, target), folder, manifest_sha256)

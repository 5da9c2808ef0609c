"""The runs before the profiles: the fp32 reference natively, the artifact natively (a measurement, no guard), from
which the samples the emulated profiles run are chosen (the most stressed), and the artifact on the reference CPU
(verify.reference_cpu): together the `Evidence` every profile is judged against."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from calibration import layout
from pipeline.isa.targets import profile
from pipeline.verify.cpu_kinds import kind_of
from pipeline.verify.fidelity import choose_samples, choose_sequences, output_reading
from pipeline.verify.onnx.evidence import Evidence, Measured
from pipeline.verify.onnx.inputs import check_labels_fit
from pipeline.verify.onnx.job import Job
from pipeline.verify.onnx.padding_runs import fp32_padding, native_padding, padding_arrays
from pipeline.verify.onnx.running import child_command, progress, run_child, run_reference
from pipeline.verify.padding import Baselines
from pipeline.verify.sandbox import EmulatorMissing


def measure(job: Job, work: Path) -> Measured:
    """Run the fp32 reference and, when it ran, measure the artifact natively and on the reference CPU; nothing
    runs when no profile will (every plan not verified)."""
    measured = Measured(emulated_inputs=job.inputs)
    if all(plan.not_verified is not None for plan in job.plans):
        return measured
    cfg, v, native_n = job.cfg, job.cfg.verify, job.native_n
    progress(f"verify {cfg.target.name}: fp32 reference, native, {native_n} samples ...")
    pending = job.pending_padding
    measured.reference_record, ran = run_reference(job.reference, job.inputs, work / "reference", native_n, cfg,
                                                   pending, job.batch_axes)
    measured.native_seconds = measured.reference_record.get("wall_seconds")  # sizes every later child's timeout
    if ran is None:
        job.notes.append(f"the fp32 reference could not run natively: {measured.reference_record['reason']}")
        return measured
    labels = job.labels[:native_n] if job.labels is not None else None
    fp32 = {name: ran[name] for name in job.judged}
    check_labels_fit(job.inputs, labels, fp32, job.model_kind, job.notes)
    window = job.mask[:native_n] if job.mask is not None else None
    reading = output_reading(fp32, job.model_kind, window, v)
    evidence = Evidence(fp32, window, labels, reading.scales, job.limits, job.model_kind, job.reference_cpu,
                        batch_axes=job.batch_axes, groups=reading.groups, detection=reading.detection)
    if pending:
        evidence.padding = Baselines(fp32_padding(ran, evidence, pending), padding_arrays(ran, job.judged)[1],
                                     dynamic=pending["dynamic"])
    measured.evidence = evidence
    measured.selection, measured.emulated_inputs, measured.reference_cpu_record = prepare_comparison(
        job.artifact, job.inputs, work, native_n, job.emulated_n, evidence, cfg, job.notes, pending,
        measured.native_seconds)
    return measured


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
    kind = kind_of(cpu)
    if not kind.emulated(cpu):
        outputs, ids = native, list(range(native_n))
    else:
        ref_dir = work / "reference-cpu"
        progress(f"verify {cfg.target.name}: reference CPU {cpu.name} ({kind.where(cpu)}), {len(chosen)} "
                 f"samples: the run every profile is compared with ...")
        command = child_command(artifact, emulated_inputs, ref_dir, 0, threads=kind.threads(cpu), guard=False,
                                custom_ops=cfg.verify.custom_op_libraries, batch_axes=evidence.batch_axes)
        try:
            record, results = run_child(command, cpu, ref_dir, cfg, native_seconds=native_seconds)
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

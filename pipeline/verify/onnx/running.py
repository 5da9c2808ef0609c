"""Running one ONNX verification child (pipeline.verify.child_onnx) on one CPU profile, through its kind's runner
(pipeline/verify/cpu_kinds/): the child's command line, the files it reads placed where it runs, the record of
how it ended and the outputs it wrote."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.guard.onnx import external_data_locations
from pipeline.isa.targets import CpuProfile, profile
from pipeline.verify.cpu_kinds import ChildJob, kind_of
from pipeline.verify.planning import child_timeout
from pipeline.verify.sandbox import classify

CHILD_RESULTS = ("outputs.npz", "run.json")  # what child_onnx writes into its --out folder
REMOTE_INPUTS, REMOTE_OUT, REMOTE_CUSTOM_OPS = "inputs.npz", "out", "custom_ops"  # in the child's folder on an SSH host


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def percentiles_ms(seconds: list[float]) -> dict:
    p50, p95 = np.percentile(np.asarray(seconds) * 1000.0, [50, 95])
    return {"p50_ms": float(p50), "p95_ms": float(p95)}


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


def host_files(artifact: Path, inputs: Path, custom_op_libraries=()) -> dict[str, Path]:
    """What a child on an SSH host reads, by name in its remote folder: the artifact (with any external data
    beside it, under the same relative names), the inputs, and custom-operator libraries under
    REMOTE_CUSTOM_OPS/ (numbered: two libraries may share a file name)."""
    return {artifact.name: artifact, REMOTE_INPUTS: inputs} | {
        location: artifact.parent / location for location in external_data_locations(artifact)} | {
        remote_library_name(i, library): Path(library) for i, library in enumerate(custom_op_libraries)}


def remote_library_name(index: int, library) -> str:
    return f"{REMOTE_CUSTOM_OPS}/{index}-{Path(library).name}"


def placed(cpu: CpuProfile, artifact: Path, inputs: Path, out_dir: Path, custom_ops: list
           ) -> tuple[Path, Path, Path, list, dict[str, Path] | None]:
    """The artifact, inputs, output folder and custom-operator libraries as the child on `cpu` sees them, and the
    files to copy there (None when the child runs here, on the files themselves)."""
    if not kind_of(cpu).remote:
        return artifact, inputs, out_dir, custom_ops, None
    return (Path(artifact.name), Path(REMOTE_INPUTS), Path(REMOTE_OUT),
            [remote_library_name(i, library) for i, library in enumerate(custom_ops)],
            host_files(artifact, inputs, custom_ops))


def read_child_results(out_dir: Path) -> tuple[dict, dict] | None:
    if not (out_dir / "outputs.npz").is_file():
        return None
    with np.load(out_dir / "outputs.npz") as arrays:
        outputs = {name: arrays[name] for name in arrays.files}
    return outputs, json.loads((out_dir / "run.json").read_text())


def run_child(command: list[str], cpu: CpuProfile, out_dir: Path, cfg, emulator_args: list[str] | tuple[str, ...] = (),
              uploads: dict[str, Path] | None = None, native_seconds: float | None = None
              ) -> tuple[dict, tuple[dict, dict] | None]:
    """One child on one CPU: the record of what happened, and its outputs (in `out_dir`) when it ran. On an
    SSH host, `uploads` (name in the remote folder -> local file) are copied there first. `native_seconds`: the
    first native run's wall time, which sizes the child's timeout (None: this is that run)."""
    v = cfg.verify
    job = ChildJob(child_timeout(v, cpu, native_seconds), v.memory_limit_mb, tuple(emulator_args), uploads or {},
                   out_dir, tuple(f"{REMOTE_OUT}/{name}" for name in CHILD_RESULTS))
    run = kind_of(cpu).run(command, cpu, job)
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

"""Verify an artifact on every CPU profile of its target, each run in its own child process.

    quantgate verify --artifact-dir artifacts/minilm-dynamic-avx2
    quantgate verify --artifact q.onnx --reference fp32.onnx --inputs in.npz --target avx2 \
        [--out verify.json] [verify.emulated_max_samples=2 model.kind=classifier ...]

A target's profiles: its floor CPU (emulated by QEMU, must run and stay accurate), `native` when this
host has the target's features, and the CPUs just below the floor, where the guard must refuse the
artifact cleanly (exit 3) instead of letting it die. A child killed by a signal is a finding, never a
crash of this process. Order of work: the fp32 reference natively; the artifact natively (no guard: a
measurement), from which the few samples the emulated profiles run are chosen (the most stressed); the
artifact on the reference CPU (verify.reference_cpu); then every profile. Each profile's outputs are
judged against fp32 (every output, pipeline.verify.fidelity) and against the reference CPU's on the
same samples (per-CPU numerics: u8s8 saturation without VNNI). Each profile also names a runtime
(`haswell@ort116`; default: the one the artifact was stamped for): the child runs in that runtime's
venv (pipeline.runtimes), after the guard has predicted in words whether that runtime loads the
artifact; the real load confirms or refutes the prediction. Token models are also checked for padding
invariance on every profile that runs. The report is pipeline.verify.report.VerifyReport.
Exit codes: 0 every required check passed; 1 a check failed; 4 a required check could not be
verified (e.g. AVX-512 without such a host); 2 a user error (missing file, unknown target).
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import arm, runtimes
from pipeline.config import QuantgateError, compose_config
from pipeline.errors import ExitCode
from pipeline.guard import EXIT_REFUSED, StampError, predict_load, read_onnx_header, read_onnx_versions, read_stamp
from pipeline.manifest import MANIFEST_FILE, Manifest, sha256_file
from pipeline.targets import PROFILES, CpuProfile, profile, required_cpu_features
from pipeline.verify.fidelity import CpuComparison, Limits, choose_samples, compare_cpus, judge, output_scale
from pipeline.verify.report import VERIFY_FILE, ArtifactRef, InputsRef, ProfileResult, ReferenceRef, VerifyReport
from pipeline.verify_child import EXIT_LOAD_FAILED, EXIT_OUT_OF_MEMORY, LOAD_FAILED_PREFIX, OUT_OF_MEMORY_WORDS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
QEMU_X86 = "qemu-x86_64"
QEMU_BY_FAMILY = {"x86_64": QEMU_X86, "aarch64": "qemu-aarch64"}
EXIT_FAILED, EXIT_NOT_VERIFIED = ExitCode.FAILED, ExitCode.NOT_VERIFIED
HOST_FAMILY = "aarch64" if platform.machine().lower() in ("aarch64", "arm64") else "x86_64"
STDERR_TAIL_LINES = 15
VNNI_FEATURES = frozenset({"avx512_vnni", "avx_vnni"})  # int8 dot products without 16-bit saturation
QEMU_NOISE = "TCG doesn't support requested feature"  # QEMU warns once per unsupported CPUID bit
SIGNAL_WORDS = {
    signal.SIGILL: "this artifact or its runtime executes an instruction that {cpu} lacks (SIGILL)",
    signal.SIGSEGV: "segmentation fault (SIGSEGV): the runtime touched memory it does not own; a runtime bug "
                    "or a malformed model, not a missing instruction",
    signal.SIGABRT: "aborted (SIGABRT): the runtime stopped on a fatal internal error (a failed check or an "
                    "uncaught C++ exception)",
    signal.SIGKILL: "killed (SIGKILL) on {cpu}: most often the kernel's out-of-memory killer (see `dmesg`)",
    signal.SIGBUS: "bus error (SIGBUS): a misaligned or unmapped memory access, e.g. a truncated memory-mapped file",
    signal.SIGFPE: "arithmetic fault (SIGFPE): an integer division by zero or overflow in a kernel",
}


# --- running one command on one CPU profile --------------------------------------------------------
class EmulatorMissing(RuntimeError):
    pass


@dataclass
class ChildRun:
    """What happened to one child process: exit code or signal, timeout, time, and its last words."""

    profile: str
    command: list[str]
    returncode: int | None  # None when it was killed for running past the timeout
    timed_out: bool
    wall_seconds: float
    timeout_seconds: float
    memory_limit_mb: int
    stderr_tail: list[str] = field(default_factory=list)  # last lines of stderr and stdout, QEMU's noise removed

    @property
    def signal_name(self) -> str | None:
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"

    def reproduce(self) -> str:
        return f"cd {shlex.quote(str(PROJECT_ROOT))} && {shlex.join(self.command)}"


@dataclass
class Outcome:
    status: str  # pass | fail | refused_by_guard | crashed  (pass = it ran; fidelity may still fail it)
    failure: str | None  # sigill, sigsegv, ..., out_of_memory, timeout, error; None when it ran or was refused
    reason: str


def die_with_parent() -> None:
    """In a child before exec: the kernel kills it when the verifying process dies, even by SIGKILL, so no
    emulator is left running orphaned with nothing to enforce its timeout (Linux PR_SET_PDEATHSIG)."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def emulator_prefix(cpu: CpuProfile, emulator_args: list[str] | tuple[str, ...] = ()) -> list[str]:
    """`qemu-x86_64 -cpu MODEL`, or for Arm `qemu-aarch64 -cpu MODEL` + emulator_args (-L SYSROOT -E ...)."""
    if not cpu.emulated:
        return []
    binary = QEMU_BY_FAMILY[cpu.family]
    qemu = shutil.which(binary)
    if qemu is None:
        raise EmulatorMissing(f"{binary} is not on PATH, so {cpu.name} cannot be emulated: "
                              f"`apt-get install qemu-user`")
    return [qemu, "-cpu", cpu.qemu_cpu, *emulator_args]


def run_under_profile(command: list[str], cpu: CpuProfile, timeout_seconds: float,
                      memory_limit_mb: int, emulator_args: list[str] | tuple[str, ...] = ()) -> ChildRun:
    """Run `command` on `cpu` (under QEMU when emulated) in its own session; never raises for its death."""
    full_command = emulator_prefix(cpu, emulator_args) + [str(part) for part in command]
    limit = memory_limit_mb * 1024 * 1024

    def limit_child() -> None:  # runs in the child before exec; QEMU itself fits well within the limit
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # QEMU dumps qemu_*.core into the cwd on SIGILL
        die_with_parent()

    started = time.monotonic()
    process = subprocess.Popen(full_command, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=limit_child)
    timed_out = False
    try:
        output, _ = process.communicate(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(process.pid, signal.SIGKILL)  # the whole group: QEMU and anything the child started
        output, _ = process.communicate()
    except BaseException:  # Ctrl-C reaches only our session: take the child's down with us
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    lines = [line for line in output.decode(errors="replace").splitlines() if QEMU_NOISE not in line]
    return ChildRun(cpu.name, full_command, None if timed_out else process.returncode, timed_out,
                    time.monotonic() - started, timeout_seconds, memory_limit_mb, lines[-STDERR_TAIL_LINES:])


def classify(run: ChildRun) -> Outcome:
    """Name what happened to a child in words a user can act on."""
    cpu = "this host" if run.profile == "native" else run.profile
    last_line = next((line for line in reversed(run.stderr_tail) if line.strip()), "(no output)")
    if run.timed_out:
        return Outcome("fail", "timeout", f"timed out after {run.timeout_seconds:g} s on {cpu} and was killed with its "
                       f"process group; raise verify.timeout_seconds or lower the sample count")
    if run.returncode == 0:
        return Outcome("pass", None, "ran to completion")
    if run.returncode == EXIT_REFUSED:
        return Outcome("refused_by_guard", None, last_line.removeprefix("quantgate guard: "))
    if run.returncode == EXIT_LOAD_FAILED:
        said = next((line for line in run.stderr_tail if line.startswith(LOAD_FAILED_PREFIX)), last_line)
        return Outcome("fail", "load", said.removeprefix(LOAD_FAILED_PREFIX))
    # "failed to map segment": the dynamic loader could not map a library under the address-space limit.
    memory_words = OUT_OF_MEMORY_WORDS + ("MemoryError", "failed to map segment", "Cannot allocate memory")
    if run.returncode == EXIT_OUT_OF_MEMORY or any(w in line for line in run.stderr_tail for w in memory_words):
        return Outcome("crashed", "out_of_memory", f"ran out of memory on {cpu} (address space limited to "
                       f"{run.memory_limit_mb} MB by verify.memory_limit_mb)")
    if run.returncode < 0:
        words = SIGNAL_WORDS.get(-run.returncode, f"killed by {run.signal_name}")
        return Outcome("crashed", run.signal_name.lower(), words.format(cpu=cpu))
    return Outcome("fail", "error", f"exited with code {run.returncode} on {cpu}: {last_line}")


# --- which profiles a target needs, and what each must show --------------------------------------------
@dataclass
class Plan:
    name: str  # the CPU profile
    expected: str  # pass | refused_by_guard
    required: bool
    why: str
    not_verified: str | None = None  # why this profile cannot be run here
    runtime: runtimes.Runtime = runtimes.Runtime(runtimes.PINNED)

    @property
    def key(self) -> str:
        """The deployment profile's name in verify.json: the CPU, plus @runtime unless pinned."""
        return self.name if self.runtime.pinned else f"{self.name}@{self.runtime.name}"


def host_cpu_features(cfg) -> frozenset[str]:
    if cfg.verify.assume_host_features is not None:
        return frozenset(cfg.verify.assume_host_features)
    from pipeline.cpuid import host_features
    return host_features()


def plan_profiles(cfg, required_features: list[str], stamped: bool, host: frozenset[str],
                  runtime: runtimes.Runtime = runtimes.Runtime(runtimes.PINNED)) -> list[Plan]:
    """Deployment profiles: CPU names from the target or verify.profiles, each `cpu[@runtime]`
    (a runtime profile name or pip lines); without @, the artifact's `runtime`."""
    plans = _plan_cpus(cfg, required_features, stamped, host)
    for plan in plans:
        cpu, _, named = plan.name.partition("@")
        plan.name, plan.runtime = cpu, runtimes.parse(named) if named else runtime
    return plans


def _plan_cpus(cfg, required_features: list[str], stamped: bool, host: frozenset[str]) -> list[Plan]:
    target = cfg.target
    # `native` is a profile only where this host is of the target's family (an x86 host cannot run Arm code).
    native = "native" if target.family == HOST_FAMILY else None
    names = list(cfg.verify.profiles) if cfg.verify.profiles is not None else \
        [name for name in (target.floor_profile, native, *target.below_floor_profiles) if name]
    if not names:
        return [Plan(target.family, "pass", True, f"the {target.name} floor CPU",
                     f"no emulated {target.family} CPU profile is named for {target.name} and this host is not one")]
    plans = []
    for name in names:
        try:
            cpu = profile(name.partition("@")[0])
        except KeyError as error:
            raise QuantgateError(error.args[0]) from None
        if cpu.family != target.family and cpu.name != "native":
            same = ", ".join(n for n, p in PROFILES.items() if p.family == target.family and p.emulated)
            raise QuantgateError(f"profile {cpu.name} is a {cpu.family} CPU; target {target.name} runs on "
                                 f"{target.family}: use {same or 'a ' + target.family + ' profile'}")
        missing = sorted(set(required_features) - (host if cpu.name == "native" else cpu.features()))
        if not missing:
            plans.append(Plan(name, "pass", True, f"{name} has every feature the artifact needs"))
        elif cpu.name == "native":
            no_emulator = any(feature.startswith("avx512") for feature in missing)
            plans.append(Plan(name, "pass", target.floor_profile is None, "this host as a target CPU",
                              f"this host lacks {', '.join(missing)}" + (
                                  "; QEMU 7.2 cannot emulate AVX-512, so this target needs a host that has it"
                                  if no_emulator else "")))
        elif stamped:
            plans.append(Plan(name, "refused_by_guard", True, f"{name} lacks {', '.join(missing)}: the guard must refuse"))
        else:
            plans.append(Plan(name, "refused_by_guard", False, f"{name} lacks {', '.join(missing)}, but the artifact "
                              f"has no quantgate stamp, so no guard can refuse it: this is what a user there would see"))
    return plans


# --- fidelity: the bounds, and the evidence every profile is judged against --------------------------
def limits_from(cfg) -> Limits:
    v = cfg.verify
    return Limits(v.min_cosine_mean, v.min_cosine_worst, v.min_top1_agreement, v.max_abs_error, v.max_scaled_error,
                  str(v.pooling))


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

    def rows(self, ids: list[int]) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray | None]:
        labels = self.labels[ids] if self.labels is not None and len(self.labels) > max(ids) else None
        return ({name: array[ids] for name, array in self.fp32.items()},
                self.mask[ids] if self.mask is not None else None, labels)


def resolve_reference_cpu(cfg, host: frozenset[str]) -> str:
    """The CPU whose run of the artifact every profile is compared with (verify.reference_cpu)."""
    name = str(cfg.verify.reference_cpu)
    if name != "auto":
        try:
            return profile(name).name
        except KeyError as error:
            raise QuantgateError(f"verify.reference_cpu: {error.args[0]}") from None
    if HOST_FAMILY != "x86_64" or host & VNNI_FEATURES:
        return "native"
    return "sandybridge"  # SSE/AVX int8 kernels widen products to 16 bits: exact, where AVX2's saturate


def numerics_hint(cpu_name: str, host: frozenset[str]) -> str:
    cpu = profile(cpu_name)
    features = host if cpu.name == "native" else (cpu.features() or frozenset())
    if cpu.family == "x86_64" and not features & VNNI_FEATURES:
        return (f"likely u8s8 saturation on CPUs without VNNI ({cpu_name} adds pairs of u8 x s8 products in 16 bits, "
                f"VPMADDUBSW); rebuild with reduce_range or u8 weights, or target avx512_vnni")
    return f"the int8 kernels on {cpu_name} compute differently from the reference CPU's"


# --- one verification ------------------------------------------------------------------------------
def child_command(model: Path, inputs: Path, out_dir: Path, samples: int, threads: int = 0,
                  latency_repeats: int = 0, guard: bool = True, python: str | None = None,
                  padding_extra: int = 0, custom_ops: list[str] | tuple[str, ...] = ()) -> list[str]:
    # `python` is a runtime environment's interpreter; it finds `pipeline` in the working folder (the repo).
    command = [python or sys.executable, "-m", "pipeline.verify_child", "--model", str(model), "--inputs",
               str(inputs), "--out", str(out_dir), "--samples", str(samples)]
    command += ["--threads", str(threads)] * bool(threads) + ["--latency-repeats", str(latency_repeats)] * bool(latency_repeats)
    command += [part for library in custom_ops for part in ("--custom-ops", str(Path(library).resolve()))]
    return command + ["--no-guard"] * (not guard) + ["--padding-extra", str(padding_extra)] * bool(padding_extra)


# --- runtimes: which one an artifact is verified in, and whether it will load there ----------------
def default_runtime(cfg, stamp: dict) -> runtimes.Runtime:
    """runtime=... when given; else the runtime stamped into the artifact; else this venv."""
    if cfg.runtime is not None:
        return runtimes.resolve(cfg.runtime)
    if "runtime" in stamp:
        built_for = json.loads(stamp["runtime"])
        return runtimes.Runtime(built_for["name"], tuple(built_for["requirements"]))
    return runtimes.Runtime(runtimes.PINNED)


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
            "reason": "each held-out sequence alone vs in a batch padded past the longest, on every profile that runs"}


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
    from pipeline.onnx_checks import UnsafeModelError, check_external_data

    for model in models:
        try:
            read_onnx_header(model)
            check_external_data(model)
        except (StampError, UnsafeModelError) as error:
            raise QuantgateError(str(error)) from None
    stamp = read_stamp(models[0])
    if stamp:
        try:
            check_stamp(stamp, host_features=frozenset())  # validates schema and keys only
        except StampError as error:
            raise QuantgateError(f"{models[0].name}: {error}") from None


def input_specs(path: Path) -> dict[str, tuple[str, int | None]]:
    """Each graph input's numpy dtype kind ('f' float, 'i' integer, 'b' bool) and rank (None if unknown)."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    kinds = {onnx.TensorProto.FLOAT: "f", onnx.TensorProto.DOUBLE: "f", onnx.TensorProto.FLOAT16: "f",
             onnx.TensorProto.BOOL: "b"}
    specs = {}
    for value in graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        rank = len(tensor.shape.dim) if tensor.HasField("shape") else None
        specs[value.name] = (kinds.get(tensor.elem_type, "i"), rank)
    return specs


def load_inputs(inputs: Path, input_names: list[str],
                specs: dict[str, tuple[str, int | None]] | None = None) -> tuple[int, np.ndarray | None, np.ndarray | None, list[str]]:
    """Samples available, labels, attention mask and ignored arrays of the held-out .npz; refuses, before
    any profile runs, a file whose arrays do not fit the model's inputs (names, ranks, kinds of numbers,
    sample counts)."""
    try:
        with np.load(inputs, allow_pickle=False) as arrays:
            absent = [name for name in input_names if name not in arrays.files]
            if absent:
                raise QuantgateError(f"{inputs} has no array for model input(s) {absent}; it has {arrays.files}")
            loaded = {name: arrays[name] for name in arrays.files}  # an object array raises: no pickles
    except (ValueError, OSError, EOFError) as error:
        reason = "it holds an object array (pickles are not loaded)" if "allow_pickle" in str(error) else str(error)
        raise QuantgateError(f"{inputs} cannot be used as inputs: {reason}; save plain numeric arrays named "
                             f"after the model inputs {input_names}") from None
    counts = {name: (loaded[name].shape[0] if loaded[name].ndim else None) for name in input_names}
    if any(count is None for count in counts.values()) or len(set(counts.values())) != 1 or 0 in counts.values():
        raise QuantgateError(f"{inputs}: every model input needs the same number of samples on axis 0 (and at least "
                             f"one); shapes: { {name: list(loaded[name].shape) for name in input_names} }")
    n = next(iter(counts.values()))
    for name, (kind, rank) in (specs or {}).items():
        array = loaded[name]
        if rank is not None and array.ndim != rank:
            raise QuantgateError(f"{inputs}: array {name} has {array.ndim} axes {list(array.shape)}, but the model "
                                 f"input {name} has {rank} (samples on axis 0)")
        if kind == "f" and array.dtype.kind not in "f":
            raise QuantgateError(f"{inputs}: array {name} holds {array.dtype}, but the model input {name} takes "
                                 f"floating-point values")
        if kind in "ib" and array.dtype.kind not in "iub":
            raise QuantgateError(f"{inputs}: array {name} holds {array.dtype}, but the model input {name} takes "
                                 f"integers (token ids, masks)")
    labels = loaded.get("labels")
    if labels is not None and (labels.ndim == 0 or labels.shape[0] != n):
        raise QuantgateError(f"{inputs}: labels has shape {list(labels.shape)}, but the inputs hold {n} samples")
    mask = loaded.get("attention_mask") if "attention_mask" in input_names else None
    ignored = [name for name in loaded if name not in input_names and name != "labels"]
    return n, labels, mask, ignored


def verify_files(artifact, reference, inputs, cfg, out, *, model_kind: str | None = None,
                 output_names: list[str] | None = None, folder: Path | None = None,
                 manifest_sha256: str | None = None) -> dict:
    """Verify `artifact` against `reference` on held-out `inputs` for cfg.target; write the report to `out`.
    `folder`: the build folder these files are a snapshot of (the report names the files there);
    `manifest_sha256`: its manifest.json's, which binds the report to that build."""
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
    n_available, labels, mask, ignored = load_inputs(inputs, input_names, input_specs(artifact))
    if ignored:
        progress(f"verify: {inputs.name}: arrays {ignored} match no model input and are ignored")
    try:
        stamp = read_stamp(artifact)
    except StampError as error:
        raise QuantgateError(str(error)) from None
    target = cfg.target
    # What the guard will act on is the stamp; an unstamped artifact is judged by the target's features.
    required = json.loads(stamp["required_cpu_features"]) if "required_cpu_features" in stamp else \
        required_cpu_features(target.microarchitecture, list(target.extra_features))
    host = host_cpu_features(cfg)
    plans = plan_profiles(cfg, required, bool(stamp), host, default_runtime(cfg, stamp))
    model_versions = read_onnx_versions(artifact)
    padding = padding_plan(artifact, input_names, cfg)
    v = cfg.verify
    native_n, emulated_n = min(n_available, v.native_max_samples), min(n_available, v.emulated_max_samples)
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
    work = Path(tempfile.mkdtemp(prefix="quantgate-verify-"))
    profiles: dict[str, dict] = {}
    reference_record, evidence, selection, reference_cpu_record = None, None, None, None
    emulated_inputs = inputs
    try:
        if any(plan.not_verified is None for plan in plans):
            progress(f"verify {target.name}: fp32 reference, native, {native_n} samples ...")
            reference_record, fp32 = run_reference(reference, inputs, work / "reference", native_n, cfg)
            if fp32 is None:
                notes.append(f"the fp32 reference could not run natively: {reference_record['reason']}")
            else:
                fp32 = {name: fp32[name] for name in judged}
                window = mask[:native_n] if mask is not None else None
                evidence = Evidence(fp32, window, labels[:native_n] if labels is not None else None,
                                    {name: output_scale(array, window) for name, array in fp32.items()}, limits,
                                    model_kind, reference_cpu)
                selection, emulated_inputs, reference_cpu_record = prepare_comparison(
                    artifact, inputs, work, native_n, emulated_n, evidence, cfg, notes)

        # Each runtime prepared once per CPU family (a cached venv; on Arm a sysroot + aarch64 wheels,
        # pipeline.arm), before any profile runs.
        envs = {}
        for runtime, family in dict.fromkeys((plan.runtime, profile(plan.name).family) for plan in plans
                                             if not plan.not_verified):
            prepare = arm.prepare if family == "aarch64" else runtimes.prepare
            try:
                envs[runtime, family] = prepare(runtime, progress=lambda m: progress(f"verify {target.name}: {m}"))
            except QuantgateError as error:
                envs[runtime, family] = error

        for index, plan in enumerate(plans, 1):
            profiles[plan.key] = record = {"expected": plan.expected, "required": plan.required, "why": plan.why,
                                           "cpu": plan.name}
            env = envs.get((plan.runtime, profile(plan.name).family)) if not plan.not_verified else None
            if isinstance(env, QuantgateError):
                plan.not_verified = f"runtime {plan.runtime.label()} could not be prepared: {env}"
            if plan.not_verified:
                record |= {"status": "not_verified", "reason": plan.not_verified, "requirement_met": False}
                progress(f"verify {target.name}: [{index}/{len(plans)}] {plan.key}: not verified ({plan.not_verified})")
                continue
            # The guard's prediction, in words, before anything runs; the child's real load proves it.
            problems = predict_load(model_versions, env.limits)
            record["runtime"] = env.record() | {"prediction": {"loads": not problems, "problems": problems}}
            cpu = profile(plan.name)
            ids = list(selection["emulated"]) if cpu.emulated and selection else list(range(native_n))
            progress(f"verify {target.name}: [{index}/{len(plans)}] {plan.key} "
                     f"({'qemu -cpu ' + cpu.qemu_cpu if cpu.emulated else 'native'}, onnxruntime "
                     f"{env.limits['versions']['onnxruntime']}, {len(ids)} samples) ..."
                     + "".join(f"\n    guard predicts: {problem}" for problem in problems))
            record |= verify_on_profile(cpu, artifact, emulated_inputs if cpu.emulated else inputs, work / plan.key,
                                        ids, cfg, evidence, host, env.python,
                                        padding if padding["status"] == "pending" else None,
                                        emulator_args=getattr(env, "emulator_args", ()))
            disagreement = judge_prediction(record, problems)
            if disagreement:
                record["runtime"]["disagreement"] = disagreement
                notes.append(f"{plan.key}: {disagreement}")
            record["requirement_met"] = record["status"] == plan.expected
            if plan.required and plan.expected == "refused_by_guard" and record["status"] in ("pass", "fail"):
                record["reason"] = (f"ran on {plan.name} although it lacks features the artifact needs: the guard "
                                    f"should have refused it ({record['reason']})")
            progress(f"verify {target.name}:     {plan.key}: {record['status']} in {record['wall_seconds']:.1f} s"
                     + ("" if record["requirement_met"] else f" (expected {plan.expected}: {record['reason'][:300]})"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    native_latency = profiles.get("native", {}).get("latency")
    if native_latency and reference_record and "latency" in reference_record:
        native_latency["fp32"] = reference_record["latency"]
    failed = any(p["required"] and not p["requirement_met"] and p["status"] != "not_verified" for p in profiles.values())
    unverified = any(p["required"] and p["status"] == "not_verified" for p in profiles.values())
    failed |= reference_record is not None and evidence is None
    padding = summarize_padding(padding, profiles)
    failed |= padding["status"] == "fail"
    status = "fail" if failed else "not_verified" if unverified else "pass"
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
                  "max_cpu_excess_error": v.max_cpu_excess_error, "max_cpu_error_ratio": v.max_cpu_error_ratio},
        profiles={name: ProfileResult(**record) for name, record in profiles.items()}, padding=padding,
        latency=native_latency, notes=notes, wall_seconds=round(time.monotonic() - started, 3))
    report.save(out)
    payload = report.to_json()
    print(format_table(payload))
    if folder is None:  # a build folder's report is written by verify_folder, once it is safe to
        print(f"wrote {out}")
    return payload


def run_child(command: list[str], cpu: CpuProfile, out_dir: Path, cfg,
              emulator_args: list[str] | tuple[str, ...] = ()) -> tuple[dict, tuple[dict, dict] | None]:
    """One child on one CPU: the record of what happened, and its outputs when it ran."""
    v = cfg.verify
    run = run_under_profile(command, cpu, v.timeout_seconds, v.memory_limit_mb, emulator_args)
    outcome = classify(run)
    record = {"status": outcome.status, "failure": outcome.failure, "reason": outcome.reason,
              "exit_code": run.returncode, "signal": run.signal_name, "wall_seconds": round(run.wall_seconds, 3),
              "command": run.reproduce(), "stderr_tail": run.stderr_tail}
    results = read_child_results(out_dir) if outcome.status == "pass" else None
    if outcome.status == "pass" and results is None:
        record |= {"status": "fail", "failure": "error", "reason": "the child exited 0 but wrote no outputs"}
    return record, results


def run_reference(reference: Path, inputs: Path, out_dir: Path, samples: int, cfg) -> tuple[dict, dict | None]:
    """The fp32 reference, natively and in a child too (a broken reference must not take the parent down)."""
    command = child_command(reference, inputs, out_dir, samples, latency_repeats=cfg.verify.latency_repeats, guard=False,
                            custom_ops=cfg.verify.custom_op_libraries)
    record, results = run_child(command, profile("native"), out_dir, cfg)
    if results is None:
        record["status"] = "crashed" if record["status"] == "pass" else record["status"]
        return record, None
    outputs, info = results
    record |= {"versions": info["versions"], "samples": info["samples"]}
    if info["latency_seconds"]:
        record["latency"] = percentiles_ms(info["latency_seconds"])
    return record, outputs


def prepare_comparison(artifact: Path, inputs: Path, work: Path, native_n: int, emulated_n: int,
                       evidence: Evidence, cfg, notes: list[str]) -> tuple[dict, Path, dict]:
    """Run the artifact natively (no guard: a measurement, not a deployment), choose from that run the samples
    the emulated profiles get, and run the artifact on the reference CPU. Returns the sample selection, the
    .npz of the chosen samples, and the reference CPU's record; fills evidence.reference_cpu_*."""
    native_dir = work / "native-measurement"
    record, results = run_child(child_command(artifact, inputs, native_dir, native_n, guard=False,
                                              custom_ops=cfg.verify.custom_op_libraries),
                                profile("native"), native_dir, cfg)
    native = results[0] if results else None
    if native is not None and all(name in native for name in evidence.fp32):
        chosen, why = choose_samples(native, evidence.fp32, evidence.mask, evidence.scales, emulated_n)
    else:
        chosen, why = list(range(emulated_n)), f"the first {emulated_n}: the native run failed ({record['reason']})"
        native = None
    with np.load(inputs, allow_pickle=False) as arrays:
        subset = {name: arrays[name][chosen] if arrays[name].ndim and len(arrays[name]) >= native_n else arrays[name]
                  for name in arrays.files}
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
                                                          custom_ops=cfg.verify.custom_op_libraries),
                                        cpu, ref_dir, cfg)
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
                      emulator_args: list[str] | tuple[str, ...] = ()) -> dict:
    """Run the artifact on one profile (in the runtime whose interpreter is `python`) in a child; the
    record of what happened and, if it ran, how well: against fp32, against the reference CPU, and (given
    `padding`) whether padding changes it."""
    v = cfg.verify
    threads = 1 if cpu.emulated else 0  # onnxruntime's spinning pool crawls under QEMU
    command = child_command(artifact, inputs, out_dir, 0 if cpu.emulated else len(ids), threads,
                            0 if cpu.emulated else v.latency_repeats, python=python,
                            padding_extra=padding["extra_tokens"] if padding else 0,
                            custom_ops=cfg.verify.custom_op_libraries)
    try:
        record, results = run_child(command, cpu, out_dir, cfg, emulator_args)
    except EmulatorMissing as missing:
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
                      scales=evidence.scales)
    record |= {"fidelity": judgement.summary, "fidelity_by_output": judgement.by_output}
    problems = list(judgement.problems)
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
        record["padding"] = judge_padding(outputs, evidence, padding)
        if record["padding"]["status"] == "fail":
            words = record["padding"]["reason"]
            record |= {"status": "fail", "failure": record.get("failure") or "padding",
                       "reason": words if not problems else f"{record['reason']}; {words}"}
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
                        hint=numerics_hint(cpu.name, host))


def judge_padding(outputs: dict, evidence: Evidence, padding: dict) -> dict:
    """Each sequence alone vs inside a padded batch, over the positions that are tokens."""
    limits = Limits(**padding["thresholds"])
    mask = outputs.get("padding_mask")
    alone = {name: outputs[f"padding_alone.{name}"] for name in evidence.fp32 if f"padding_alone.{name}" in outputs}
    batched = {name: outputs[f"padding_batched.{name}"] for name in alone}
    scales = {name: output_scale(array, mask) for name, array in alone.items()}
    judgement = judge(batched, alone, model_kind=evidence.model_kind, mask=mask, labels=None, limits=limits,
                      scales=scales)
    result = {"status": "fail" if judgement.problems else "pass", "figures": judgement.summary,
              "figures_by_output": judgement.by_output, "samples": len(next(iter(alone.values()))) if alone else 0}
    if judgement.problems:
        result["reason"] = (f"padding changes the output (alone vs padded {padding['extra_tokens']} tokens past the "
                            f"longest in a batch: {'; '.join(judgement.problems)}): the attention_mask is ignored or "
                            f"not fully applied")
    return result


def summarize_padding(padding: dict, profiles: dict) -> dict:
    """The report's padding verdict: a static failure as is; otherwise from the profiles that ran it."""
    if padding["status"] != "pending":
        return padding
    ran = {key: p["padding"] for key, p in profiles.items() if "padding" in p}
    failed = [key for key, result in ran.items() if result["status"] == "fail"]
    status = "fail" if failed else "pass" if ran else "not_verified"
    reason = (f"padding changes the output on {', '.join(failed)}: {ran[failed[0]]['reason']}" if failed else
              f"each held-out sequence gives the same result alone and padded on {', '.join(ran)}" if ran else
              "no profile ran the model, so padding invariance was not measured")
    return padding | {"status": status, "reason": reason, "profiles": ran}


def format_table(report: dict) -> str:
    rows = [("profile", "expected", "status", "ok", "n", "time", "detail")]
    for name, p in report["profiles"].items():
        figures = p.get("fidelity") or {}
        detail = ", ".join(f"{key} {figures[key]:.4g}" for key in ("cosine_mean", "cosine_worst", "top1_agreement",
                                                                    "accuracy", "max_scaled_error") if key in figures)
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


# --- the stage and the command line -------------------------------------------------------------------
def verify_folder(cfg, manifest: Manifest, out: Path | None = None, shown_folder: Path | None = None) -> dict:
    """Verify a build folder on a snapshot of its files: a rebuild that replaces the folder meanwhile can
    neither mix old and new files into one verification nor receive a verify.json made for other bytes."""
    changed = manifest.tampered_files()
    if changed:
        raise QuantgateError(f"{manifest.folder}: {', '.join(changed)} changed since the build (sha256 differs from "
                             f"manifest.json); rebuild the artifact instead of verifying edited files")
    if manifest.model_file.endswith(".pt2"):  # a torch AOTInductor package: audited, then run per profile
        from pipeline.aoti_verify import verify_package
        return verify_package(cfg, manifest)
    from pipeline.onnx_checks import external_data_locations
    manifest_file = manifest.folder / MANIFEST_FILE
    manifest_sha256 = sha256_file(manifest_file)
    recorded = {record.path: record.sha256 for record in manifest.files}
    names = [manifest.model_file, manifest.reference_file, manifest.heldout_file]
    for model in names[:2]:
        names += [str(Path(model).parent / location) for location in external_data_locations(manifest.path(model))]
    with tempfile.TemporaryDirectory(prefix="quantgate-snapshot-") as scratch:
        snapshot = Path(scratch)
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
                              manifest_sha256=manifest_sha256)
        if not manifest_file.is_file() or sha256_file(manifest_file) != manifest_sha256:
            raise QuantgateError(f"{manifest.folder} was replaced by another build while it was being verified; its "
                                 f"verify.json was not written (it would judge other bytes): verify again")
        shutil.copyfile(staged, report_path.with_name(f".{report_path.name}.tmp"))
        os.replace(report_path.with_name(f".{report_path.name}.tmp"), report_path)
    print(f"wrote {(shown_folder / report_path.name) if shown_folder and out is None else report_path}")
    return report


def run(cfg, manifest: Manifest, shown_folder: Path | None = None) -> Manifest:
    """The verify stage: writes verify.json beside the artifact and sets manifest.verify_status.
    `shown_folder`: where the folder will be published (a build verifies its staging folder first)."""
    if not cfg.verify.enabled:
        progress("verify: skipped (verify.enabled=false)")
        manifest.verify_status = "skipped"
        return manifest
    manifest.verify_status = verify_folder(cfg, manifest, shown_folder=shown_folder)["status"]
    return manifest


def exit_code(status: str) -> int:
    """A verify status as the process exit code (pipeline/errors.py): pass 0, not_verified 4, else 1."""
    return {"pass": ExitCode.OK, "not_verified": ExitCode.NOT_VERIFIED}.get(status, ExitCode.FAILED)


def load_config(target: str, overrides: list[str]):
    from hydra.errors import HydraException
    try:
        return compose_config([f"target={target}", *overrides])
    except HydraException as error:
        known = sorted(p.stem for p in (PROJECT_ROOT / "conf" / "target").glob("*.yaml"))
        message = f"unknown target {target!r}; valid targets: {', '.join(known)}" if f"target/{target}" in str(error) \
            else str(error).splitlines()[0].rstrip(".") + (f": {str(error.__cause__).splitlines()[0]}" if error.__cause__ else "")
        raise QuantgateError(message) from None


def main(argv: list[str] | None = None) -> int:
    """`quantgate verify` (also `python -m pipeline.stages.verify`)."""
    from pipeline.cli import run_command
    return run_command("quantgate verify", _command, argv)


def _command(argv: list[str]) -> int:
    from pipeline.cli import command_parser
    from pipeline.errors import InputError, UsageError
    parser = command_parser("quantgate verify", __doc__, overrides=True)
    parser.add_argument("--artifact-dir", type=Path, help="a folder built by quantgate (manifest.json inside)")
    parser.add_argument("--artifact", type=Path, help="an int8 ONNX model built anywhere")
    parser.add_argument("--reference", type=Path, help="its fp32 ONNX reference")
    parser.add_argument("--inputs", type=Path, help=".npz with one array per model input (and optionally labels)")
    parser.add_argument("--target", help="e.g. avx2; default for --artifact-dir: the manifest's target")
    parser.add_argument("--out", type=Path, help="where to write verify.json; default: beside the artifact")
    args = parser.parse_args(argv)
    if args.artifact_dir is not None:
        if args.artifact or args.reference or args.inputs:
            raise UsageError("give either --artifact-dir or --artifact/--reference/--inputs, not both")
        try:
            manifest = Manifest.load(args.artifact_dir)
        except FileNotFoundError as error:
            raise InputError(str(error)) from None
        report = verify_folder(load_config(args.target or manifest.target, args.overrides), manifest, args.out)
    else:
        if not (args.artifact and args.reference and args.inputs and args.target):
            raise UsageError("give --artifact-dir DIR, or all of --artifact, --reference, --inputs and --target")
        cfg = load_config(args.target, args.overrides)
        report = verify_files(args.artifact, args.reference, args.inputs, cfg,
                              args.out or args.artifact.parent / VERIFY_FILE)
    return exit_code(report["status"])


if __name__ == "__main__":
    raise SystemExit(main())

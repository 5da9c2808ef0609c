"""Running an ONNX artifact on every profile of a plan: each runtime prepared once, each profile's child run
through its kind's runner and judged (pipeline.verify.onnx.judging); lab hosts in parallel, local profiles one
after another, the records in plan order."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pipeline.errors import QuantgateError
from pipeline.guard import predict_load
from pipeline.isa.targets import CpuProfile, profile
from pipeline.runtimes import arm, venvs
from pipeline.verify.cpu_kinds import kind_of
from pipeline.verify.onnx.evidence import Evidence, Measured
from pipeline.verify.onnx.job import Job
from pipeline.verify.onnx.judging import judge_outputs, judge_prediction
from pipeline.verify.onnx.running import child_command, percentiles_ms, placed, progress, run_child
from pipeline.verify.planning import Plan
from pipeline.verify.report import counted_why
from pipeline.verify.sandbox import ProfileUnavailable


def prepare_envs(job: Job) -> dict:
    """Each runtime prepared once per CPU family (a cached venv; on Arm a sysroot + aarch64 wheels,
    pipeline.runtimes.arm) before any profile runs: (runtime, family) -> the env, or the error that stopped it."""
    envs = {}
    for runtime, family in dict.fromkeys((plan.runtime, profile(plan.name).family) for plan in job.plans
                                         if not plan.not_verified and not kind_of(profile(plan.name)).remote):
        prepare = arm.prepare if family == "aarch64" else venvs.prepare
        try:
            envs[runtime, family] = prepare(runtime, progress=lambda m: progress(f"verify {job.cfg.target.name}: {m}"))
        except QuantgateError as error:
            envs[runtime, family] = error
    return envs


def run_profiles(job: Job, measured: Measured, work: Path) -> dict[str, dict]:
    """Every plan's record, in plan order; lab hosts (their own CPUs) run in parallel, at most
    verify.max_parallel_hosts at a time, while the local profiles (this CPU) run one after another."""
    envs = prepare_envs(job)
    profiles = {plan.key: {"expected": plan.expected, "required": plan.required, "why": plan.why, "cpu": plan.name,
                           "counted": plan.required, "counted_why": counted_why(plan.required, plan.why)}
                for plan in job.plans}
    numbered = list(enumerate(job.plans, 1))
    remote = {i for i, plan in numbered if kind_of(profile(plan.name)).remote and not plan.not_verified}
    with ThreadPoolExecutor(max_workers=max(1, min(len(remote), job.cfg.verify.max_parallel_hosts))) as hosts:
        running = [hosts.submit(verify_plan, job, measured, envs, profiles[plan.key], i, plan, work)
                   for i, plan in numbered if i in remote]
        for i, plan in numbered:
            if i not in remote:
                verify_plan(job, measured, envs, profiles[plan.key], i, plan, work)
        for future in running:
            future.result()
    return profiles


def runtime_record(job: Job, record: dict, plan: Plan, cpu: CpuProfile, env) -> tuple[list[str], str, dict]:
    """record['runtime'] (and a lab host's record['host']): the guard's prediction, in words, before anything runs
    (the child's real load proves it); a lab host's own interpreter, whose versions were read there, predicts
    nothing. Returns the predicted problems, where the child runs and the runtime's versions."""
    kind = kind_of(cpu)
    if kind.remote:
        record["host"] = plan.host
        record["runtime"] = {"name": f"{cpu.host}:{cpu.python}", "versions": plan.host["versions"]} | (
            {"prepared_on_host": cpu.runtime} if cpu.runtime else {})
        if "mismatch" in plan.host:
            job.notes.append(f"{plan.key}: {plan.host['mismatch']}")
        return [], kind.where(cpu), plan.host["versions"]
    problems = predict_load(job.model_versions, env.limits)
    record["runtime"] = env.record() | {"prediction": {"loads": not problems, "problems": problems}}
    return problems, kind.where(cpu), env.limits["versions"]


def verify_plan(job: Job, measured: Measured, envs: dict, record: dict, index: int, plan: Plan, work: Path) -> None:
    """Run and judge one plan into its `record`."""
    name, total = job.cfg.target.name, len(job.plans)
    cpu = profile(plan.name)
    kind = kind_of(cpu)
    env = envs.get((plan.runtime, cpu.family)) if not plan.not_verified and not kind.remote else None
    if isinstance(env, QuantgateError):
        plan.not_verified = f"runtime {plan.runtime.label()} could not be prepared: {env}"
    if plan.not_verified:
        record |= {"status": "not_verified", "reason": plan.not_verified, "requirement_met": False}
        progress(f"verify {name}: [{index}/{total}] {plan.key}: not verified ({plan.not_verified})")
        return
    emulated = kind.emulated(cpu)
    ids = list(measured.selection["emulated"]) if emulated and measured.selection else list(range(job.native_n))
    problems, where, versions = runtime_record(job, record, plan, cpu, env)
    progress(f"verify {name}: [{index}/{total}] {plan.key} ({where}, onnxruntime {versions['onnxruntime']}, "
             f"{len(ids)} samples) ..." + "".join(f"\n    guard predicts: {problem}" for problem in problems))
    record |= verify_on_profile(cpu, job.artifact, measured.emulated_inputs if emulated else job.inputs,
                                work / plan.key, ids, job.cfg, measured.evidence, job.host,
                                env.python if env else None, job.pending_padding,
                                emulator_args=getattr(env, "emulator_args", ()), native_seconds=measured.native_seconds)
    disagreement = judge_prediction(record, problems) if not kind.remote else None
    if disagreement:
        record["runtime"]["disagreement"] = disagreement
        job.notes.append(f"{plan.key}: {disagreement}")
    record["requirement_met"] = record["status"] == plan.expected
    if plan.required and plan.expected == "refused_by_guard" and record["status"] in ("pass", "fail"):
        record["reason"] = (f"ran on {plan.name} although it lacks features the artifact needs: the guard "
                            f"should have refused it ({record['reason']})")
    progress(f"verify {name}:     {plan.key}: {record['status']} in {record['wall_seconds']:.1f} s"
             + ("" if record["requirement_met"] else f" (expected {plan.expected}: {record['reason'][:300]})"))


def verify_on_profile(cpu: CpuProfile, artifact: Path, inputs: Path, out_dir: Path, ids: list[int], cfg,
                      evidence: Evidence | None, host: frozenset[str], python: str | None = None,
                      padding: dict | None = None, emulator_args: list[str] | tuple[str, ...] = (),
                      native_seconds: float | None = None) -> dict:
    """Run the artifact on one profile (in the runtime whose interpreter is `python`) in a child; the
    record of what happened and, if it ran, how well: against fp32, against the reference CPU, and (given
    `padding`) whether padding changes it."""
    v, kind = cfg.verify, kind_of(cpu)
    threads, emulated = kind.threads(cpu), kind.emulated(cpu)
    artifact, inputs, child_out, custom_ops, uploads = placed(cpu, artifact, inputs, out_dir,
                                                              list(v.custom_op_libraries))
    command = child_command(artifact, inputs, child_out, 0 if emulated else len(ids), threads,
                            kind.latency_repeats(cpu, v), python=python,
                            padding_extra=padding["extra_tokens"] if padding else 0, custom_ops=custom_ops,
                            batch_axes=evidence.batch_axes if evidence else None)
    try:
        record, results = run_child(command, cpu, out_dir, cfg, emulator_args, uploads, native_seconds)
    except ProfileUnavailable as missing:
        return {"status": "not_verified", "reason": str(missing), "wall_seconds": 0.0}
    record |= {"emulated": emulated, "qemu_cpu": cpu.qemu_cpu, "threads": threads}
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
    return judge_outputs(record, cpu, outputs, ids, evidence, host, v, padding)

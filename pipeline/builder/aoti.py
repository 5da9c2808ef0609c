"""`export=aoti`: a torchao PT2E int8 model compiled by AOTInductor into `model.pt2` for the target ISA.

Why this needs care: left alone, inductor compiles its C++ for the build host. Two settings decide
the machine code (torch 2.13, torch/_inductor/cpp_builder.py and cpu_vec_isa.py):

- `config.cpp.march` (env `TORCHINDUCTOR_CPP_MARCH`): the `-march=` of every C++ compile, the
  wrapper library included. Unset, it is `-march=native`: on an AVX-512 host the wrapper's own
  code (constant folding, std::sort, ...) comes out with AVX-512 whatever the kernels use. This is
  why `cpp.simdlen = 256` alone still ships `vmovdqu8 zmm`/`ymm` (AVX512BW+VL) in the wrapper.
- the vector ISA (`cpu_vec_isa.pick_vec_isa()`, steered by `config.cpp.simdlen`): the
  `CPU_CAPABILITY_*` macro and `-m` flags (`-mavx2 -mfma -mf16c`, `-mavx512f ...`) of the
  generated kernels, appended after `-march`, so they add to it. It is picked among what the
  *build host* supports: simdlen=512 gives `avx512 avx512_vnni` on a VNNI host (adds
  `-mavx512vnni`), and plain avx512 adds `-mavx512bf16` on a host with BF16. So for 512-bit
  targets simdlen is not enough either: quantgate pins the list inductor picks from to the one
  ISA the target implies (`pinned_isa`), and sets simdlen to its width.

`-march` comes from archspec's compiler flags for the target's microarchitecture (x86_64_v3 ->
`-march=x86-64-v3`), not from a hand-typed table. Each build compiles in a fresh inductor cache
folder: the cache key does not include the pinned ISA, so a kernel cached by a build for another
target (same march and simdlen: avx512 vs avx512_vnni) could otherwise be reused. Whatever the
settings, the build then proves the result: `pipeline.isa.audit` disassembles the library and the
build fails if any instruction needs a feature outside the target.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import tempfile
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from pipeline import kinds
from pipeline.builder import qat, reproducible
from pipeline.builder.budget import budget_text, metrics, within_budget
from pipeline.builder.calibrate import load_batches, load_inputs, save_npz
from pipeline.builder.models import model_family
from pipeline.builder.quantize import policy
from pipeline.builder.stamp import config_sha256, stamp_values
from pipeline.errors import NotVerified, QuantgateError
from pipeline.guard import cpuid
from pipeline.guard.pt2 import read_package_stamp
from pipeline.isa import audit
from pipeline.isa.targets import required_cpu_features
from pipeline.manifest import REFERENCE_OUTPUTS_FILE, Manifest, atomic_write_json
from pipeline.progress import say, step

KIND = kinds.AOTI_PT2  # what this stage builds: its file, container and stamp kind are the registry's
PACKAGE_FILE = KIND.model_file
STAMP_MEMBER = "quantgate_stamp.json"  # stored as <archive>/extra/quantgate_stamp.json (package_pt2 extra_files)
AVX512_BASE = {"avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"}  # what inductor's VecAVX512 flags enable


@dataclass(frozen=True)
class IsaPlan:
    """How inductor is told the target: -march for all C++, and the vector ISA of its kernels."""

    march: str  # config.cpp.march, e.g. x86-64-v3
    vec_isa: str  # "" (scalar kernels, compiler auto-vectorises within -march), avx2, avx512, avx512_vnni
    simdlen: int  # config.cpp.simdlen: the vector ISA's width (0 = none)

    def describe(self) -> str:
        return f"-march={self.march}, inductor vector ISA {self.vec_isa or 'none (scalar)'} (simdlen {self.simdlen})"


def compiler_version(cxx: str = "g++") -> str:
    return subprocess.run([cxx, "-dumpfullversion"], capture_output=True, text=True, check=True).stdout.strip()


def isa_plan(microarchitecture: str, features: list[str]) -> IsaPlan:
    """The compiler settings for a target, from archspec (march) and the target's feature set."""
    import archspec.cpu

    uarch = archspec.cpu.TARGETS[microarchitecture]
    if uarch.family.name != "x86_64":
        raise QuantgateError(f"export=aoti compiles x86-64 code only (inductor builds for the build host's "
                             f"architecture); target microarchitecture {microarchitecture} is {uarch.family.name}")
    flags = uarch.optimization_flags("gcc", compiler_version())
    march = re.search(r"-march=(\S+)", flags)
    if march is None:
        raise QuantgateError(f"archspec gives no -march for {microarchitecture} (flags {flags!r})")
    have = set(features)
    if AVX512_BASE <= have:
        vec_isa, simdlen = ("avx512_vnni" if "avx512_vnni" in have else "avx512"), 512
    elif {"avx2", "fma", "f16c"} <= have:
        vec_isa, simdlen = "avx2", 256
    else:
        vec_isa, simdlen = "", 0
    return IsaPlan(march.group(1), vec_isa, simdlen)


def _vec_isa(name: str):
    from torch._inductor import cpu_vec_isa

    isa = {"avx2": cpu_vec_isa.VecAVX2, "avx512": cpu_vec_isa.VecAVX512,
           "avx512_vnni": cpu_vec_isa.VecAVX512VNNI}[name]()
    if not isa:  # its dry compile (with our -march) failed: the toolchain cannot build it
        raise QuantgateError(f"the C++ compiler cannot build inductor's {name} kernels; check g++ (>= 9)")
    # VecAVX512 adds -mavx512bf16 when the *build host* has BF16; no x86 target here includes it.
    isa._is_avx512_bf16_supported = False
    return isa


@contextmanager
def pinned_isa(plan: IsaPlan):
    """Inductor configured for `plan`: -march for every compile, and exactly one vector ISA to pick."""
    from torch._inductor import config, cpu_vec_isa

    original = cpu_vec_isa.valid_vec_isa_list
    with config.patch({"cpp.march": plan.march, "cpp.simdlen": plan.simdlen}):
        chosen = [_vec_isa(plan.vec_isa)] if plan.vec_isa else []
        # pick_vec_isa() (codegen, cpp_builder, the package's AOTI_CPU_ISA label) chooses from this list.
        cpu_vec_isa.valid_vec_isa_list = lambda: chosen
        try:
            yield
        finally:
            cpu_vec_isa.valid_vec_isa_list = original


@contextmanager
def portable_compile(cache: str):
    """Inductor set to write no build-machine path, address or cache-dependent name into a package.

    Measured on torch 2.13 (digits_cnn, two checkouts): left alone, the wrapper/kernel .cpp end with
    the compile and link commands (the per-build cache folder, the venv's torch/include, Python's
    include folder, the precompiled header under /tmp/torchinductor_<user>), the .so's line tables
    (-g1) and `__FILE__` strings name the same folders, the generated files are named by hashes of
    code that holds those paths and, in size-assert messages, `<function ... at 0x7f...>` (a memory
    address: different in every process). So:
    - `-ffile-prefix-map=OLD=NEW` (gcc >= 8: debug info and `__FILE__`) for the cache folder and
      every folder in `reproducible.host_roots()`, shortest first (gcc tries the last one first);
    - `aot_inductor.model_name_for_generated_files="model"`: fixed file names instead of code hashes;
    - `size_asserts=False`: drops the per-buffer asserts whose messages carry the address; in an AOT
      package they only ran with AOTI_RUNTIME_CHECK_INPUTS=1 (the input checks stay);
    - `aot_inductor.precompile_headers=False`: the header is named by a hash of the preprocessed torch
      headers (venv paths inside) and lives in a cache shared across builds.
    The .cpp files' trailing command comments are rewritten afterwards (`portable_sources`).
    """
    from torch._inductor import config, cpp_builder

    maps = [(root, label.rstrip("/") or ".") for root, label in reproducible.host_roots()]
    maps += [(cache, "<inductor-cache>"), (os.path.realpath(cache), "<inductor-cache>")]
    flags = [f"ffile-prefix-map={old}={new}" for old, new in sorted(set(maps), key=lambda m: len(m[0]))]
    original = cpp_builder._get_optimization_cflags

    def with_prefix_maps(*args, **kwargs):
        cflags, ldflags = original(*args, **kwargs)
        return cflags + flags, ldflags

    with config.patch({"aot_inductor.model_name_for_generated_files": "model", "size_asserts": False,
                       "aot_inductor.precompile_headers": False}):
        cpp_builder._get_optimization_cflags = with_prefix_maps
        try:
            yield
        finally:
            cpp_builder._get_optimization_cflags = original


def portable_sources(files: list, cache: str) -> None:
    """The generated sources and json that go into the package, with the cache folder and this
    machine's folders replaced by portable names (they end with the compile and link commands)."""
    for name in files:
        if not isinstance(name, str) or not name.endswith((".cpp", ".h", ".json", ".txt")):
            continue
        path = Path(name)
        text = path.read_text()
        for folder in {cache, os.path.realpath(cache)}:
            text = text.replace(folder, "<inductor-cache>")
        path.write_text(reproducible.portable(text))


def compile_package(program, path: Path, plan: IsaPlan | None, extra_files_for=None,
                    freezing: bool = False) -> float:
    """AOTInductor-compile an ExportedProgram into a .pt2 at `path`; returns the seconds it took.

    `extra_files_for(native_libraries)` sees the compiled libraries before they are packaged and
    returns the files to put under extra/ in the package (the stamp, with the audited features);
    raising there packages nothing. plan=None compiles the way inductor does by default, for the
    build host: only the mis-targeted build the tests use to show what the audit catches.
    `freezing=True` would fold the int8 weights into oneDNN's quantized convolution/linear (the
    X86InductorQuantizer lowering), but on torch 2.13 the AOTI package then computes garbage for
    digits_cnn (accuracy 0.03 vs 0.95; max error 28 against the converted model), with quantgate's
    ISA settings and with inductor's defaults alike. Off, the package keeps the int8 weights and
    runs dequantize -> fp32 conv/linear (libtorch, dispatched by CPUID) -> quantize, matching the
    converted model exactly; the build's accuracy gate is what would catch a wrong package.
    """
    import torch
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    from torch.export.pt2_archive._package import package_pt2

    started = time.perf_counter()
    options = {"aot_inductor.package": True, "freezing": freezing}
    with tempfile.TemporaryDirectory(prefix="quantgate-inductor-") as cache, temporary_cache_dir(cache), \
            portable_compile(cache), (pinned_isa(plan) if plan else nullcontext()), warnings.catch_warnings(), \
            torch.no_grad():
        warnings.simplefilter("ignore")
        # aoti_compile_and_package is aot_compile + package_pt2; done in two steps so the stamp
        # goes into the package through package_pt2's own `extra_files` (extra/ in the archive).
        args, kwargs = program.example_inputs
        files = torch._inductor.aot_compile(program.module(), args, kwargs, options=options)
        portable_sources(files, cache)
        native = [Path(f) for f in files if isinstance(f, str) and f.endswith(".so")]
        extra_files = extra_files_for(native) if extra_files_for else {}
        path.parent.mkdir(parents=True, exist_ok=True)
        package_pt2(str(path), aoti_files={"model": files}, extra_files=extra_files)
    return time.perf_counter() - started


# --- quantization: torchao PT2E with X86InductorQuantizer -----------------------------------------------
def static_quantizer(record):
    """The same policy mapping as QAT's (pipeline/builder/qat.py), with observers instead of fake quant."""
    return qat.quantizer_for(record, is_qat=False)


def quantize_static(cfg, record, calibration_batches: list):
    """prepare_pt2e, run the calibration batches through the observers, convert_pt2e."""
    import torch
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    family = model_family(cfg)
    torch.manual_seed(int(cfg.model.seed))
    model = family.load_torch().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.export.export(model, family.example_inputs(), dynamic_shapes=family.dynamic_shapes()).module()
        prepared = prepare_pt2e(graph, static_quantizer(record))
        with torch.no_grad():
            for batch in calibration_batches:
                prepared(*(torch.from_numpy(batch[name]) for name in family.input_names))
        return convert_pt2e(prepared)


def quantize_qat(cfg, record, calibration_batches: list):
    """QAT (pipeline/builder/qat.py): the fine-tuned, converted graph, compiled here instead of exported, and the
    training summary."""
    result = qat.train(cfg, record, calibration_batches)
    return result.converted(), result.summary


# --- the stage ----------------------------------------------------------------------------------------
def run_package(path: Path, inputs: dict, input_names: list[str], batch: int = 64):
    """Outputs of a .pt2 on `inputs` (numpy), in batches; loads the package in this process."""
    import numpy as np
    import torch

    runner = torch._inductor.aoti_load_package(str(path))
    count = len(inputs[input_names[0]])
    with torch.no_grad():
        return np.concatenate([runner(*(torch.from_numpy(inputs[n][i:i + batch]) for n in input_names)).numpy()
                               for i in range(0, count, batch)])


def check_host_runs(audited: list[str], host: frozenset[str], target: str) -> None:
    """The accuracy gate runs the package in this process: refuse, before it is loaded, a package whose code needs
    features this host lacks (it would die with SIGILL, taking the build with it)."""
    missing = sorted(set(audited) - host)
    if missing:
        raise NotVerified(
            f"export=aoti target={target}: the build's accuracy gate runs the compiled package on this host, which "
            f"lacks {', '.join(missing)} that its code uses (it would die with SIGILL here); nothing was published. "
            f"Build on a host with those features, or build export=onnx (onnxruntime picks its kernels when it "
            f"runs, so any x86-64 host builds ONNX artifacts for every target)")


def stamp_for(cfg, manifest: Manifest, plan: IsaPlan, audited: list[str]) -> dict[str, str]:
    """The ONNX stamp's keys (stages.stamp.stamp_values), plus what only a native package has."""
    compiler = {"cxx": f"g++ {compiler_version()}", "march": plan.march, "inductor_vec_isa": plan.vec_isa or "none",
                "simdlen": plan.simdlen}
    return stamp_values(cfg, manifest) | {
        "artifact_kind": KIND.stamp_kind, "opset": "none (AOTInductor package)",
        audit.STAMP_KEY: json.dumps(audited, separators=(",", ":")),
        "compiler": json.dumps(compiler, sort_keys=True, separators=(",", ":"))}


def quantized_program(cfg, manifest: Manifest, family, record, batches: list):
    """The PT2E int8 model (static, or QAT's fine-tuned one), exported by torch.export with the family's dynamic
    shapes: what AOTInductor compiles."""
    import torch

    with step(f"quantize: torchao PT2E {record.mode} (X86InductorQuantizer, per_channel={record.per_channel}, "
              f"reduce_range={record.reduce_range})"):
        if record.mode == "qat":
            converted, manifest.qat = quantize_qat(cfg, record, batches)
        else:
            converted = quantize_static(cfg, record, batches)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.export(converted, family.example_inputs(), dynamic_shapes=family.dynamic_shapes())


def audited_stamp(cfg, manifest: Manifest, plan: IsaPlan, required: list[str]):
    """compile_package's `extra_files_for`: audit the compiled libraries before they are packaged (over the target,
    nothing ships), set manifest.stamp and return the package's stamp member."""
    def stamp_member(libraries: list[Path]) -> dict[str, str]:
        reports = [audit.audit_elf(library.read_bytes(), library.name) for library in libraries]
        measured = audit.AuditReport(PACKAGE_FILE, KIND.container, reports)
        problems = audit.check(measured, required, cfg.target.name)
        if not measured.audited:
            problems.append("no x86-64 library to audit: " + ("; ".join(r.reason for r in reports) or "none compiled"))
        if problems:
            raise QuantgateError("audit: the compiled code uses instructions target " + cfg.target.name +
                                 " lacks, so it would die with SIGILL there: " + " | ".join(problems))
        say(f"audit: {sum(r.instructions for r in reports)} instructions need only {', '.join(measured.features())} "
            f"(within {cfg.target.name})")
        manifest.stamp = stamp_for(cfg, manifest, plan, measured.features())
        return {STAMP_MEMBER: json.dumps({f"quantgate.{k}": v for k, v in manifest.stamp.items()}, indent=1,
                                         sort_keys=True) + "\n"}
    return stamp_member


def write_audit(cfg, manifest: Manifest, package: Path, required: list[str]) -> list[str]:
    """What ships, audited again from the package itself, written as audit.json (the evidence); its features."""
    shipped = audit.audit_path(package)
    if shipped.features() != json.loads(manifest.stamp[audit.STAMP_KEY]) or read_package_stamp(package) != manifest.stamp:
        raise RuntimeError("model.pt2 does not hold the libraries and stamp that were audited")
    # Named as in the folder, not by the staging path it was audited at: same inputs, same audit.json.
    evidence = shipped.to_json() | {"artifact": PACKAGE_FILE, "target": cfg.target.name, "allowed": required}
    for library in evidence["libraries"]:
        library["name"] = library["name"].replace(str(package), PACKAGE_FILE, 1)
        library.pop("seconds", None)  # the audit's own run time: the only byte that changed between builds
    atomic_write_json(manifest.path(audit.AUDIT_FILE), evidence)
    return shipped.features()


def gate_package(cfg, manifest: Manifest, family, package: Path) -> None:
    """Build-time accuracy gate on the validation split, against the fp32 torch model (no fallback); then fp32's
    held-out outputs, verification's reference."""
    import torch

    model = family.load_torch()

    def fp32_outputs(inputs):
        with torch.no_grad():
            return model(*(torch.from_numpy(inputs[n]) for n in family.input_names)).numpy()
    validation, labels = load_inputs(manifest.path(manifest.validation_file), family.input_names)
    fp32 = fp32_outputs(validation)
    manifest.fp32_metrics = metrics(family.kind, fp32, fp32, labels)
    manifest.int8_metrics = metrics(family.kind, run_package(package, validation, family.input_names), fp32, labels)
    ok, text = within_budget(family.kind, manifest.int8_metrics, manifest.fp32_metrics, cfg.verify)
    say(f"gate: {text}")
    if cfg.verify.build_gate and not ok:
        raise QuantgateError(f"the int8 package misses the accuracy budget "
                             f"({budget_text(manifest.fp32_metrics, cfg.verify)}): {text}")
    heldout, _ = load_inputs(manifest.path(manifest.heldout_file), family.input_names)
    save_npz(manifest.path(REFERENCE_OUTPUTS_FILE), {family.output_names[0]: fp32_outputs(heldout)})


def run(cfg, manifest: Manifest) -> Manifest:
    """After export and calibrate: quantize (PT2E), compile for the target, audit, stamp, gate."""
    family = model_family(cfg)
    manifest.quantization = record = dataclasses.replace(policy(cfg), quant_format="PT2E")
    manifest.required_cpu_features = required = required_cpu_features(
        cfg.target.microarchitecture, list(cfg.target.extra_features))
    manifest.config_sha256 = config_sha256(cfg)
    manifest.model_file = PACKAGE_FILE
    plan = isa_plan(cfg.target.microarchitecture, required)
    program = quantized_program(cfg, manifest, family, record, load_batches(manifest.path(manifest.calibration_file)))
    package = manifest.path(PACKAGE_FILE)
    settings = plan.describe() if plan else "inductor's defaults (-march=native, the host's vector ISA)"
    with step(f"compile: AOTInductor for {cfg.target.name}: {settings}, then audit"):
        seconds = compile_package(program, package, plan, audited_stamp(cfg, manifest, plan, required))
    say(f"compile: {seconds:.1f} s, {package.stat().st_size / 1e6:.2f} MB")
    shipped = write_audit(cfg, manifest, package, required)
    check_host_runs(shipped, cpuid.host_features(), cfg.target.name)
    gate_package(cfg, manifest, family, package)
    return manifest

"""Static ISA audit: which CPU features does the machine code inside an artifact need?

A label can lie ("AOTI_CPU_ISA": "AVX2" on a wrapper library full of AVX-512); the instructions
cannot. This disassembles every native x86-64 library (ELF) inside an artifact -- a `.pt2`
package (a zip), a bare `.so`, an artifact folder -- with iced-x86 (decoder) and pyelftools
(sections, symbols), and lists each CPUID feature its instructions need, in archspec's names,
with how many instructions need it and a few of them with addresses.

    quantgate audit artifacts/digits_cnn-static-avx2/model.pt2 [--target avx2] [--json OUT] [key=value ...]
    make audit ARTIFACT=path/to/libsomething.so TARGET=avx2

(pipeline/commands/audit.py parses the command line.)

Static means conservative in one direction only: code that is present but never executed (a
runtime dispatcher's AVX-512 branch behind a CPUID check) is still listed, so a third-party
library with runtime dispatch "exceeds" any target; code quantgate compiles for a target has no
such branches, so for it the audit is exact. An ONNX artifact holds no native code at all: its
runtime (onnxruntime) picks kernels by CPUID at run time, which verification checks instead.

Exit codes (pipeline/errors.py): 0 within the target (or no target given), 1 exceeds it, 2 user error,
4 nothing could be audited (e.g. only aarch64 libraries: this audit decodes x86-64 only).
"""
from __future__ import annotations

import bisect
import io
import json
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import kinds
from pipeline.errors import ExitCode, InputError, NotVerified
from pipeline.guard.artifact import container_of

ELF_MAGIC = b"\x7fELF"
EXAMPLES_PER_FEATURE = 3
EXIT_OK, EXIT_EXCEEDS, EXIT_USER_ERROR, EXIT_NOT_AUDITED = ExitCode.OK, ExitCode.FAILED, ExitCode.USAGE, \
    ExitCode.NOT_VERIFIED
AUDIT_FILE = "audit.json"
STAMP_KEY = "audited_cpu_features"  # quantgate.audited_cpu_features, beside required_cpu_features

# iced-x86 CpuidFeature -> archspec feature name (the names targets use, as in /proc/cpuinfo).
ICED_TO_ARCHSPEC = {
    "SSE3": "sse3", "SSSE3": "ssse3", "SSE4_1": "sse4_1", "SSE4_2": "sse4_2", "POPCNT": "popcnt",
    "CMPXCHG16B": "cx16", "LZCNT": "abm", "AVX": "avx", "AVX2": "avx2", "FMA": "fma", "F16C": "f16c",
    "BMI1": "bmi1", "BMI2": "bmi2", "MOVBE": "movbe", "XSAVE": "xsave", "XSAVEOPT": "xsaveopt",
    "XSAVEC": "xsavec", "AVX512F": "avx512f", "AVX512BW": "avx512bw", "AVX512CD": "avx512cd",
    "AVX512DQ": "avx512dq", "AVX512VL": "avx512vl", "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16", "AVX512_FP16": "avx512_fp16", "AVX512_IFMA": "avx512ifma",
    "AVX512_VBMI": "avx512vbmi", "AVX512_VBMI2": "avx512_vbmi2", "AVX512_BITALG": "avx512_bitalg",
    "AVX512_VPOPCNTDQ": "avx512_vpopcntdq", "AVX512_VP2INTERSECT": "avx512_vp2intersect",
    "AVX512ER": "avx512er", "AVX512PF": "avx512pf", "AVX_VNNI": "avx_vnni", "AVX_IFMA": "avx_ifma",
    "AVX_NE_CONVERT": "avx_ne_convert", "AVX_VNNI_INT8": "avx_vnni_int8", "AVX_VNNI_INT16": "avx_vnni_int16",
    "AMX_TILE": "amx_tile", "AMX_INT8": "amx_int8", "AMX_BF16": "amx_bf16", "AES": "aes",
    "PCLMULQDQ": "pclmulqdq", "VAES": "vaes", "VPCLMULQDQ": "vpclmulqdq", "GFNI": "gfni", "SHA": "sha_ni",
    "ADX": "adx", "RDRAND": "rdrand", "RDSEED": "rdseed", "RDPID": "rdpid", "CLFLUSHOPT": "clflushopt",
    "CLWB": "clwb", "FSGSBASE": "fsgsbase", "SSE4A": "sse4a", "FMA4": "fma4", "XOP": "xop", "TBM": "tbm",
    "MOVDIRI": "movdiri", "MOVDIR64B": "movdir64b", "SERIALIZE": "serialize", "WAITPKG": "waitpkg",
    "CLDEMOTE": "cldemote", "PKU": "pku", "CLZERO": "clzero", "SHA512": "sha512", "SM3": "sm3", "SM4": "sm4",
}
# What every x86-64 CPU has (the psABI baseline): never a finding.
X86_64_BASELINE = {
    "INTEL8086", "INTEL186", "INTEL286", "INTEL386", "INTEL486", "X64", "FPU", "FPU287", "FPU387", "CMOV",
    "CX8", "FXSR", "MMX", "SSE", "SSE2", "SYSCALL", "TSC", "CPUID", "PAUSE", "MULTIBYTENOP", "CLFSH", "SEP",
    "MSR", "RDPMC",
    # endbr64 (CET indirect-branch tracking, emitted by Debian's gcc) is encoded in the hint-NOP
    # space: a CPU without CET executes it as a NOP.
    "CET_IBT",
}
# Not named by archspec, but in every CPU that has the named feature (Intel SDM): no separate finding.
IMPLIED_BY = {"PREFETCHW": "avx2", "RDTSCP": "sse4_2", "LAHF": "lahf_lm"}


class AuditError(InputError):
    """The path cannot be audited at all (missing, unreadable); a user error."""


@dataclass
class LibraryAudit:
    """One native library: its architecture and, if x86-64, the features its instructions need."""

    name: str  # as found: a path, or `package.pt2!member/path.so`
    size_bytes: int
    architecture: str
    audited: bool
    reason: str = ""  # why not audited
    instructions: int = 0
    undecodable: int = 0  # bytes iced-x86 could not decode (data inside .text, or padding)
    features: dict[str, int] = field(default_factory=dict)  # archspec name -> instructions needing it
    examples: dict[str, list[str]] = field(default_factory=dict)  # feature -> ["0x1234 <symbol>: text"]
    seconds: float = 0.0


@dataclass
class AuditReport:
    artifact: str
    kind: str  # pt2 | elf | onnx | folder | other
    libraries: list[LibraryAudit] = field(default_factory=list)
    note: str = ""

    @property
    def audited(self) -> list[LibraryAudit]:
        return [library for library in self.libraries if library.audited]

    def features(self) -> list[str]:
        return sorted(set().union(*(library.features for library in self.audited)))

    def counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for library in self.audited:
            for feature, count in library.features.items():
                total[feature] = total.get(feature, 0) + count
        return total

    def exceeding(self, allowed: list[str] | set[str]) -> list[str]:
        return sorted(set(self.features()) - set(allowed))

    def to_json(self) -> dict:
        return asdict(self) | {"audited_cpu_features": self.features()}


def _feature_names() -> dict[int, str]:
    from iced_x86 import CpuidFeature
    return {value: name for name, value in vars(CpuidFeature).items() if isinstance(value, int) and not name.startswith("_")}


def _function_symbols(elf) -> tuple[list[int], list[tuple[int, str]]]:
    """Function starts, and (end, name) of each (symtab, else dynsym), to say where an instruction lives."""
    for section_name in (".symtab", ".dynsym"):
        section = elf.get_section_by_name(section_name)
        if section is None:
            continue
        symbols = sorted((s["st_value"], s["st_value"] + s["st_size"], s.name) for s in section.iter_symbols()
                         if s["st_info"]["type"] == "STT_FUNC" and s["st_value"] and s.name)
        if symbols:
            return [start for start, _, _ in symbols], [(end, name) for _, end, name in symbols]
    return [], []


def audit_elf(data: bytes, name: str) -> LibraryAudit:
    """Decode every executable section of an ELF image; count the CPUID features per instruction."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    started = time.perf_counter()
    try:
        elf = ELFFile(io.BytesIO(data))
        machine = elf["e_machine"]
    except (ELFError, ValueError) as error:
        return LibraryAudit(name, len(data), "unknown", False, f"not a readable ELF file: {error}")
    architecture = {"EM_X86_64": "x86_64", "EM_AARCH64": "aarch64", "EM_386": "i386"}.get(machine, str(machine))
    if machine != "EM_X86_64" or elf.elfclass != 64:
        return LibraryAudit(name, len(data), architecture, False,
                            f"{architecture} machine code: this audit decodes x86-64 only, so its CPU "
                            f"features are not checked here (verify it on a {architecture} CPU instead)")

    from iced_x86 import Decoder

    feature_names = _feature_names()
    addresses, symbols = _function_symbols(elf)
    needs_by_code: dict[int, tuple[str, ...]] = {}  # an instruction's features depend only on its code
    counts: dict[str, int] = {}
    examples: dict[str, list[str]] = {}
    instructions = undecodable = 0
    for section in elf.iter_sections():
        if not section["sh_flags"] & 0x4 or section["sh_type"] == "SHT_NOBITS":  # SHF_EXECINSTR only
            continue
        decoder = Decoder(64, section.data(), ip=section["sh_addr"])
        for instruction in decoder:
            if instruction.is_invalid:
                undecodable += instruction.len
                continue
            instructions += 1
            needs = needs_by_code.get(instruction.code)
            if needs is None:
                needs = needs_by_code[instruction.code] = tuple(_archspec_names(instruction.cpuid_features(), feature_names))
            for feature in needs:
                counts[feature] = counts.get(feature, 0) + 1
                shown = examples.setdefault(feature, [])
                if len(shown) < EXAMPLES_PER_FEATURE:
                    where = bisect.bisect_right(addresses, instruction.ip) - 1
                    # Inside a known function only: a stripped library's nearest export says nothing.
                    inside = where >= 0 and instruction.ip < symbols[where][0]
                    symbol = f" <{_short(symbols[where][1])}>" if inside else ""
                    shown.append(f"{instruction.ip:#x}{symbol}: {instruction}")
    return LibraryAudit(name, len(data), architecture, True, "", instructions, undecodable,
                        dict(sorted(counts.items())), dict(sorted(examples.items())),
                        round(time.perf_counter() - started, 3))


def _short(symbol: str, limit: int = 64) -> str:
    return symbol if len(symbol) <= limit else symbol[:limit - 3] + "..."


def _archspec_names(features: list[int], names: dict[int, str]):
    for value in features:
        iced = names.get(value, str(value))
        if iced in X86_64_BASELINE or iced in IMPLIED_BY:
            continue
        # A feature archspec does not name stays visible under iced-x86's name, never dropped.
        yield ICED_TO_ARCHSPEC.get(iced, f"iced:{iced.lower()}")


def _audit_zip(path: Path, report: AuditReport) -> None:
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if member.is_dir():
                continue
            with archive.open(member) as handle:
                if handle.read(4) != ELF_MAGIC:
                    continue
            report.libraries.append(audit_elf(archive.read(member), f"{path}!{member.filename}"))


def _kind_by_suffix(path: Path):
    """The artifact kind a file's suffix names (pipeline/kinds.py), or None: a library, or no artifact."""
    return next((kind for kind in kinds.KINDS.values() if path.suffix == kind.suffix), None)


def _native_stamp(path: Path) -> dict[str, str]:
    """The stamp of an artifact that holds machine code (a folder: its model file); {} for any other file."""
    container, file = container_of(path)
    compiled = any(kind.native_code and kind.container == container.name for kind in kinds.KINDS.values())
    return container.read_stamp(file) if compiled else {}


def audit_path(path: str | Path) -> AuditReport:
    """Audit an artifact: a .pt2 (zip), an ELF library, an ONNX model, or a folder holding them."""
    path = Path(path)
    if not path.exists():
        raise AuditError(f"{path} does not exist")
    if path.is_dir():
        report = AuditReport(str(path), "folder")
        for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            inner = audit_path(child)
            report.libraries += inner.libraries
        if not report.libraries:
            report.note = "no native code inside the artifact folder"
        return report
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head == ELF_MAGIC:
        return AuditReport(str(path), "elf", [audit_elf(path.read_bytes(), str(path))])
    kind = _kind_by_suffix(path)
    if zipfile.is_zipfile(path):
        report = AuditReport(str(path), kind.container if kind is not None and kind.native_code else "zip")
        _audit_zip(path, report)
        if not report.libraries:
            report.note = "no native code inside the package"
        return report
    if kind is not None and not kind.native_code:
        return AuditReport(str(path), kind.container, note="no native code inside the artifact: an ONNX model is a graph; "
                           "onnxruntime picks its kernels by CPUID at run time, which verification checks on "
                           "the target's CPUs")
    return AuditReport(str(path), "other", note="no native code inside (not ELF, not a zip/.pt2, not ONNX)")


def check(report: AuditReport, allowed: list[str], target: str) -> list[str]:
    """Why the artifact's machine code exceeds the target, in words; [] when it does not."""
    problems = []
    for library in report.audited:
        over = sorted(set(library.features) - set(allowed))
        if not over:
            continue
        counted = ", ".join(f"{feature} ({library.features[feature]} instructions)" for feature in over)
        shown = "; ".join(example for feature in over for example in library.examples[feature][:2])
        problems.append(f"{library.name} needs CPU features outside target {target}: {counted}; e.g. {shown}")
    return problems


def describe(report: AuditReport, allowed: list[str] | None = None, target: str = "") -> str:
    lines = [f"audit of {report.artifact} ({report.kind})"]
    if report.note:
        lines.append(f"  {report.note}")
    for library in report.libraries:
        if not library.audited:
            lines.append(f"  NOT AUDITED {library.name}: {library.reason}")
            continue
        lines.append(f"  {library.name}: {library.instructions} instructions, {library.size_bytes / 1e6:.1f} MB, "
                     f"{library.seconds:.2f} s")
        for feature, count in library.features.items():
            mark = "  EXCEEDS" if allowed is not None and feature not in allowed else ""
            lines.append(f"    {feature:<22} {count:>8}{mark}   {library.examples[feature][0]}")
    if allowed is not None and report.audited:
        over = report.exceeding(allowed)
        lines.append(f"  target {target}: " + (f"EXCEEDED by {', '.join(over)}" if over else
                                                "within (every instruction uses only the target's features)"))
    return "\n".join(lines)


def stamped_features(path: Path) -> tuple[list[str] | None, str]:
    """The CPU features an artifact's own stamp allows (a .pt2 package's), and its target; (None, "") unstamped."""
    stamp = _native_stamp(path)
    if stamp:
        return json.loads(stamp["required_cpu_features"]), stamp["target_isa"]
    return None, ""


def verdict(report: AuditReport, allowed: list[str] | None) -> ExitCode:
    """The audit's exit code: OK within the allowed features (or none given, or nothing native inside), FAILED
    beyond them; NotVerified when there is native code but none of it x86-64."""
    if not report.audited:
        if report.libraries:
            raise NotVerified("not audited: no x86-64 library inside")
        return ExitCode.OK  # nothing native to audit: nothing can exceed the target
    return ExitCode.FAILED if allowed is not None and report.exceeding(allowed) else ExitCode.OK

"""What the host CPU has, and crash cases the tests make themselves.

The suite runs on Intel and AMD hosts, with and without AVX-512 or VNNI. A test never relies on how a
third-party wheel behaves under emulation: crash cases come from tiny programs and libraries compiled
here with `-mavx2` / `-mavx512f`. A test that truly needs a host feature uses `requires_host_features`,
which skips with the reason (docs/testing.md lists every such test).
"""
from __future__ import annotations

import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

# One instruction of each kind, run from a library's constructor or a program's main.
INSTRUCTIONS = {
    "avx2": "vpxor %%ymm0, %%ymm0, %%ymm0\\n\\tvpaddd %%ymm0, %%ymm0, %%ymm1\\n\\tvzeroupper",  # absent on Nehalem
    "avx512f": "vpxord %%zmm0, %%zmm0, %%zmm0\\n\\tvzeroupper",  # absent on Haswell (QEMU 7.2 has no AVX-512)
}


VNNI = frozenset({"avx512_vnni", "avx_vnni"})  # int8 dot products that accumulate in 32 bits


@cache
def host_features() -> frozenset[str]:
    from pipeline.guard.cpuid import host_features as read
    return frozenset(read())


def requires_host_features(*features: str, why: str = ""):
    """Skip unless this host's CPU (read by CPUID) has every one of `features`."""
    missing = sorted(set(features) - host_features())
    reason = f"needs a host CPU with {', '.join(features)}; this one lacks {', '.join(missing)}" + (f": {why}" if why else "")
    return pytest.mark.skipif(bool(missing), reason=reason)


def requires_any_host_feature(*features: str, why: str = ""):
    """Skip unless this host's CPU has at least one of `features`."""
    reason = f"needs a host CPU with one of {', '.join(features)}; this one has none" + (f": {why}" if why else "")
    return pytest.mark.skipif(not set(features) & host_features(), reason=reason)


def _compile(source: str, out: Path, flags: list[str]) -> Path:
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        pytest.fail("no C compiler on PATH: `make setup` installs gcc")
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([compiler, "-O1", *flags, "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def isa_program(folder: Path, isa: str = "avx2") -> Path:
    """A program that executes one `isa` instruction and exits 0: SIGILL on a CPU without it."""
    body = f'__asm__ volatile("{INSTRUCTIONS[isa]}" ::: "xmm0", "xmm1");'
    return _compile(f"int main(void) {{ {body} return 0; }}\n", folder / f"uses_{isa}", [f"-m{isa}"])


def isa_custom_op_library(folder: Path, isa: str = "avx2") -> Path:
    """An onnxruntime custom-operator library built for `isa` (as a vendor's would be with -m{isa}): its
    RegisterCustomOps executes an `isa` instruction and registers nothing. Registered by a verification
    child (verify.custom_op_libraries), it runs on a CPU with `isa` and dies with SIGILL on one without,
    whatever numpy or onnxruntime do on that CPU."""
    body = f'__asm__ volatile("{INSTRUCTIONS[isa]}" ::: "xmm0", "xmm1");'
    source = ("void *RegisterCustomOps(void *options, const void *api) {\n"
              f"    (void)options; (void)api; {body}\n    return 0;  /* NULL OrtStatus: success */\n}}\n")
    return _compile(source, folder / f"libuses_{isa}.so", [f"-m{isa}", "-shared", "-fPIC"])


@cache
def emulated_python_runs(qemu_cpu: str) -> bool:
    """Whether this interpreter with numpy and onnxruntime starts under `qemu-x86_64 -cpu qemu_cpu` on this
    host (third-party wheels differ here by host: numpy 2.4 was seen dying under Nehalem on one Xeon)."""
    import sys
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        return False
    result = subprocess.run([qemu, "-cpu", qemu_cpu, sys.executable, "-c", "import numpy, onnxruntime"],
                            capture_output=True, timeout=300)
    return result.returncode == 0


def requires_emulated_python(qemu_cpu: str):
    return pytest.mark.skipif(not emulated_python_runs(qemu_cpu), reason=(
        f"numpy or onnxruntime does not start under qemu-x86_64 -cpu {qemu_cpu} on this host, so no run there "
        f"can be compared"))

"""Read this CPU's features through the CPUID instruction (x86) or getauxval(AT_HWCAP) (64-bit Arm),
using only the standard library.

Why not /proc/cpuinfo: under QEMU user mode it shows the real host, while CPUID is emulated,
and the runtimes (numpy, onnxruntime, torch) dispatch on CPUID. Why not numpy's dispatch table:
numpy 2.4's own import dies with SIGILL on a Nehalem-class CPU, so a guard that imports numpy
would crash exactly where it must refuse. This module therefore executes a few bytes of machine
code through ctypes and must stay importable without any third-party package.

Feature names follow archspec's (the same names as Linux's /proc/cpuinfo flags).
"""
from __future__ import annotations

import ctypes
import mmap
import platform

# (leaf, subleaf, register, bit) -> archspec feature name. Bit positions are Intel SDM vol. 2A,
# table 3-8 ff.; only features that archspec uses for x86_64 microarchitectures are listed.
_CPUID_BITS: dict[str, tuple[int, int, str, int]] = {
    "sse3": (1, 0, "ecx", 0),
    "pclmulqdq": (1, 0, "ecx", 1),
    "ssse3": (1, 0, "ecx", 9),
    "fma": (1, 0, "ecx", 12),
    "cx16": (1, 0, "ecx", 13),
    "sse4_1": (1, 0, "ecx", 19),
    "sse4_2": (1, 0, "ecx", 20),
    "movbe": (1, 0, "ecx", 22),
    "popcnt": (1, 0, "ecx", 23),
    "aes": (1, 0, "ecx", 25),
    "xsave": (1, 0, "ecx", 26),
    "avx": (1, 0, "ecx", 28),
    "f16c": (1, 0, "ecx", 29),
    "rdrand": (1, 0, "ecx", 30),
    "mmx": (1, 0, "edx", 23),
    "sse": (1, 0, "edx", 25),
    "sse2": (1, 0, "edx", 26),
    "bmi1": (7, 0, "ebx", 3),
    "avx2": (7, 0, "ebx", 5),
    "bmi2": (7, 0, "ebx", 8),
    "avx512f": (7, 0, "ebx", 16),
    "avx512dq": (7, 0, "ebx", 17),
    "rdseed": (7, 0, "ebx", 18),
    "adx": (7, 0, "ebx", 19),
    "avx512ifma": (7, 0, "ebx", 21),
    "clflushopt": (7, 0, "ebx", 23),
    "clwb": (7, 0, "ebx", 24),
    "avx512cd": (7, 0, "ebx", 28),
    "sha_ni": (7, 0, "ebx", 29),
    "avx512bw": (7, 0, "ebx", 30),
    "avx512vl": (7, 0, "ebx", 31),
    "avx512vbmi": (7, 0, "ecx", 1),
    "avx512_vbmi2": (7, 0, "ecx", 6),
    "gfni": (7, 0, "ecx", 8),
    "vaes": (7, 0, "ecx", 9),
    "vpclmulqdq": (7, 0, "ecx", 10),
    "avx512_vnni": (7, 0, "ecx", 11),
    "avx512_bitalg": (7, 0, "ecx", 12),
    "avx512_vpopcntdq": (7, 0, "ecx", 14),
    "rdpid": (7, 0, "ecx", 22),
    "avx512_bf16": (7, 1, "eax", 5),
    "avx_vnni": (7, 1, "eax", 4),
    "xsaveopt": (0xD, 1, "eax", 0),
    "xsavec": (0xD, 1, "eax", 1),
    "lahf_lm": (0x80000001, 0, "ecx", 0),
    "abm": (0x80000001, 0, "ecx", 5),
}
READABLE_FEATURES = frozenset(_CPUID_BITS)

# AVX and AVX-512 also need the OS to save their registers (XCR0); a CPU bit alone is not enough.
_XCR0_AVX = 0b110
_XCR0_AVX512 = 0b11100110
_AVX512_FEATURES = {name for name in _CPUID_BITS if name.startswith("avx512")}
_AVX_FEATURES = {"avx", "avx2", "fma", "f16c", "vaes", "vpclmulqdq", "avx_vnni"}

# push rbx; mov r8,rdx; mov eax,edi; mov ecx,esi; cpuid; mov [r8],eax; mov [r8+4],ebx;
# mov [r8+8],ecx; mov [r8+12],edx; pop rbx; ret
_CPUID_CODE = bytes.fromhex("5349 89d0 89f8 89f1 0fa2 418900 41895804 41894808 4189500c 5b c3".replace(" ", ""))
# mov ecx,edi; xgetbv; shl rdx,32; or rax,rdx; ret
_XGETBV_CODE = bytes.fromhex("89f9 0f01d0 48c1e220 4809d0 c3".replace(" ", ""))


class _MachineCode:
    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(_CPUID_CODE + b"\x90" * (64 - len(_CPUID_CODE)) + _XGETBV_CODE)
        base = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self.cpuid = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(base)
        self.xgetbv = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_uint32)(base + 64)


def _registers(code: _MachineCode, leaf: int, subleaf: int) -> dict[str, int]:
    out = (ctypes.c_uint32 * 4)()
    code.cpuid(leaf, subleaf, out)
    return dict(zip(("eax", "ebx", "ecx", "edx"), out))


# 64-bit Arm: the kernel's HWCAP bits (arch/arm64/include/uapi/asm/hwcap.h), read by getauxval as
# onnxruntime's and numpy's Arm detection do; names as in /proc/cpuinfo's Features line = archspec's.
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
                "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
_HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm "
                 "svebf16 i8mm bf16 dgh rng bti mte").split()
ARM_READABLE_FEATURES = frozenset(_HWCAP_NAMES + _HWCAP2_NAMES)
# Every feature name a stamp may require: one this guard cannot read is one no CPU will show it.
KNOWN_FEATURES = READABLE_FEATURES | ARM_READABLE_FEATURES


def arm_hwcaps() -> tuple[int, int]:
    """(AT_HWCAP, AT_HWCAP2) of this process: under qemu-aarch64, those of the emulated -cpu model."""
    libc = ctypes.CDLL(None)
    libc.getauxval.restype, libc.getauxval.argtypes = ctypes.c_ulong, [ctypes.c_ulong]
    return libc.getauxval(_AT_HWCAP), libc.getauxval(_AT_HWCAP2)


def arm_features(hwcap: int, hwcap2: int) -> frozenset[str]:
    return frozenset([name for bit, name in enumerate(_HWCAP_NAMES) if hwcap >> bit & 1]
                     + [name for bit, name in enumerate(_HWCAP2_NAMES) if hwcap2 >> bit & 1])


def host_features() -> frozenset[str]:
    """Features of the CPU this process runs on (the emulated one under QEMU), archspec names."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return arm_features(*arm_hwcaps())
    if machine not in ("x86_64", "amd64"):
        return frozenset()
    code = _MachineCode()
    max_leaf = _registers(code, 0, 0)["eax"]
    max_extended = _registers(code, 0x80000000, 0)["eax"]
    cache: dict[tuple[int, int], dict[str, int]] = {}
    present = set()
    for name, (leaf, subleaf, register, bit) in _CPUID_BITS.items():
        if leaf > (max_extended if leaf >= 0x80000000 else max_leaf):
            continue
        registers = cache.setdefault((leaf, subleaf), _registers(code, leaf, subleaf))
        if registers[register] >> bit & 1:
            present.add(name)
    osxsave = _registers(code, 1, 0)["ecx"] >> 27 & 1
    xcr0 = code.xgetbv(0) if osxsave else 0
    if xcr0 & _XCR0_AVX != _XCR0_AVX:
        present -= _AVX_FEATURES | _AVX512_FEATURES
    elif xcr0 & _XCR0_AVX512 != _XCR0_AVX512:
        present -= _AVX512_FEATURES
    return frozenset(present)


if __name__ == "__main__":
    print(" ".join(sorted(host_features())))

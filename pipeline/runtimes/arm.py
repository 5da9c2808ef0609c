"""64-bit Arm runtimes on an x86 machine: an arm64 Debian sysroot plus aarch64 wheels, run by qemu-aarch64.

    quantgate arm [--requirements 'onnxruntime==1.32.0 numpy==2.4.6']   # prepare (once) and print

A deployment profile on Arm is a QEMU Arm CPU model plus a runtime spec; a child runs as

    qemu-aarch64 -cpu cortex-a72 -L SYSROOT -E PYTHONPATH=SITE:REPO SYSROOT/usr/bin/python3.11 -m pipeline.verify.child_onnx ...

Prepared once and cached under `~/.cache/quantgate/arm64/` (QUANTGATE_ARM_CACHE overrides the root):

- `sysroot-<key>/`: `debootstrap --arch=arm64 --variant=minbase --foreign --include=python3 bookworm DIR MIRROR`
  (MIRROR read from this machine's apt sources), then `dpkg-deb -x` of every downloaded package into DIR: no
  second stage, no chroot; QEMU's `-L` finds the Arm loader and libraries there.
- `site-<key>/`: `pip download --only-binary=:all: --platform manylinux_2_28_aarch64 --platform
  manylinux2014_aarch64 --python-version 3.11 --implementation cp REQUIREMENTS`, each wheel unzipped onto one
  folder used as PYTHONPATH (no pip, no venv inside the emulated interpreter).

Each folder is built beside its final name and renamed into place with a COMPLETE marker last, under a lock;
a folder without the marker is half-built and rebuilt.

Why the sysroot carries `/sys/devices/system/cpu` and `/proc/cpuinfo` of its own: QEMU user mode passes the
host's through, so onnxruntime >= 1.2x's CPU detection (pytorch/cpuinfo) reads an x86 /proc/cpuinfo and the
host's sysfs topology and dies with SIGSEGV on import (measured: 1.32.0 under QEMU 7.2). QEMU's `-L PREFIX`
looks every absolute path up under PREFIX first, so an Arm-shaped copy inside the sysroot is what the guest
sees: no mount namespace needed, and onnxruntime 1.32.0 imports and runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from pipeline.errors import QuantgateError
from pipeline.progress import say
from pipeline.runtimes.cache import COMPLETE, build_once
from pipeline.runtimes.venvs import Runtime
from pipeline.paths import code_root

QEMU_AARCH64 = "qemu-aarch64"
SUITE = "bookworm"  # Debian 12: python3.11, matching the wheels' cp311 tag
GUEST_PYTHON = "usr/bin/python3.11"
PYTHON_TAG = "3.11"
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64")  # bookworm's glibc 2.36 takes both
SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
# What onnxruntime's cpuinfo parser expects from an Arm Linux: one Cortex-A72-shaped core. Features here are
# informational only; runtimes dispatch on AT_HWCAP, which QEMU sets from its -cpu model.
FAKE_CPUINFO = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd aes pmull sha1 sha2 crc32 cpuid\n"
                "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
                "CPU revision\t: 3\n\n")
FAKE_SYSFS = {"kernel_max": "0", "possible": "0", "present": "0", "online": "0",
              "cpu0/topology/physical_package_id": "0", "cpu0/topology/core_id": "0",
              "cpu0/topology/cluster_cpus_list": "0", "cpu0/topology/core_siblings_list": "0",
              "cpu0/topology/thread_siblings_list": "0"}


def cache_root() -> Path:
    if os.environ.get("QUANTGATE_ARM_CACHE"):
        return Path(os.environ["QUANTGATE_ARM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quantgate" / "arm64"


def _key(spec: dict) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


# --- the Debian mirror, from this machine's apt sources ------------------------------------------------
def apt_mirror(sources=SOURCES) -> str:
    """The first Debian archive URI in the apt sources (one-line or deb822 format), security archives last."""
    files = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files += sorted(p for p in source.iterdir() if p.suffix in (".list", ".sources"))
        elif source.is_file():
            files.append(source)
    uris = []
    for path in files:
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes").lower() != "no":
                    uris += fields.get("URIs", "").split()
        else:
            uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    uris = [uri.rstrip("/") for uri in uris if uri.startswith(("http://", "https://", "file:/"))]
    debian = [uri for uri in uris if "security" not in uri]
    if not debian:
        raise QuantgateError(f"no Debian mirror found in the apt sources ({', '.join(map(str, sources))}); "
                             f"an arm64 sysroot needs one: add a `deb` line or a .sources file")
    return debian[0]


def _run(command: list[str], what: str, progress, prefixes=()) -> None:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in process.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-12:]
        if line.startswith(prefixes):
            words = line.strip()
            if words.startswith("Saved "):  # pip download: the wheel's name is the news, not the temp path
                words = "downloaded " + words.rsplit("/", 1)[-1]
            progress(f"arm64: {words[:150]}")
    if process.wait() != 0:
        raise QuantgateError(f"arm64: {what} failed (exit {process.returncode}): `{' '.join(command)}`: "
                             + " | ".join(l for l in tail if l.strip())[-600:])


def sysroot(progress=say, mirror: str | None = None) -> Path:
    """The arm64 Debian root (built once): QEMU's -L prefix and the interpreter at usr/bin/python3.11."""
    folder = cache_root() / f"sysroot-{_key({'suite': SUITE, 'variant': 'minbase', 'include': 'python3', 'fake_cpu': 1})}"
    if (folder / COMPLETE).is_file():
        return folder
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise QuantgateError("debootstrap is not on PATH, so no arm64 sysroot can be built for the Arm CPU profiles: "
                             "`apt-get install -y debootstrap` (or `make setup`)")
    mirror = mirror or apt_mirror()

    def build(tmp: Path) -> dict:
        progress(f"arm64: building a Debian {SUITE} arm64 sysroot from {mirror} in {folder} (once; later runs reuse it)")
        _run([debootstrap, "--arch=arm64", "--variant=minbase", "--foreign", "--include=python3", SUITE, str(tmp), mirror],
             "debootstrap", progress, ("I: Retrieving Packages", "I: Resolving", "I: Extracting base", "E:", "W: Failure"))
        debs = sorted((tmp / "var/cache/apt/archives").glob("*.deb"))
        progress(f"arm64: unpacking {len(debs)} packages with dpkg-deb -x")
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True)
            deb.unlink()  # 40 MB of .debs the sysroot no longer needs
        if not (tmp / GUEST_PYTHON).is_file():
            raise QuantgateError(f"arm64: debootstrap finished but {GUEST_PYTHON} is missing in {tmp}")
        (tmp / "proc").mkdir(exist_ok=True)
        (tmp / "proc/cpuinfo").write_text(FAKE_CPUINFO)
        for name, value in FAKE_SYSFS.items():
            path = tmp / "sys/devices/system/cpu" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(value + "\n")
        return {"suite": SUITE, "mirror": mirror, "packages": [d.name for d in debs]}

    record = build_once(folder, build, "arm64", progress)
    if record["status"] == "built":
        progress(f"arm64: Debian {SUITE} arm64 sysroot ready in {record['seconds']:.1f} s ({folder})")
    return folder


def arm_requirements(runtime: Runtime) -> list[str]:
    """pip lines for the Arm side of a runtime: `pinned` means this venv's own onnxruntime and numpy versions."""
    if runtime.requirements:
        return list(runtime.requirements)
    return [f"onnxruntime=={metadata.version('onnxruntime')}", f"numpy=={metadata.version('numpy')}"]


def site(requirements: list[str], progress=say) -> Path:
    """aarch64 wheels for `requirements`, unzipped onto one folder (built once): the guest's PYTHONPATH."""
    spec = {"python": PYTHON_TAG, "platforms": PLATFORMS, "requirements": sorted(requirements)}
    folder = cache_root() / f"site-{_key(spec)}"
    if (folder / COMPLETE).is_file():
        return folder

    def build(tmp: Path) -> dict:
        progress(f"arm64: downloading aarch64 wheels for {' '.join(requirements)} into {folder} (once)")
        wheels = tmp / "wheels"
        command = [sys.executable, "-m", "pip", "download", "--no-input", "--progress-bar", "off", "--only-binary=:all:",
                   *[arg for platform in PLATFORMS for arg in ("--platform", platform)], "--python-version", PYTHON_TAG,
                   "--implementation", "cp", "-d", str(wheels), *requirements]
        _run(command, f"pip download of aarch64 wheels for {' '.join(requirements)}", progress, ("Saved", "Collecting"))
        found = sorted(wheels.glob("*.whl"))
        for wheel in found:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(tmp / "site")
        for wheel in found:  # zipfile drops the executable bit; the loader needs none, but keep .so readable
            wheel.unlink()
        wheels.rmdir()
        return {"requirements": requirements, "wheels": [w.name for w in found]}

    record = build_once(folder, build, "arm64", progress)
    if record["status"] == "built":
        progress(f"arm64: aarch64 wheels ({' '.join(requirements)}) ready in {record['seconds']:.1f} s ({folder})")
    return folder


# --- a prepared Arm runtime, shaped like pipeline.runtimes.venvs.RuntimeEnv --------------------------------------
@dataclass
class ArmEnv:
    runtime: Runtime
    python: str  # the guest interpreter, run by qemu-aarch64
    limits: dict  # pipeline.guard.probe.probe() run under qemu-aarch64
    folder: str
    emulator_args: list[str]  # after `qemu-aarch64 -cpu MODEL`: -L SYSROOT -E PYTHONPATH=...
    install: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"name": self.runtime.name, "requirements": arm_requirements(self.runtime), "python": self.python,
                "env": self.folder, "sysroot": self.emulator_args[1], "versions": self.limits["versions"],
                "max_ir_version": self.limits["max_ir_version"], "max_opsets": self.limits["max_opsets"],
                "limits_source": self.limits["source"], "install": self.install, "family": "aarch64"}


def qemu() -> str:
    found = shutil.which(QEMU_AARCH64)
    if found is None:
        raise QuantgateError(f"{QEMU_AARCH64} is not on PATH, so no Arm CPU can be emulated: `apt-get install -y qemu-user`")
    return found


def prepare(runtime: Runtime, progress=say, probe_cpu: str = "cortex-a72") -> ArmEnv:
    """Sysroot + wheels for `runtime` (each built once), checked by running the runtime probe under QEMU:
    onnxruntime must import there, and it says which IR version and opsets it loads."""
    started = time.monotonic()
    qemu_path = qemu()
    root, packages = sysroot(progress), site(arm_requirements(runtime), progress)
    args = ["-L", str(root), "-E", f"PYTHONPATH={packages / 'site'}:{code_root()}"]
    limits_file = packages / f"limits-{probe_cpu}.json"
    if limits_file.is_file():
        limits = json.loads(limits_file.read_text())
    else:
        command = [qemu_path, "-cpu", probe_cpu, *args, str(root / GUEST_PYTHON), "-m", "pipeline.guard.probe"]
        result = subprocess.run(command, cwd=code_root(), capture_output=True, text=True, timeout=300)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            died = f"killed by signal {-result.returncode}" if result.returncode < 0 else f"exit {result.returncode}"
            raise QuantgateError(f"arm64: onnxruntime ({' '.join(arm_requirements(runtime))}) does not import under "
                                 f"{QEMU_AARCH64} -cpu {probe_cpu} ({died}): {lines[-1] if lines else '(no output)'}")
        limits = json.loads(result.stdout.strip().splitlines()[-1])
        limits_file.write_text(json.dumps(limits) + "\n")
    install = {"sysroot": json.loads((root / "install.json").read_text()),
               "site": json.loads((packages / "install.json").read_text()),
               "prepare_seconds": round(time.monotonic() - started, 1)}
    return ArmEnv(runtime, str(root / GUEST_PYTHON), limits, str(packages), args, install)

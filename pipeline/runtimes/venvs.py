"""Runtime stacks: the software half of a deployment profile (the CPU is the other half).

A runtime is a list of pip requirement lines (`conf/runtime/*.yaml`). `pinned` (no requirements) is
this project's own venv. Any other runtime is prepared once as a virtual environment under
`~/.cache/quantgate/runtimes/<sha256 of python version + requirements>/` (QUANTGATE_RUNTIME_CACHE
overrides the root) and reused; a `COMPLETE` marker written last plus a probe that imports
onnxruntime on every use detect a half-built or broken cache, which is then rebuilt. The child
processes that run there import only the stdlib, numpy, onnxruntime and this repository's
`pipeline.guard` / `verify_child` / `runtime_probe` (found through PYTHONPATH / the working folder).

The build also asks the runtime what it loads (`pipeline.guard.probe`) and fits the exported
ONNX to it: a lower IR version, onnx's version converter for the opset, or an error naming the
operator that has no older version.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import QuantgateError
from pipeline.guard.probe import probe
from pipeline.manifest import atomic_write_bytes
from pipeline.progress import say
from pipeline.runtimes.cache import build_once
from pipeline.paths import CONF_DIR, code_root

PINNED = "pinned"
CUSTOM = "custom"


def cache_root() -> Path:
    if os.environ.get("QUANTGATE_RUNTIME_CACHE"):
        return Path(os.environ["QUANTGATE_RUNTIME_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "quantgate" / "runtimes"


@dataclass(frozen=True)
class Runtime:
    name: str
    requirements: tuple[str, ...] = ()  # empty = the project's own venv

    @property
    def pinned(self) -> bool:
        return not self.requirements

    @property
    def key(self) -> str:
        # The interpreter is part of the key: a venv is built on it and wheels are per Python version.
        spec = {"python": f"{sys.version_info.major}.{sys.version_info.minor}", "requirements": sorted(self.requirements)}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()

    @property
    def folder_suffix(self) -> str:
        """What a build for this runtime adds to its artifact folder's name, so it never overwrites the
        default build: nothing when pinned, the profile's name (`-ort116`), or for pip lines
        `-custom-<first 8 hex of sha256 of the sorted lines, one per line>` (the Makefile computes the same)."""
        if self.pinned:
            return ""
        if self.name != CUSTOM:
            return f"-{self.name}"
        lines = "".join(f"{line}\n" for line in sorted(self.requirements))
        return f"-{CUSTOM}-{hashlib.sha256(lines.encode()).hexdigest()[:8]}"

    def label(self) -> str:
        return f"{self.name} ({' '.join(self.requirements)})" if self.requirements else f"{self.name} (this venv)"


def shipped_runtimes() -> dict[str, Runtime]:
    """The runtime profiles in conf/runtime/ (custom.yaml is the slot for RUNTIME='pip lines')."""
    from omegaconf import OmegaConf
    found = {}
    for path in sorted((CONF_DIR / "runtime").glob("*.yaml")):
        node = OmegaConf.load(path)
        if path.stem != CUSTOM:
            found[path.stem] = Runtime(path.stem, tuple(node.get("requirements") or ()))
    return found


def resolve(node) -> Runtime:
    """cfg.runtime (None = pinned) as a Runtime. A custom spec whose lines all appear in a shipped
    profile is that profile: RUNTIME=onnxruntime==1.16.3 is ort116, with the numpy it needs."""
    if node is None:
        return Runtime(PINNED)
    runtime = Runtime(str(node.name), tuple(str(line).strip() for line in node.requirements if str(line).strip()))
    if runtime.name == CUSTOM:
        if not runtime.requirements:
            raise QuantgateError("runtime=custom needs runtime.requirements (pip lines), e.g. "
                                 "RUNTIME='onnxruntime==1.17.3 numpy<2'")
        for shipped in shipped_runtimes().values():
            if shipped.requirements and set(runtime.requirements) <= set(shipped.requirements):
                return shipped
    return runtime


def parse(reference: str) -> Runtime:
    """A runtime named in verify.profiles (`haswell@ort116`): a shipped name or pip lines."""
    shipped = shipped_runtimes()
    if reference in shipped:
        return shipped[reference]
    if not any(sign in reference for sign in "=<>"):
        raise QuantgateError(f"unknown runtime {reference!r}; runtime profiles: {', '.join(shipped)}, "
                             f"or pip requirement lines such as onnxruntime==1.16.3")
    lines = tuple(reference.replace(",", " ").split())
    return resolve(_Node(CUSTOM, lines))


@dataclass
class _Node:
    name: str
    requirements: tuple


@dataclass
class RuntimeEnv:
    """A prepared runtime: the interpreter that runs children there and what that runtime loads."""

    runtime: Runtime
    python: str
    limits: dict  # pipeline.guard.probe.probe(): versions, max_ir_version, max_opsets
    folder: str | None = None
    install: dict = field(default_factory=dict)  # what was installed, how long it took, or "reused"

    def record(self) -> dict:
        return {"name": self.runtime.name, "requirements": list(self.runtime.requirements), "python": self.python,
                "env": self.folder, "versions": self.limits["versions"], "max_ir_version": self.limits["max_ir_version"],
                "max_opsets": self.limits["max_opsets"], "limits_source": self.limits["source"],
                "install": self.install}


_pinned_limits: dict | None = None


def prepare(runtime: Runtime, progress=say) -> RuntimeEnv:
    """The environment for `runtime`, built (once) or reused from the cache; verified by a probe."""
    global _pinned_limits
    if runtime.pinned:
        if _pinned_limits is None:
            _pinned_limits = probe()
        return RuntimeEnv(runtime, sys.executable, _pinned_limits, install={"status": "this venv"})
    folder = cache_root() / runtime.key[:16]
    probed: dict = {}

    def check(folder: Path) -> str | None:  # the probe imports onnxruntime: it is also the health check
        probed["limits"], error = _probe(folder)
        return None if probed["limits"] is not None else error

    def build(folder: Path) -> dict:
        record, probed["limits"] = _build(runtime, folder, progress)
        return record

    record = build_once(folder, build, f"runtime {runtime.name}", progress, check=check, in_place=True)
    if record["status"] == "built":
        limits = probed["limits"]
        progress(f"runtime {runtime.name}: ready in {record['seconds']:.1f} s (onnxruntime "
                 f"{limits['versions']['onnxruntime']}, numpy {limits['versions'].get('numpy')}; loads IR <= "
                 f"{limits['max_ir_version']}, ai.onnx opset <= {limits['max_opsets']['']})")
    return RuntimeEnv(runtime, str(_python(folder)), probed["limits"], str(folder), record)


def _python(folder: Path) -> Path:
    return folder / "venv" / "bin" / "python"


def _probe(folder: Path) -> tuple[dict | None, str]:
    """Run the probe inside the environment: it imports onnxruntime, so it is also the health check."""
    result = subprocess.run([str(_python(folder)), "-m", "pipeline.guard.probe"], cwd=code_root(),
                            env={**os.environ, "PYTHONPATH": str(code_root())}, capture_output=True, text=True,
                            timeout=120)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout or f"exit code {result.returncode}").strip().splitlines()
        return None, lines[-1] if lines else f"exit code {result.returncode}"
    return json.loads(result.stdout.strip().splitlines()[-1]), ""


def _pip_install(folder: Path, requirements: list[str], progress, label: str) -> None:
    command = [str(_python(folder)), "-m", "pip", "install", "--progress-bar", "off", "--no-input", *requirements]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail = []
    for line in process.stdout:
        line = line.rstrip()
        tail = (tail + [line])[-10:]
        if line.startswith(("Collecting", "Downloading", "Installing collected", "Successfully installed")):
            progress(f"runtime {label}: {line.strip()[:150]}")
    if process.wait() != 0:
        raise QuantgateError(f"runtime {label}: `pip install {' '.join(requirements)}` failed: "
                             + " | ".join(l for l in tail if l.strip())[-400:])


def _build(runtime: Runtime, folder: Path, progress) -> tuple[dict, dict]:
    """A venv in `folder` with the runtime's requirements: (install record, the probe's limits)."""
    progress(f"runtime {runtime.name}: building a virtual environment for {' '.join(runtime.requirements)} "
             f"in {folder} (once; later runs reuse it)")
    subprocess.run([sys.executable, "-m", "venv", str(folder / "venv")], check=True)
    _pip_install(folder, list(runtime.requirements), progress, runtime.name)
    added = []
    limits, error = _probe(folder)
    # Older onnxruntime wheels were built against NumPy 1.x but do not cap numpy: the runtime itself
    # says so when it fails to import, so cap it rather than keep a table of which releases need it.
    if limits is None and ("NumPy 1.x" in error or "_ARRAY_API" in error or "numpy.core.multiarray" in error) \
            and not any(line.startswith("numpy") for line in runtime.requirements):
        progress(f"runtime {runtime.name}: onnxruntime does not import with numpy 2 ({error}); adding numpy<2")
        _pip_install(folder, ["numpy<2"], progress, runtime.name)
        added.append("numpy<2")
        limits, error = _probe(folder)
    if limits is None:
        raise QuantgateError(f"runtime {runtime.label()}: onnxruntime does not import in the new environment "
                             f"{folder}: {error}")
    freeze = subprocess.run([str(_python(folder)), "-m", "pip", "freeze"], capture_output=True, text=True).stdout
    return {"requirements": list(runtime.requirements), "added": added, "installed": freeze.split()}, limits


# --- fitting an ONNX model to what a runtime loads ---------------------------------------------------
def fit_model(model, limits: dict, what: str):
    """`model` (onnx.ModelProto) lowered to the runtime's IR version and opsets; returns (model, changes).

    Raises QuantgateError naming the operators that have no version the runtime loads."""
    import onnx
    from onnx import version_converter

    version = limits["versions"]["onnxruntime"]
    opsets = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    changes = []
    for domain, opset in opsets.items():
        limit = limits["max_opsets"].get(domain)
        if domain and limit is not None and opset > limit:  # onnx converts only the default domain
            ops = sorted({n.op_type for n in model.graph.node if n.domain == domain})
            raise QuantgateError(f"{what} imports {domain} opset {opset} (operators {', '.join(ops)}); onnxruntime "
                                 f"{version} loads at most {limit} and onnx cannot convert that domain")
    limit = limits["max_opsets"][""]
    if opsets.get("", 0) > limit:
        blockers = _ops_newer_than(model, limit)
        if blockers:
            raise QuantgateError(f"no export of {what} loads in onnxruntime {version}: it loads ai.onnx opset <= "
                                 f"{limit}, but {'; '.join(blockers)}")
        try:
            model = version_converter.convert_version(model, limit)
        except Exception as error:  # the converter asserts in C++ and names the operator
            raise QuantgateError(f"no export of {what} loads in onnxruntime {version}: onnx's version converter "
                                 f"cannot take opset {opsets['']} down to {limit}: "
                                 f"{str(error).strip().splitlines()[-1]}") from None
        changes.append(f"ai.onnx opset {opsets['']} -> {limit}")
    # The lowest IR version these opsets need, from onnx's published release table (VERSION_TABLE).
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if needed > limits["max_ir_version"]:
        raise QuantgateError(f"{what} needs IR version {needed} for its opsets; onnxruntime {version} loads at most "
                             f"{limits['max_ir_version']}")
    if model.ir_version > limits["max_ir_version"]:
        changes.append(f"IR version {model.ir_version} -> {limits['max_ir_version']}")
        model.ir_version = limits["max_ir_version"]
    if changes:
        try:  # a lower IR version must not carry newer features (e.g. 4-bit types, IR 10)
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as error:
            raise QuantgateError(f"{what} cannot be written as IR version {model.ir_version} for onnxruntime "
                                 f"{version}: {str(error).strip().splitlines()[0]}") from None
    return model, changes


def _ops_newer_than(model, limit: int) -> list[str]:
    """Default-domain operators with no version at or below `limit`, with the opset they appeared in."""
    import onnx.defs
    first = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in ("", "ai.onnx"):
            first[schema.name] = min(first.get(schema.name, 10**6), schema.since_version)
    used = {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")}
    return [f"{op} exists only from opset {first[op]}" for op in sorted(used) if first.get(op, 0) > limit]


def fit_file(path, limits: dict, what: str) -> list[str]:
    """fit_model on a file in place (atomically); the list of changes made."""
    import onnx
    model, changes = fit_model(onnx.load(str(path)), limits, what)
    if changes:
        atomic_write_bytes(path, model.SerializeToString(deterministic=True))
    return changes

"""The typed manifest of a build (manifest.json: docs/schemas/manifest.schema.json), sha256 helpers and atomic
file writes."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.guard.signature import sha256_file  # noqa: F401 (one implementation, shared with the guard)
from pipeline.jsonfiles import read_json

MANIFEST_SCHEMA = "quantgate.manifest/1"
MANIFEST_FILE = "manifest.json"
REFERENCE_OUTPUTS_FILE = "reference_outputs.npz"  # export=aoti: the fp32 torch model's outputs on heldout.npz

DEBUG_DIR = "debug"  # debug-only files of an artifact folder (pipeline/builder/reproducible.py)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_bytes(path: str | Path, data: bytes, mode: int | None = None) -> None:
    """Write to a temp file in the same folder, fsync, then rename: readers never see half a file. `mode`: the
    file's permissions (default: an ordinary file's, by the umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())  # mkstemp makes 0600; artifacts are ordinary
        os.replace(tmp, path)
    except OSError as error:  # a full disk says ENOSPC and no path: name the file it could not write
        Path(tmp).unlink(missing_ok=True)
        if error.filename is None:
            error.filename = str(path)
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def artifact_folders(root: str | Path) -> list[Path]:
    """The published artifact folders under `root` (a release): each with a manifest.json, never a hidden one (a
    build's `.NAME.staging-*`, a kept `.NAME.rejected-*`: not artifacts of the release)."""
    return sorted(p.parent for p in Path(root).glob(f"*/{MANIFEST_FILE}") if not p.parent.name.startswith("."))


@dataclass
class FileRecord:
    path: str  # relative to the artifact folder
    sha256: str
    size_bytes: int


@dataclass
class CalibrationRecord:
    dataset: str
    split: str
    n: int
    n_heldout: int
    method: str
    sha256: str
    heldout_sha256: str
    seed: int
    indices: list[int] = field(default_factory=list)
    heldout_indices: list[int] = field(default_factory=list)


@dataclass
class QuantizationRecord:
    mode: str
    quant_format: str
    weight_type: str
    activation_type: str
    per_channel: bool
    reduce_range: bool
    calibration_method: str | None = None
    # A static build's nodes quantized dynamically (pipeline/builder/quantize.py): fused Attention and
    # EmbedLayerNormalization (QDQ has no rule for them), and MatMuls the accuracy gate took out of static int8.
    dynamic_nodes: list[str] = field(default_factory=list)
    # The fused graph's SkipLayerNormalizations the int8 graph runs as Add + LayerNormalization (faster kernels).
    layer_norms_split: int = 0
    # Inputs of fp32 operators (a residual Add) that read an activation itself, not the int8-rounded copy that static
    # QDQ hands to every consumer of an activation an int8 operator reads (pipeline/builder/qdq.py).
    fp32_inputs_unrounded: int = 0
    # What the int8 graph holds, counted after quantization (pipeline/builder/graph_counts.py GraphCounts.as_stamp):
    # weights int8 / per channel / quantized at run time / fp32, compute nodes int8 / fp32. Null for a .pt2.
    graph_counts: dict[str, int] | None = None
    # Convolutions a static build kept fp32: their reduction is below mode.conv_min_reduction (an RGB stem).
    fp32_convs: list[str] = field(default_factory=list)
    # If/Loop/Scan bodies with compute nodes (pipeline/builder/int8_nodes.py): path -> {compute_nodes, int8_nodes,
    # fp32_reason when none runs int8}.
    subgraphs: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class FallbackRecord:
    """The accuracy gate's work: nodes taken out of the mode's quantizer and the metric after each step. In a static
    build its MatMuls among them run dynamic int8 (`dynamic_nodes`); every other excluded node stays fp32."""

    budget: str
    excluded_nodes: list[str] = field(default_factory=list)
    dynamic_nodes: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    within_budget: bool = True


@dataclass
class FusionRecord:
    """The fused fp32 graph (model.fuse, pipeline/builder/fuse.py): the tool, the fused operators it wrote, and
    those it left unfused with the reason."""

    tool: str
    num_heads: int
    hidden_size: int
    operators: dict[str, int] = field(default_factory=dict)  # fused operator -> count
    left_unfused: list[str] = field(default_factory=list)  # "Attention (quantize_static's QDQ rules ...)"


@dataclass
class SpeedRecord:
    """What int8 bought on the build host (pipeline/builder/speed.py): per batch, p50 of int8 and fp32 and the median
    of their per-round ratios with its 95% interval; the size ratio; the verdict and its words."""

    threads: int
    size_ratio: float
    # batch -> {"fp32_p50_ms", "int8_p50_ms", "ratio", "low", "high", "rounds"}
    latency: dict[str, dict[str, float]] = field(default_factory=dict)
    # faster | within_noise | slower | too_small_to_time, at the first batch
    verdict: str = ""
    # what int8 costs, in words with its cause ("slower", "larger" -> words); the build printed them as warnings
    warnings: dict[str, str] = field(default_factory=dict)
    # where int8's time goes when it is slower: op type -> share of kernel time (onnxruntime's profiler)
    int8_share_by_op_type: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # what measuring cost


@dataclass
class ModeChoiceRecord:
    """mode=auto (pipeline/builder/auto.py): the mode chosen, why, and each candidate built: its validation figures,
    whether it held the accuracy budget, its speed (a SpeedRecord's JSON) and why it was not kept."""

    requested: str
    chosen: str
    reason: str
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Both within budget and the graph undecided: static over dynamic timed in one interleaved loop (paired ratio).
    static_vs_dynamic: dict[str, float] | None = None


@dataclass
class BuildRecord:
    time_utc: str
    host: str
    host_microarchitecture: str
    host_cpu_features: list[str]
    seconds: float = 0.0
    config_overrides: list[str] = field(default_factory=list)
    # Wall seconds of each build stage in order ("export", "calibrate", "quantize", "gate", "stamp", "verify").
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class Manifest:
    """Everything a build produced, in one record that each stage extends and returns."""

    name: str  # <model>-<mode>-<target>
    model: str
    mode: str
    target: str
    artifact_dir: str
    schema: str = MANIFEST_SCHEMA
    model_file: str = "model.onnx"
    reference_file: str = "reference.onnx"
    heldout_file: str = "heldout.npz"
    validation_file: str = "validation.npz"
    calibration_file: str = "calibration.npz"
    calibration_report_file: str = "calibration_report.json"
    model_kind: str = "embedding"  # embedding | classifier
    source_model: str = ""
    source_weights_sha256: str = ""
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    # Where the examples lie in each input and output ({"inputs": {name: axis or null}, "outputs": {...}};
    # pipeline/layout.py); empty: axis 0 everywhere.
    batch_axes: dict[str, dict[str, int | None]] = field(default_factory=dict)
    # How a `sentence_embedding` output is pooled and normalised, and where that was read
    # (pipeline/builder/sentence_head.py): "cls pooling, not normalised (bge/modules.json)"; "" for other outputs.
    sentence_embedding: str = ""
    opset: int = 0
    required_cpu_features: list[str] = field(default_factory=list)
    calibration: CalibrationRecord | None = None
    quantization: QuantizationRecord | None = None
    # Metrics on the validation split (build-time gate) and the held-out split (fp32 reference).
    fp32_metrics: dict[str, float] = field(default_factory=dict)
    int8_metrics: dict[str, float] = field(default_factory=dict)
    coverage_status: str = ""
    fallback: FallbackRecord | None = None
    fusion: FusionRecord | None = None  # null: the reference is the export as is (model.fuse=false, a CNN)
    qat: dict[str, Any] = field(default_factory=dict)
    speed: SpeedRecord | None = None  # null: not measured (speed.enabled=false, or built before it was)
    mode_choice: ModeChoiceRecord | None = None  # null: the mode was given (mode=dynamic|static|qat)
    # The runtime built for (pipeline.runtimes.venvs.RuntimeEnv.record): versions, what it loads, its venv.
    runtime: dict[str, Any] = field(default_factory=dict)
    stamp: dict[str, str] = field(default_factory=dict)
    config_sha256: str = ""
    build: BuildRecord | None = None
    files: list[FileRecord] = field(default_factory=list)
    # Debug-only files (debug/: the exporters' per-node metadata, pipeline/builder/reproducible.py): listed with
    # their sha256 for reference, but not part of the artifact: dropping them is not tampering.
    debug_files: list[FileRecord] = field(default_factory=list)
    reference_size_bytes: int = 0
    # Where reference.onnx came from (pipeline/builder/reference_cache.py): "built" (exported, then cached),
    # "reused" (the cached export of the same checkpoint, config, versions and code), "off" (exported, not cached).
    reference_cache: str = ""
    model_size_bytes: int = 0
    model_sha256: str = ""
    # Set by the verify stage after the folder is published; verify.json holds the details.
    verify_status: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.artifact_dir)

    def path(self, relative: str) -> Path:
        return self.folder / relative

    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        # The folder is wherever it lies now (a build writes it under a staging name first).
        payload.pop("artifact_dir")
        payload.pop("verify_status")
        return payload

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> "Manifest":
        """A manifest from its JSON (valid against docs/schemas/manifest.schema.json) and its `artifact_dir`."""
        nested = {"calibration": CalibrationRecord, "quantization": QuantizationRecord, "build": BuildRecord,
                  "fallback": FallbackRecord, "fusion": FusionRecord, "speed": SpeedRecord,
                  "mode_choice": ModeChoiceRecord}
        values = dict(payload)
        for key, record_type in nested.items():
            if values.get(key) is not None:
                values[key] = record_type(**values[key])
        values["files"] = [FileRecord(**record) for record in values.get("files", [])]
        values["debug_files"] = [FileRecord(**record) for record in values.get("debug_files", [])]
        return cls(**values)

    @classmethod
    def load(cls, folder: str | Path) -> "Manifest":
        """The manifest.json of an artifact folder; InputError naming the file, the key and the fix when it is
        missing, not JSON or not valid against docs/schemas/manifest.schema.json."""
        path = Path(folder) / MANIFEST_FILE
        if not path.is_file():
            raise InputError(f"{path} does not exist: {folder} is not a complete quantgate artifact folder "
                             f"(build it with `make quantize`)")
        payload = read_json(path, "manifest", "rebuild the artifact with this quantgate (`make quantize`)")
        return cls.from_json(payload | {"artifact_dir": str(Path(folder))})

    def runtime_limits(self) -> dict:
        """What the built-for runtime loads, in pipeline.guard.probe's shape."""
        return {key: self.runtime[key] for key in ("versions", "max_ir_version", "max_opsets")}

    def record_files(self) -> None:
        """sha256 of every file in the folder except the manifest itself and verify results; files under
        debug/ go to `debug_files`, outside the artifact's integrity check."""
        self.files, self.debug_files = [], []
        for path in sorted(self.folder.rglob("*")):
            if not path.is_file() or path.name in (MANIFEST_FILE, "verify.json") or path.name.startswith("."):
                continue
            relative = path.relative_to(self.folder).as_posix()
            record = FileRecord(relative, sha256_file(path), path.stat().st_size)
            (self.debug_files if relative.startswith(DEBUG_DIR + "/") else self.files).append(record)

    def tampered_files(self) -> list[str]:
        """Files whose bytes no longer match the sha256 recorded at build time (or that vanished)."""
        changed = []
        for record in self.files:
            path = self.folder / record.path
            if not path.is_file() or sha256_file(path) != record.sha256:
                changed.append(record.path)
        return changed

    def save(self) -> None:
        atomic_write_json(self.folder / MANIFEST_FILE, self.to_json())

"""Stage 4, stamp: provenance into model.onnx's metadata_props; the guard reads it back.

No timestamps, host names or paths inside the artifact: the same inputs give the same bytes in any
folder on any machine. User-given paths (a checkpoint folder, calibration files) are stamped as
basename + sha256 of the bytes (pipeline/builder/reproducible.py). Build time and host go in manifest.json
(written by the build app once every file is in place).

What the stamp says about the int8 graph is counted from it (pipeline/builder/graph_counts.py: `graph_counts`,
`per_channel` only where the graph has per-channel weights), and checked against it once written: a claim the
graph does not hold fails the build (exit 1), as does a graph with no int8 compute node (exit 2).
"""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from importlib import metadata

from omegaconf import OmegaConf

from pipeline import kinds
from pipeline.builder.graph_counts import GraphCounts, check_claims, count_graph
from pipeline.builder.int8_nodes import fp32_words
from pipeline.errors import BuildFailed
from pipeline.guard import REQUIRED_STAMP_KEYS, STAMP_PREFIX, STAMP_SCHEMA, read_stamp
from pipeline.manifest import Manifest, QuantizationRecord, atomic_write_bytes, sha256_bytes
from pipeline.progress import say
from pipeline.isa.targets import runtime_floor

VERSIONED_PACKAGES = ("torch", "onnx", "onnxruntime", "transformers", "datasets", "numpy", "quantgate")
# Keys that do not change the artifact's bytes: where it is written, how it is verified, whether its reference
# came from the reference cache (the same bytes either way), how long its speed is measured.
_CONFIG_KEYS_NOT_HASHED = ("verify", "artifacts_dir", "out", "experiment", "reference_cache", "speed")


def library_versions() -> dict[str, str]:
    versions = {"python": ".".join(map(str, sys.version_info[:3]))}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def portable_config(resolved: dict) -> dict:
    """The config with its path values (checkpoint folder, ONNX file, data files and arrays, a local hub dataset,
    wheel paths in runtime requirements) as basename (+ sha256 of a file's bytes): the same inputs hash the same in any
    folder on any machine, and different data under the same name does not."""
    from pipeline.builder.reproducible import portable_path_value
    model, calibration, runtime = resolved.get("model") or {}, resolved.get("calibration") or {}, \
        resolved.get("runtime") or {}
    if model.get("name_or_path"):
        model["name_or_path"] = portable_path_value(model["name_or_path"])
    if calibration.get("data_files"):
        calibration["data_files"] = [portable_path_value(f) for f in calibration["data_files"]]
    if calibration.get("hub_name"):
        calibration["hub_name"] = portable_path_value(calibration["hub_name"])
    for group, key in ((model, "path"), (calibration, "path")):  # model=onnx's file, calibration=npz's arrays
        if group.get(key):
            group[key] = portable_path_value(group[key])
    if runtime.get("requirements"):
        runtime["requirements"] = [portable_path_value(line) for line in runtime["requirements"]]
    return resolved


def config_sha256(cfg) -> str:
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for key in _CONFIG_KEYS_NOT_HASHED:
        resolved.pop(key, None)
    return sha256_bytes(json.dumps(portable_config(resolved), sort_keys=True).encode())


def _compact(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))


def stamp_values(cfg, manifest: Manifest) -> dict[str, str]:
    quantization, calibration = manifest.quantization, manifest.calibration
    values = {
        "schema": STAMP_SCHEMA,
        "target_isa": cfg.target.name,
        "required_cpu_features": manifest.required_cpu_features,
        "mode": quantization.mode,
        "quant_format": quantization.quant_format,
        "weight_type": quantization.weight_type,
        "activation_type": quantization.activation_type,
        "per_channel": str(quantization.per_channel).lower(),
        "reduce_range": str(quantization.reduce_range).lower(),
        "calibration": {"dataset": calibration.dataset, "split": calibration.split, "n": calibration.n,
                        "method": quantization.calibration_method or "none (dynamic ranges at run time)",
                        "sha256": calibration.sha256},
        "source_model": {"name": manifest.source_model, "weights_sha256": manifest.source_weights_sha256},
        "versions": library_versions(),
        "opset": str(manifest.opset),
        "config_sha256": manifest.config_sha256,
    }
    assert set(values) == set(REQUIRED_STAMP_KEYS), "stamp keys and guard.REQUIRED_STAMP_KEYS drifted apart"
    if manifest.runtime:  # the runtime stack it was built (and fitted) for; verification defaults to it
        from pipeline.builder.reproducible import portable_path_value
        values["runtime"] = {"name": manifest.runtime["name"],
                             "requirements": [portable_path_value(r) for r in manifest.runtime["requirements"]],
                             "onnxruntime": manifest.runtime["versions"]["onnxruntime"]}
    if quantization.graph_counts is not None:  # what the ONNX graph holds (pipeline/builder/graph_counts.py)
        values["graph_counts"] = quantization.graph_counts
    if quantization.subgraphs:  # If/Loop/Scan bodies: their compute nodes and how many run int8
        values["subgraphs"] = quantization.subgraphs
    if quantization.dynamic_nodes:  # a static build's nodes in dynamic int8 (pipeline/builder/quantize.py)
        values["dynamic_nodes"] = quantization.dynamic_nodes
    if manifest.fallback is not None and manifest.fallback.excluded_nodes:
        fallback = manifest.fallback
        values["fallback"] = {"fp32_nodes": [name for name in fallback.excluded_nodes if name not in fallback.dynamic_nodes],
                              "dynamic_nodes": fallback.dynamic_nodes, "budget": fallback.budget,
                              "before": fallback.steps[0], "after": fallback.steps[-1]}
    return {key: _compact(value) for key, value in values.items()}


def write_stamp(path, values: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path), load_external_data=False)  # weights in external data stay where they are
    kept = [entry for entry in model.metadata_props if not entry.key.startswith(STAMP_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key in sorted(values):
        model.metadata_props.add(key=STAMP_PREFIX + key, value=values[key])
    atomic_write_bytes(path, model.SerializeToString(deterministic=True))


def int8_compute_nodes(model) -> int:
    """How many of the model's compute nodes run in int8 (pipeline/builder/graph_counts.py)."""
    return count_graph(model).int8_nodes


def check_quantized(manifest: Manifest, counts: GraphCounts, kind: kinds.ArtifactKind = kinds.ONNX_QDQ) -> None:
    """An artifact stamped as its kind must hold the kind's quantized compute nodes (`kind.proven_by`, the count of
    them): a build in which every node stayed fp32 has failed."""
    if not getattr(counts, kind.proven_by):
        excluded = len(manifest.fallback.excluded_nodes) if manifest.fallback else 0
        in_subgraphs = fp32_words(manifest.quantization.subgraphs) if manifest.quantization else ""
        raise BuildFailed(f"{manifest.model_file} has no int{kind.bits} compute node: every MatMul/Conv stayed fp32"
                          + (f" ({excluded} excluded by the accuracy gate)" if excluded else "")
                          + (f" ({in_subgraphs})" if in_subgraphs else "")
                          + f", so it would be an fp32 model stamped int{kind.bits}. Nothing was published. Check the "
                            "calibration data (values outside float32's range, a constant column) and the "
                            "mode's op types, or allow more loss: verify.max_accuracy_drop")


def as_held(record: QuantizationRecord, counts: GraphCounts) -> QuantizationRecord:
    """The quantization record with the graph's counts, claiming per-channel weights only if the graph has them
    (onnxruntime's dynamic ConvInteger is per tensor whatever was asked)."""
    per_channel = record.per_channel and (counts.per_channel_weights > 0 or not counts.int8_weights)
    if per_channel != record.per_channel:
        say(f"stamp: per_channel=false: every int8 weight has one scale (asked per channel; onnxruntime's "
            f"{record.mode} quantizer gave {counts.int8_weights} weight(s) per tensor)")
    return replace(record, per_channel=per_channel, graph_counts=counts.as_stamp())


def run(cfg, manifest: Manifest) -> Manifest:
    import onnx

    model_path = manifest.path(manifest.model_file)
    manifest.required_cpu_features = runtime_floor(cfg.target.microarchitecture, list(cfg.target.extra_features))
    manifest.config_sha256 = config_sha256(cfg)
    if manifest.runtime:
        # The quantizer (or QAT's own export) may write a newer IR version or opset than the reference had.
        from pipeline.runtimes import venvs
        changes = venvs.fit_file(model_path, manifest.runtime_limits(), "the int8 model")
        if changes:
            say(f"stamp: fitted model.onnx to onnxruntime {manifest.runtime['versions']['onnxruntime']}: "
                f"{', '.join(changes)}")
    counts = count_graph(onnx.load(str(model_path), load_external_data=False))
    check_quantized(manifest, counts, kinds.kind_for_config(cfg))
    manifest.quantization = as_held(manifest.quantization, counts)
    say(f"stamp: the int8 graph holds {counts.describe()}")
    values = stamp_values(cfg, manifest)
    write_stamp(model_path, values)
    stamped = read_stamp(model_path)
    if stamped != values:
        raise RuntimeError("the stamp read back from model.onnx differs from the one written")
    check_claims(stamped, onnx.load(str(model_path), load_external_data=False), manifest.model_file)
    manifest.stamp = values
    return manifest

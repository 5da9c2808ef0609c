"""What `quantgate inspect PATH` prints (pipeline/commands/inspect.py parses it): an artifact's stamp and whether this
host can run it (the guard's verdict); with `--nodes` / `--node NAME`, the source files each ONNX node came from
(debug/ beside it)."""
from __future__ import annotations

import difflib
import json
import sys
from pathlib import Path

from pipeline import kinds
from pipeline.builder import reproducible
from pipeline.guard import ArtifactRefused, StampError, check_stamp, read_onnx_versions
from pipeline.guard.probe import installed_limits
from pipeline.guard.pt2 import ensure_can_run as ensure_package_can_run


def _model_verdict(path: str, stamp: dict[str, str]):
    """An ONNX model: its stamp against this CPU, then whether the installed onnxruntime loads it."""
    verdict = check_stamp(stamp, artifact=Path(path).name)
    if verdict.can_run:
        verdict = check_stamp(stamp, model=read_onnx_versions(path), runtime=installed_limits(),
                              artifact=Path(path).name)
    return verdict


def _package_verdict(path: str, stamp: dict[str, str]):
    """A torch AOTInductor package: the package guard (its stamp's kind, the CPU, torch), else the CPU's verdict."""
    try:
        return ensure_package_can_run(path)
    except ArtifactRefused:
        return check_stamp(stamp, artifact=Path(path).name)


# artifact kind -> verdict(path, stamp) -> GuardVerdict: whether this host can run it
kinds.register_handlers("inspect", {
    kinds.ONNX_QDQ.name: _model_verdict, kinds.ONNX_QOPERATOR.name: _model_verdict,
    kinds.AOTI_PT2.name: _package_verdict, kinds.ONNX_INT4_WEIGHT_ONLY.name: _model_verdict,
    kinds.ONNX_INT8_WEIGHT_ONLY.name: _model_verdict})


def inspect(path: str) -> int:
    """Print an artifact's stamp and whether this host can run it."""
    try:
        kind, stamp = kinds.kind_of_file(path)
        verdict = kinds.handler("inspect", kind)(path, stamp)
    except StampError as error:
        print(f"quantgate: error: {error}", file=sys.stderr)
        return 2
    for key in sorted(stamp):
        print(f"quantgate.{key:<22} {_shown(stamp[key])}")
    if reproducible.load_sidecar(path) is not None:
        print(f"\nnode sources   {reproducible.debug_file_for(Path(path).name)} beside it: "
              f"quantgate inspect {path} --nodes | --node NAME")
    print(f"\nthis host: {'CAN run it' if verdict.can_run else 'must NOT run it'}: {verdict.message()}")
    return 0 if verdict.can_run else 3


def _shown(value: str) -> str:
    """A stamp value, JSON in one sorted line where it is JSON (a damaged value is shown as it is)."""
    try:
        return json.dumps(json.loads(value), sort_keys=True) if value.startswith(("{", "[")) else value
    except ValueError:
        return value


def inspect_nodes(path: str, node: str | None = None) -> int:
    """Which source files the nodes of an ONNX artifact came from, from the debug file beside it
    (debug/<file>.nodes.json: the exporter's per-node metadata, kept out of the artifact itself)."""
    sidecar = reproducible.load_sidecar(path)
    if sidecar is None:
        print(f"quantgate: error: no {reproducible.debug_file_for(Path(path).name)} beside {path}: node sources are "
              f"recorded for ONNX files built by this quantgate, in the artifact folder's debug/ (not shipped with "
              f"the artifact everywhere)", file=sys.stderr)
        return 2
    nodes = sidecar["nodes"]
    if node is None:
        print(f"{len(nodes)} node(s) of {sidecar['file']} with recorded sources (paths {sidecar['paths']})")
        width = max((len(name) for name in nodes), default=4)
        for name, entry in nodes.items():
            via = f"  (from {entry['derived_from']})" if entry.get("derived_from", name) != name else ""
            print(f"{name:<{width}}  {entry['op_type']:<22} {entry.get('origin') or '-'}{via}")
        return 0
    if node not in nodes:
        close = difflib.get_close_matches(node, list(nodes), n=5)
        print(f"quantgate: error: {sidecar['file']} has no recorded node {node!r}"
              + (f"; close: {', '.join(close)}" if close else "") + " (`--nodes` lists them)", file=sys.stderr)
        return 2
    entry = nodes[node]
    metadata = entry.get("metadata")
    print(f"node           {node} ({entry['op_type']}) in {sidecar['file']}")
    if entry.get("derived_from") and entry["derived_from"] != node:
        print(f"derived from   {entry['derived_from']} (the node of the fp32 export it replaces)")
        reference = reproducible.load_sidecar(Path(path).with_name("reference.onnx"))
        metadata = ((reference or {}).get("nodes", {}).get(entry["derived_from"]) or {}).get("metadata")
    metadata = metadata or {}
    if metadata.get("namespace"):
        print(f"module         {metadata['namespace']}")
    print(f"origin         {entry.get('origin') or '-'}")
    print("source files   " + ("\n               ".join(entry.get("source_files") or ["-"])))
    frames = reproducible.frames(metadata)
    if frames:
        print("stack (outermost first):")
        for frame in frames:
            print(f"  {frame['file']}:{frame['line']} in {frame['function']}")
    return 0

"""Same inputs, same bytes on any machine: no build-host paths inside artifacts.

torch's dynamo exporter writes, on every ONNX node, `metadata_props` for debugging: the Python
stack trace of the code that made it (`pkg.torch.onnx.stack_trace`: absolute paths of the checkout
and of the venv's site-packages), the module path (`namespace`, `pkg.torch.onnx.class_hierarchy`,
`pkg.torch.onnx.name_scopes`), the FX node (`pkg.torch.onnx.fx_node`) and which rewrite rule made
it (`pkg.onnxscript.rewriter.rule_name`). onnxruntime's quantizer copies them onto model.onnx. So
the same build in another folder gave other bytes (MiniLM: 1,566 absolute paths in model.onnx).

Here every ONNX file a build publishes is stripped of node metadata and of every doc_string, and
what was stripped is kept, with paths made portable (relative to the checkout, `site-packages/...`,
`<stdlib>/...`), in `debug/<file>.nodes.json` beside it: outside the artifact's sha256
(manifest.json lists it under `debug_files`, which the integrity check does not require).
`quantgate inspect model.onnx --node NAME` reads it back.

`host_roots()` is the one definition of "a path of the build machine" (checkout, venv, Python,
site-packages, home, temp, current folder); `host_paths_in` scans bytes for them.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import site
import sys
import sysconfig
import tempfile
from pathlib import Path

from pipeline.manifest import DEBUG_DIR, MANIFEST_FILE, atomic_write_bytes, atomic_write_json
from pipeline.paths import CHECKOUT, CODE_PACKAGES, SOURCE_ROOT

NODES_SCHEMA = "quantgate.debug-nodes/1"
# Exporters' per-node keys, as written by torch 2.13's dynamo exporter and onnxscript's rewriter; every
# node-level key is stripped whatever its name, these are only the ones known to hold source locations.
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"
QUANTIZER_SUFFIX_WORDS = 3  # onnxruntime's quantizer appends up to three words to a tensor name (_output_quantized_cast)
SYSTEM_PREFIXES = ("/usr", "/usr/local", "/usr/lib", "/opt", "/home", "/var")
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)')


def debug_file_for(artifact_file: str) -> str:
    """The sidecar of an artifact file, relative to the artifact folder: model.onnx -> debug/model.nodes.json."""
    return f"{DEBUG_DIR}/{Path(artifact_file).stem}.nodes.json"


# --------------------------------------------------------------------------- the build machine's paths
@functools.lru_cache(maxsize=1)
def host_roots() -> tuple[tuple[str, str], ...]:
    """(absolute folder, portable prefix) for every folder of this machine that exporters and libraries
    write into their output, both as seen (a symlinked .venv) and resolved; longest first, so a venv
    inside the checkout becomes `site-packages/...`, not a path in the checkout. quantgate's own packages are
    `pipeline/...` (`calibration/...`) wherever they lie: the checkout's folder, or (installed) each package's
    folder in site-packages; the checkout's list is the one it always was (AOTI's prefix maps are made from it)."""
    candidates: list[tuple[str | None, str]] = [(str(CHECKOUT), "")] if CHECKOUT else \
        [(str(SOURCE_ROOT / name), f"{name}/") for name in CODE_PACKAGES]
    for key in ("purelib", "platlib"):
        candidates.append((sysconfig.get_paths().get(key), "site-packages/"))
    for folder in [*getattr(site, "getsitepackages", lambda: [])(), site.getusersitepackages()]:
        candidates.append((folder, "site-packages/"))
    for key in ("stdlib", "platstdlib"):
        candidates.append((sysconfig.get_paths().get(key), "<stdlib>/"))
    candidates += [(sys.prefix, "<venv>/"), (sys.exec_prefix, "<venv>/"), (sys.base_prefix, "<python>/"),
                   (os.path.expanduser("~"), "~/"), (tempfile.gettempdir(), "<tmp>/"), (os.getcwd(), "<cwd>/")]
    roots: dict[str, str] = {}
    for folder, label in candidates:
        if not folder:
            continue
        for variant in (os.path.abspath(folder), os.path.realpath(folder)):
            variant = variant.rstrip("/")
            # A system-wide prefix (a Debian python's base prefix is /usr) is the same on every machine with
            # the same packages: /usr/include/c++/12 says nothing about this checkout, user or host.
            if len(variant) >= 4 and variant not in SYSTEM_PREFIXES and variant not in roots:
                roots[variant] = label
    return tuple(sorted(roots.items(), key=lambda item: (-len(item[0]), item[0])))


def portable(text: str) -> str:
    """`text` with every build-machine folder replaced by its portable prefix."""
    for root, label in host_roots():
        if root in text:
            text = text.replace(root + "/", label)
            text = re.sub(re.escape(root) + r"(?![\w.-])", label.rstrip("/") or ".", text)
    return text


def host_paths_in(data: bytes, extra_roots: tuple[str, ...] = ()) -> list[str]:
    """The build-machine folders whose absolute paths occur in `data` (bytes of any file)."""
    roots = tuple(sorted({root for root, _ in host_roots()} | {r.rstrip("/") for r in extra_roots if len(r) >= 4}))
    if not _any_root(roots).search(data):  # one pass; most files name none (0.04 s for 90 MB, not 0.4 s)
        return []
    return [root for root in roots if (root + "/").encode() in data or (root + '"').encode() in data]


@functools.lru_cache(maxsize=8)
def _any_root(roots: tuple[str, ...]) -> re.Pattern:
    return re.compile(b"(?:" + b"|".join(re.escape(root.encode()) for root in roots) + b')[/"]')


def published_files(folder: Path) -> list[Path]:
    """Every file an artifact folder ships, except the records of where and when it was built and verified."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.relative_to(folder).as_posix() not in (MANIFEST_FILE, "verify.json"))


def host_paths_in_folder(folder: Path, extra_roots: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """{file relative to folder: build-machine folders named inside it}, for every published file that names one."""
    found = {}
    for path in published_files(folder):
        roots = host_paths_in(path.read_bytes(), extra_roots)
        if roots:
            found[path.relative_to(folder).as_posix()] = roots
    return found


# --------------------------------------------------------------------------- user-given paths in the stamp
def file_identity(path: str | Path) -> str:
    """A user's file as the stamp names it: basename and sha256 of its bytes, never where it lies."""
    path = Path(path).expanduser()
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        return f"{path.name} sha256:{digest}"
    return path.name or str(path)


def portable_path_value(value: str) -> str:
    """A config value that may be a local path (checkpoint folder, data file, hub name or local dataset
    folder, pip requirement with a wheel path): files become basename + sha256, folders their basename;
    anything else (a hub name, `onnxruntime==1.16.3`) is returned unchanged."""
    text = str(value)
    path = Path(text).expanduser()
    if path.is_file():
        return file_identity(path)
    if os.path.isabs(text) or path.is_dir():
        return path.name or text
    # pip lines: `name @ file:///abs/x.whl`, `/abs/x.whl`, `./x.whl`
    return re.sub(r"(?:file://|(?<![^\s@]))(/[^\s;]+)", lambda m: file_identity(m.group(1)), text)


# --------------------------------------------------------------------------- ONNX: strip and keep
def _graphs(graph):
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graphs(subgraph)


def _node_key(node, index: int, scope: str) -> str:
    return scope + (node.name or f"{node.op_type}#{index}")


def strip_onnx(model) -> dict[str, dict]:
    """Remove every node's metadata_props and every doc_string from `model` (in place); make any other
    string metadata portable. Returns what was on the nodes, by node name, with portable paths:
    {name: {"op_type": ..., "metadata": {key: value}}}."""
    stripped: dict[str, dict] = {}

    def take(node, key: str) -> None:
        metadata = {entry.key: portable(entry.value) for entry in node.metadata_props}
        if node.doc_string:
            metadata["doc_string"] = portable(node.doc_string)
        if metadata:
            stripped[key] = {"op_type": node.op_type, "metadata": metadata}
        del node.metadata_props[:]
        node.doc_string = ""
        for attribute in node.attribute:
            attribute.doc_string = ""

    def clean_props(props) -> None:
        for entry in props:
            entry.value = portable(entry.value)

    model.doc_string = ""
    clean_props(model.metadata_props)
    for graph in _graphs(model.graph):
        graph.doc_string = ""
        clean_props(graph.metadata_props)
        for value in [*graph.input, *graph.output, *graph.value_info]:
            value.doc_string = ""
            clean_props(value.metadata_props)
        for tensor in graph.initializer:
            tensor.doc_string = ""
        for index, node in enumerate(graph.node):
            take(node, _node_key(node, index, ""))
    for function in model.functions:
        function.doc_string = ""
        clean_props(function.metadata_props)
        for index, node in enumerate(function.node):
            take(node, _node_key(node, index, f"{function.domain}::{function.name}/"))
    return stripped


def frames(metadata: dict[str, str]) -> list[dict]:
    """The stack trace's frames, outermost first: [{"file", "line", "function"}]."""
    return [{"file": m.group(1), "line": int(m.group(2)), "function": m.group(3)}
            for m in _FRAME.finditer(metadata.get(STACK_TRACE_KEY, "") or metadata.get("doc_string", ""))]


def source_files(metadata: dict[str, str]) -> list[str]:
    """The distinct source files of a node's stack trace, outermost first."""
    seen: list[str] = []
    for frame in frames(metadata):
        if frame["file"] not in seen:
            seen.append(frame["file"])
    return seen


def origin(metadata: dict[str, str]) -> str:
    """The innermost frame outside torch itself (the model's own code: modeling_bert.py, pipeline/builder/models.py),
    as `file:line`; the innermost frame when all are torch's; "" without a stack trace."""
    found = frames(metadata)
    for frame in reversed(found):
        if not frame["file"].startswith("site-packages/torch/"):
            return f"{frame['file']}:{frame['line']}"
    return f"{found[-1]['file']}:{found[-1]['line']}" if found else ""


def _derived_from(name: str, known: dict[str, dict], produced_by: dict[str, str], consumed_by: dict[str, str]) -> str:
    """The reference node a quantizer's node stands for: same name, a name it extends (`node_linear_quant`
    -> `node_linear`), or for nodes onnxruntime names after a tensor (`val_58_output_quantized_cast`,
    `gelu_QuantizeLinear`) the node making (or first reading) that tensor. A best guess by names."""
    if name in known:
        return name
    prefixes = [k for k in known if name.startswith(k + "_")]
    if prefixes:
        return max(prefixes, key=len)
    candidate = name
    for _ in range(QUANTIZER_SUFFIX_WORDS):
        if "_" not in candidate:
            break
        candidate = candidate.rsplit("_", 1)[0]
        if candidate in produced_by or candidate in consumed_by:
            return produced_by.get(candidate) or consumed_by[candidate]
    return ""


def nodes_record(artifact_file: str, model, stripped: dict[str, dict], reference: dict | None = None,
                 reference_model=None) -> dict:
    """The sidecar's content for one ONNX file. Nodes the file's own export annotated come with that
    metadata; for a quantizer's output (which keeps nothing once its input was stripped) each node
    names the reference node it derives from and that node's source files."""
    nodes: dict[str, dict] = {}
    for name, entry in sorted(stripped.items()):
        nodes[name] = {"op_type": entry["op_type"], "source_files": source_files(entry["metadata"]),
                       "origin": origin(entry["metadata"]), "metadata": entry["metadata"]}
    if reference:
        produced_by, consumed_by = {}, {}
        if reference_model is not None:
            for node in reference_model.graph.node:
                for output in node.output:
                    produced_by.setdefault(output, node.name)
                for input_name in node.input:
                    consumed_by.setdefault(input_name, node.name)
        for index, node in enumerate(model.graph.node):
            key = _node_key(node, index, "")
            if key in nodes:
                continue
            parent = _derived_from(key, reference, produced_by, consumed_by)
            if parent and parent in reference:
                metadata = reference[parent]["metadata"]
                nodes[key] = {"op_type": node.op_type, "derived_from": parent, "source_files": source_files(metadata),
                              "origin": origin(metadata)}
    return {"schema": NODES_SCHEMA, "file": artifact_file,
            "paths": "relative to the checkout that built it; site-packages/ = the venv's site-packages, "
                     "<stdlib>/ = Python's standard library, ~/ = the home folder, <tmp>/ = the temp folder",
            "nodes": dict(sorted(nodes.items()))}


def strip_file(folder: Path, artifact_file: str, reference_file: str | None = None,
               source: Path | None = None) -> int:
    """Write `source` (default: `folder/artifact_file` itself) stripped to `folder/artifact_file`, atomically,
    and its sidecar; returns how many nodes carried exporter metadata. With `reference_file`, nodes
    without metadata of their own are mapped to the reference's nodes through the reference's sidecar."""
    import onnx

    path = folder / artifact_file
    model = onnx.load(str(source or path))
    stripped = strip_onnx(model)
    reference = reference_model = None
    if reference_file is not None:
        sidecar = folder / debug_file_for(reference_file)
        if sidecar.is_file():
            reference = {name: {"op_type": entry["op_type"], "metadata": entry.get("metadata", {})}
                         for name, entry in json.loads(sidecar.read_text())["nodes"].items() if "metadata" in entry}
            reference_model = onnx.load(str(folder / reference_file), load_external_data=False)
    atomic_write_bytes(path, model.SerializeToString(deterministic=True))
    atomic_write_json(folder / debug_file_for(artifact_file),
                      nodes_record(artifact_file, model, stripped, reference, reference_model))
    return len(stripped)


def strip_bytes(onnx_bytes: bytes) -> tuple[bytes, dict[str, dict], object]:
    """(stripped model bytes, stripped node metadata, the stripped ModelProto) of serialized ONNX."""
    import onnx
    model = onnx.load_from_string(onnx_bytes)
    stripped = strip_onnx(model)
    return model.SerializeToString(deterministic=True), stripped, model


def write_sidecar(folder: Path, artifact_file: str, model, stripped: dict[str, dict]) -> None:
    atomic_write_json(folder / debug_file_for(artifact_file), nodes_record(artifact_file, model, stripped))


def load_sidecar(artifact_path: str | Path) -> dict | None:
    """The sidecar of an artifact file, or None when the folder has no debug file for it."""
    path = Path(artifact_path)
    sidecar = path.parent / debug_file_for(path.name)
    return json.loads(sidecar.read_text()) if sidecar.is_file() else None

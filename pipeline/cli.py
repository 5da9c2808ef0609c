"""The `quantgate` command: `quantgate [hydra overrides]` builds; `inspect` and `verify` are subcommands,
and so are the release-trust commands (pipeline/release/): keys, sign, provenance, publish, pull, registry.

`quantgate inspect PATH --nodes` / `--node NAME`: the source files each node came from (debug/ beside it).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

# `quantgate <command> ...` -> that module's main(argv): release trust (issue 18).
RELEASE_COMMANDS = {name: f"pipeline.release.{module}" for name, module in (
    ("keys", "keys"), ("sign", "sign"), ("provenance", "provenance"), ("publish", "publish"), ("pull", "pull"),
    ("registry", "registry"))}


def inspect(path: str) -> int:
    """Print an artifact's stamp and whether this host can run it."""
    from pipeline.guard import ArtifactRefused, StampError, check_stamp, read_onnx_versions, read_stamp

    try:
        if path.endswith(".pt2"):  # a torch AOTInductor package
            from pipeline.guard_torch import ensure_can_run, read_package_stamp
            stamp = read_package_stamp(path)
            try:
                verdict = ensure_can_run(path)
            except ArtifactRefused:
                verdict = check_stamp(stamp)
        else:
            stamp = read_stamp(path)
            verdict = check_stamp(stamp)
        if verdict.can_run and not path.endswith(".pt2"):  # ask the installed onnxruntime whether it loads it
            from pipeline.runtime_probe import installed_limits
            verdict = check_stamp(stamp, model=read_onnx_versions(path), runtime=installed_limits())
    except StampError as error:
        print(f"quantgate: error: {error}", file=sys.stderr)
        return 2
    for key in sorted(stamp):
        value = stamp[key]
        if value.startswith(("{", "[")):
            value = json.dumps(json.loads(value), sort_keys=True)
        print(f"quantgate.{key:<22} {value}")
    from pipeline import reproducible
    if reproducible.load_sidecar(path) is not None:
        print(f"\nnode sources   {reproducible.debug_file_for(Path(path).name)} beside it: "
              f"quantgate inspect {path} --nodes | --node NAME")
    print(f"\nthis host: {'CAN run it' if verdict.can_run else 'must NOT run it'}: {verdict.message()}")
    return 0 if verdict.can_run else 3


def inspect_nodes(path: str, node: str | None = None) -> int:
    """Which source files the nodes of an ONNX artifact came from, from the debug file beside it
    (debug/<file>.nodes.json: the exporter's per-node metadata, kept out of the artifact itself)."""
    import difflib

    from pipeline import reproducible

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


USAGE = "usage: quantgate inspect MODEL.onnx|MODEL.pt2 [--nodes | --node NAME]"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["inspect"]:
        rest = args[1:]
        if len(rest) == 1 and not rest[0].startswith("-"):
            sys.exit(inspect(rest[0]))
        if len(rest) == 2 and rest[1] == "--nodes":
            sys.exit(inspect_nodes(rest[0]))
        if len(rest) == 3 and rest[1] == "--node":
            sys.exit(inspect_nodes(rest[0], rest[2]))
        print(USAGE, file=sys.stderr)
        sys.exit(2)
    if args[:1] == ["verify"]:
        from pipeline.stages.verify import main as verify_main
        sys.exit(verify_main(args[1:]))
    if args[:1] and args[0] in RELEASE_COMMANDS:
        import importlib
        sys.exit(importlib.import_module(RELEASE_COMMANDS[args[0]]).main(args[1:]))
    if args[:1] == ["build"]:
        args = args[1:]
    from pipeline.__main__ import main as build_main
    sys.argv = [sys.argv[0], *args]
    build_main()


if __name__ == "__main__":
    main()

"""The `quantgate` command: `quantgate [hydra overrides]` builds; `inspect` and `verify` are subcommands,
and so are the release-trust commands (pipeline/release/): keys, sign, provenance, publish, pull, registry."""
from __future__ import annotations

import json
import sys

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
    print(f"\nthis host: {'CAN run it' if verdict.can_run else 'must NOT run it'}: {verdict.message()}")
    return 0 if verdict.can_run else 3


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["inspect"]:
        if len(args) != 2:
            print("usage: quantgate inspect MODEL.onnx|MODEL.pt2", file=sys.stderr)
            sys.exit(2)
        sys.exit(inspect(args[1]))
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

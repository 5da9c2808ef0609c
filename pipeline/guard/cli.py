"""`python -m pipeline.guard PATH` (in a deployment: `python -m quantgate_guard PATH` or `quantgate-guard PATH`).

Exit 0 when this host can run the artifact, 3 when the guard refuses it (the CPU lacks a feature, the
runtime will not load it, no readable stamp, a signature that does not verify), 2 for bad arguments or a
path that is no artifact at all. One line on stdout (ok) or stderr (refused, error); never a traceback.
"""
from __future__ import annotations

import argparse
import sys

from .artifact import ensure_can_run
from .errors import EXIT_OK, EXIT_REFUSED, EXIT_USAGE, GuardError, UnreadableArtifact

PREFIX = "quantgate guard"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        usage = " ".join(self.format_usage().split()[1:])
        self.exit(EXIT_USAGE, f"{PREFIX}: error: {message} (usage: {usage})\n")


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    package = __package__ or "quantgate_guard"
    parser = _Parser(prog=f"python -m {package}", description="Refuse, in words, an artifact this host cannot run "
                     "(exit 3); exit 0 when it can.")
    parser.add_argument("path", metavar="MODEL.onnx|MODEL.pt2|FOLDER")
    parser.add_argument("--public-key", metavar="KEY.pub",
                        help="also require the folder's model-signing signature by this key (or CA certificates)")
    parser.add_argument("--cpu-only", action="store_true",
                        help="check the CPU only, not whether the installed onnxruntime or torch loads the artifact")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        verdict = ensure_can_run(args.path, check_runtime=not args.cpu_only, public_key=args.public_key)
    except UnreadableArtifact as error:
        print(f"{PREFIX}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except GuardError as error:
        print(f"{PREFIX}: refused: {_one_line(error)}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as error:  # a folder or key that cannot be read
        print(f"{PREFIX}: error: {args.path}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{PREFIX}: ok: {verdict.message()}")
    return EXIT_OK

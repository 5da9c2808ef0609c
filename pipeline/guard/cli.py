"""`python -m pipeline.guard PATH` (in a deployment: `python -m quantgate_guard PATH` or `quantgate-guard PATH`).

`--cpu-features "fp asimd evtstrm crc32 cpuid"` judges another machine's CPU instead of this one's: the Features
line of its /proc/cpuinfo (64-bit Arm) or its flags line (x86-64), as it is; the runtime is then not checked
(the one installed here is not that machine's).

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


# /proc/cpuinfo's names where they differ from the guard's (archspec's): x86 calls SSE3 `pni`.
CPUINFO_NAMES = {"pni": "sse3"}


def cpuinfo_features(text: str) -> frozenset[str]:
    """A CPU's features as /proc/cpuinfo lists them, in the guard's names."""
    return frozenset(CPUINFO_NAMES.get(name, name) for name in text.replace(",", " ").split())


def main(argv: list[str] | None = None) -> int:
    package = __package__ or "quantgate_guard"
    parser = _Parser(prog=f"python -m {package}", description="Refuse, in words, an artifact this host cannot run "
                     "(exit 3); exit 0 when it can.")
    parser.add_argument("path", metavar="MODEL.onnx|MODEL.pt2|FOLDER")
    parser.add_argument("--public-key", metavar="KEY.pub",
                        help="also require the folder's model-signing signature by this key (or CA certificates)")
    parser.add_argument("--cpu-only", action="store_true",
                        help="check the CPU only, not whether the installed onnxruntime or torch loads the artifact")
    parser.add_argument("--cpu-features", metavar="FEATURES",
                        help="judge a CPU with these features instead of this one (another machine's /proc/cpuinfo "
                             "Features or flags line, space- or comma-separated); implies --cpu-only")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    features = cpuinfo_features(args.cpu_features) if args.cpu_features is not None else None
    try:
        verdict = ensure_can_run(args.path, host_features=features, public_key=args.public_key,
                                 check_runtime=not args.cpu_only and features is None)
    except UnreadableArtifact as error:
        print(f"{PREFIX}: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except GuardError as error:
        print(f"{PREFIX}: refused: {_one_line(error)}", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as error:  # a folder or key that cannot be read
        print(f"{PREFIX}: error: {args.path}: {error.strerror or error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"{PREFIX}: ok: " + (verdict.message() if features is None else
                               f"a CPU with these features can run the artifact built for {verdict.target_isa}"))
    return EXIT_OK

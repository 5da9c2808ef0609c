"""`quantgate bench`: measure what quantization buys on this host, per artifact, against its fp32 graph.

    quantgate bench [--release candidate] [--artifacts-dir artifacts/<release>] [--out reports/<release>/bench]
                    [--batches 1 32] [--seconds 1.5] [--threads N] [--sequence-length 128] [--build-time N]
                    [--prompt-tokens 128] [--new-tokens 32]

Each artifact is benched as what it is (pipeline/release/bench/subjects.py): an int8 transformer encoder, CNN,
detector or other ONNX graph against its fused fp32 graph and a plain onnxruntime `quantize_dynamic` (latency at
each batch, interleaved in one process, with the noise; the op-type profile; the distance to this host's int8
floor), a weight-only decoder (int4 / int8) against its fp32 export (prefill and decode tokens/s through
onnxruntime-genai at batch 1, peak memory, size). Writes <out>/results.json and <out>/results.md and prints the
table; by default <out> is reports/<release>/bench/, so one release's run never overwrites another's.

--build-time N rebuilds each int8 ONNX artifact from its own overrides (verify off, into a scratch folder), N times
with the fp32 reference exported anew (reference_cache=false) and N times from the reference cache, in turn, each
as its own `quantgate build` process: the wall seconds of the whole command and each stage's, and their ratio.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.errors import ExitCode, UsageError
from pipeline.release.bench.settings import BenchSettings

PROG = "quantgate bench"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, __doc__)
    parser.add_argument("--release", default="candidate", help="the release (default folders below)")
    parser.add_argument("--artifacts-dir", type=Path, help="a folder of artifact folders (a release), or one artifact "
                        "folder; default artifacts/<release>")
    parser.add_argument("--out", type=Path, help="default reports/<release>/bench")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes timed (default 1 32)")
    parser.add_argument("--seconds", type=float, default=1.5, help="time budget per model x batch (after warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="intra-op threads (default: cores)")
    parser.add_argument("--sequence-length", type=int, default=128,
                        help="tokens per timed sample for token models, from the held-out samples' own tokens "
                             "(default 128; 0: as held out); fidelity is judged on the held-out samples as they are")
    parser.add_argument("--build-time", type=int, default=0, metavar="N",
                        help="also rebuild each artifact N times exporting its reference anew and N times from the "
                             "reference cache, in turn, and report the build's seconds (default 0: off)")
    parser.add_argument("--prompt-tokens", type=int, default=128,
                        help="decoders: the prompt's tokens, from the held-out text (default 128; at most the "
                             "context length less --new-tokens)")
    parser.add_argument("--new-tokens", type=int, default=32, help="decoders: tokens generated after the prompt "
                        "(default 32)")
    return parser


def settings(args: argparse.Namespace) -> BenchSettings:
    """The parsed options as the bench's typed settings; an option out of range is a one-line usage error."""
    at_least = {"--build-time": (args.build_time, 0, "a number of rebuilds, or 0 for none"),
                "--sequence-length": (args.sequence_length, 0, "a number of tokens, or 0 for the held-out samples "
                                                               "as they are"),
                "--threads": (args.threads, 1, "a number of threads"), "--prompt-tokens": (args.prompt_tokens, 1,
                                                                                         "a number of tokens"),
                "--new-tokens": (args.new_tokens, 1, "a number of tokens")}
    for option, (value, least, what) in at_least.items():
        if value < least:
            raise UsageError(f"{option} {value}: give {what}")
    if min(args.batches) < 1 or args.seconds <= 0:
        raise UsageError(f"--batches {' '.join(map(str, args.batches))} --seconds {args.seconds}: give batch sizes "
                         f"of at least 1 and a positive number of seconds")
    return BenchSettings(root=args.artifacts_dir or Path("artifacts") / args.release,
                         out=args.out or Path("reports") / args.release / "bench", release=args.release,
                         batches=tuple(args.batches), seconds=args.seconds, threads=args.threads,
                         sequence_length=args.sequence_length or None, build_runs=args.build_time,
                         prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens)


def main(argv: list[str] | None = None) -> int:
    """`quantgate bench` (also `python -m pipeline.commands.bench`)."""
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    from pipeline.release.bench.run import run_bench  # onnxruntime and numpy (0.2 s): not for --help
    run_bench(settings(build_parser().parse_args(argv)))
    return ExitCode.OK


if __name__ == "__main__":
    raise SystemExit(main())

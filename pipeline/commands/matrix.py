"""Build and verify every combination of a release in parallel (conf/experiment/release.yaml),
as a Hydra multirun; one failed combination does not stop the others. Ends with a table, also written to
<artifacts-dir>/matrix.json for the signoff. Overrides narrow or widen the sweep: target=avx2,avx512 mode=static.

`quantgate matrix [options] [key=value ...]` (also `python -m pipeline.commands.matrix`): the Hydra app's multirun
(pipeline/commands/build.py), under the release's lock; each combination's outcome is recorded by
pipeline/release/matrix.py.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.commands.build import run_hydra
from pipeline.config.compose import config_groups
from pipeline.release.lock import release_lock

PROG = "quantgate matrix"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, __doc__, overrides=True)
    parser.add_argument("--release", default="candidate", help="the release's name (default candidate)")
    parser.add_argument("--artifacts-dir", help="where its artifacts go; default artifacts/<release>")
    parser.add_argument("--launcher", default="joblib", choices=config_groups()["hydra/launcher"],
                        help="Hydra launcher (conf/hydra/launcher/; default joblib)")
    parser.add_argument("--jobs", type=int, default=2, help="combinations at a time with joblib (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    release_dir = args.artifacts_dir or f"artifacts/{args.release}"
    release_dir = next((o.partition("=")[2] for o in reversed(args.overrides) if o.startswith("artifacts_dir=")),
                       release_dir)
    # One matrix of a release at a time: two would each write its matrix.json, one record lost (Hydra's callbacks
    # swallow exceptions, so the lock is taken here, around the whole sweep).
    with release_lock(Path(release_dir), "matrix"):
        return run_hydra(["--multirun", "experiment=release", f"hydra/launcher={args.launcher}",
                          *([f"hydra.launcher.n_jobs={args.jobs}"] if args.launcher == "joblib" else []),
                          f"artifacts_dir={release_dir}", *args.overrides])


if __name__ == "__main__":
    raise SystemExit(main())

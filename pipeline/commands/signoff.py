"""The release signoff: every artifact folder of a release, judged and written up for a person and for CI.

    quantgate signoff --release NAME [--artifacts-dir artifacts/NAME] [--waivers FILE] [--out reports/NAME]
                      [--baseline PREVIOUS] [release.max_latency_ratio=1.0]

writes reports/<name>/signoff.md, signoff.html (self-contained: plots embedded, no network),
signoff.json (the same facts) and signoff.junit.xml (one testcase per artifact x CPU profile), and exits 0
only when the verdict is `ready`; 1 when `blocked`;
2 on a usage error (no such release, a malformed waivers file). What blocks a release: pipeline/release/signoff/.
"""
from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.config.schema import ReleaseConfig
from pipeline.errors import ExitCode, UsageError
from pipeline.release.signoff.baseline import load_baseline
from pipeline.release.signoff.rendering import summary, write_report
from pipeline.release.signoff.rows import READY, SignoffError
from pipeline.release.signoff.verdict import signoff
from pipeline.release.signoff.waivers import WAIVERS_DIR


def build_parser():
    parser = command_parser("quantgate signoff", __doc__)
    parser.add_argument("--release", required=True, help="the release name (artifacts/<name>/ by default)")
    parser.add_argument("--artifacts-dir", type=Path, help="the release's artifact folder; default artifacts/<release>")
    parser.add_argument("--waivers", type=Path, help="waivers YAML; default conf/waivers/<release>.yaml if it exists")
    parser.add_argument("--out", type=Path, help="report folder; default reports/<release>")
    parser.add_argument("--today", type=date.fromisoformat, help="judge waiver expiry as of this date (YYYY-MM-DD)")
    parser.add_argument("--public-key", type=Path, help="check each artifact's signature with this public key")
    parser.add_argument("--require-signatures", action="store_true", help="an unsigned artifact blocks the release")
    parser.add_argument("--baseline", help="the previous release (reports/<baseline>/signoff.json, beside --out) or "
                        "its signoff.json: what changed since")
    parser.add_argument("overrides", nargs="*", metavar="release.KEY=VALUE",
                        help="release settings (pipeline/config/schema.py ReleaseConfig), e.g. release.max_latency_ratio=1.2")
    return parser


def main(argv: list[str] | None = None) -> int:
    """`quantgate signoff` (also `python -m pipeline.commands.signoff`)."""
    return run_command("quantgate signoff", _command, argv)


def _command(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    release_dir = args.artifacts_dir or Path("artifacts") / args.release
    out_dir = args.out or Path("reports") / args.release
    settings = release_settings(args.overrides)
    baseline = load_baseline(args.baseline, out_dir) if args.baseline else None
    waivers = args.waivers or WAIVERS_DIR / f"{args.release}.yaml"
    if args.waivers and not args.waivers.is_file():
        raise SignoffError(f"the waivers file {args.waivers} does not exist")
    report = signoff(args.release, release_dir, waivers, args.today, args.public_key, args.require_signatures,
                     settings, baseline)
    write_report(report, out_dir)
    print(summary(report, out_dir))
    return ExitCode.OK if report["verdict"] == READY else ExitCode.FAILED


def release_settings(overrides: list[str]) -> ReleaseConfig:
    """ReleaseConfig with `release.KEY=VALUE` overrides, type-checked by OmegaConf against the dataclass."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    wrong = [item for item in overrides if not item.startswith("release.") or "=" not in item]
    if wrong:
        raise UsageError(f"{wrong[0]!r}: the signoff takes release settings as release.KEY=VALUE "
                         f"(keys: {', '.join(f.name for f in dataclasses.fields(ReleaseConfig))})")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ReleaseConfig),
                                 OmegaConf.from_dotlist([item.removeprefix("release.") for item in overrides]))
    except OmegaConfBaseException as error:
        raise UsageError(f"release settings {' '.join(overrides)}: {str(error).splitlines()[0]}") from None
    settings = ReleaseConfig(**OmegaConf.to_container(merged))
    for key in ("max_latency_ratio", "max_size_ratio"):
        if getattr(settings, key) <= 0:
            raise UsageError(f"release.{key}={getattr(settings, key)} must be more than 0")
    return settings


if __name__ == "__main__":
    raise SystemExit(main())

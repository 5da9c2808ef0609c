"""`quantgate sign --release NAME ...` or `quantgate sign --verify FOLDER ... --public-key KEY` (also `python -m
pipeline.commands.sign`, `make sign`): sign every artifact folder of a ready release, or verify signed folders.
The work and the command's description are pipeline/release/sign.py's."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.commandline import command_parser, run_command
from pipeline.errors import VerificationFailed
from pipeline.release import TrustError, sign
from pipeline.release.keys import load_signing_key
from pipeline.release.trust import Trust, verify_folder

PROG = "quantgate sign"


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(PROG, sign.__doc__)
    parser.add_argument("--release", help="the release to sign (its signoff must be ready)")
    parser.add_argument("--artifacts-dir", type=Path, help="default artifacts/<release>")
    parser.add_argument("--report", type=Path, help="the signoff's folder; default reports/<release>")
    parser.add_argument("--waivers", type=Path, help="waivers YAML; default conf/waivers/<release>.yaml if it exists")
    parser.add_argument("--key", type=Path, default=Path("keys/quantgate.key"), help="EC private key (PEM)")
    parser.add_argument("--certificate", type=Path, help="the key's certificate; default <key>.crt if it exists")
    parser.add_argument("--chain", type=Path, nargs="*", default=[],
                        help="CA certificates: sign in certificate mode (bundle carries the chain)")
    parser.add_argument("--verify", type=Path, nargs="+", metavar="FOLDER", help="verify these folders instead")
    parser.add_argument("--public-key", type=Path, help="with --verify: the public key")
    parser.add_argument("--certificate-chain", type=Path, nargs="*", default=[],
                        help="with --verify: CA certificates (certificate-signed folders)")
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command(PROG, _command, argv)


def _command(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verify:
        trust = Trust.of(args.public_key) if args.public_key and not args.certificate_chain else \
            Trust(args.public_key, tuple(args.certificate_chain))
        return _verify(args.verify, trust)
    if not args.release:
        parser.error("--release is required (or --verify FOLDER)")
    release_dir = args.artifacts_dir or Path("artifacts") / args.release
    report_dir = args.report or Path("reports") / args.release
    sign.check_built(args.release, release_dir)
    signing_key = load_signing_key(args.key, args.certificate)
    if args.chain and signing_key.certificate is None:
        raise TrustError("--chain needs the key's certificate (--certificate, or <key>.crt beside the key)")
    folders = sign.sign_release(args.release, release_dir, report_dir, signing_key, tuple(args.chain), args.waivers)
    expiry = f"; key valid until {signing_key.not_after:%Y-%m-%d}" if signing_key.not_after else ""
    print(f"quantgate sign: release {args.release}: {len(folders)} artifact folder(s) signed with {args.key}{expiry}")
    return 0


def _verify(folders: list[Path], trust: Trust) -> int:
    """Every folder checked and reported, then the verdict: VerificationFailed naming those that did not verify."""
    failed = []
    for folder in folders:
        try:
            result = verify_folder(folder, trust)
            print(f"verified {folder}: {result['files']} files signed, provenance matches ({result['signer']})")
        except TrustError as error:
            print(f"{PROG} --verify: {folder}: {error}", file=sys.stderr)
            failed.append(str(folder))
    if failed:
        raise VerificationFailed(f"{len(failed)} of {len(folders)} folder(s) did not verify: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Run a .pt2 package once, in a child process on a CPU profile (under `qemu-x86_64 -cpu MODEL`).

    python -m pipeline.verify.child_pt2 --package model.pt2 --inputs heldout.npz --out outputs.npz [--samples 3]

The guard comes first, with the standard library only: refused -> exit 3 and one line on stderr,
before numpy, torch or the package's library is loaded. Then torch loads the package and runs
one batch; the outputs go to --out (npz, under the model's output name) for the parent to compare.
A missing instruction kills this process with SIGILL, which the parent classifies.
"""
from __future__ import annotations

import argparse
import sys
import time

from pipeline.guard import EXIT_REFUSED, ArtifactRefused, StampError
from pipeline.guard.pt2 import ensure_can_run, read_package_stamp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.verify.child_pt2")
    parser.add_argument("--package", required=True)
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--no-guard", action="store_true", help="skip the guard (to show what a user without it sees)")
    args = parser.parse_args(argv)
    if not args.no_guard:
        try:
            verdict = ensure_can_run(args.package)
        except (ArtifactRefused, StampError) as error:
            print(f"quantgate guard: refused: {error}", file=sys.stderr, flush=True)
            return EXIT_REFUSED
        print(f"quantgate guard: ok: {verdict.message()}", flush=True)

    started = time.perf_counter()
    import numpy as np
    import torch
    torch.set_num_threads(1)  # under QEMU extra threads only spin
    runner = torch._inductor.aoti_load_package(args.package)
    loaded = time.perf_counter()
    with np.load(args.inputs) as archive:
        names = [name for name in archive.files if name != "labels"]
        inputs = [torch.from_numpy(archive[name][:args.samples]) for name in names]
    with torch.no_grad():
        output = runner(*inputs)
    ran = time.perf_counter()
    stamp = read_package_stamp(args.package)
    np.savez(args.out, **{"output": output.numpy()})
    print(f"ran {args.package} on {len(inputs[0])} samples: load {loaded - started:.1f} s, run {ran - loaded:.2f} s "
          f"(target {stamp.get('target_isa', 'unstamped')})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

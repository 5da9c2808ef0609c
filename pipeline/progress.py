"""Stage progress on stderr: a line when a step starts, its duration when it ends."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager


def say(message: str) -> None:
    print(f"[quantgate] {message}", file=sys.stderr, flush=True)


@contextmanager
def step(label: str):
    say(f"{label} ...")
    started = time.perf_counter()
    yield
    say(f"{label}: done in {time.perf_counter() - started:.1f} s")

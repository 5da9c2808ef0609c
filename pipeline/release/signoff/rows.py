"""The signoff's vocabulary: one row (an artifact x CPU profile, or an artifact x check), the verdict words, and the
error that stops a signoff before any judging.

A row's `ok` is True (met), False (a finding: blocks unless a valid waiver covers it and it is `waivable`) or None
(informational, never blocks); `outcome` is filled in by the waivers (pipeline/release/signoff/waivers.py).
"""
from __future__ import annotations

import re
from typing import Any

from pipeline.errors import InputError

SCHEMA = "quantgate.signoff/1"
READY, BLOCKED = "ready", "blocked"
JUNIT_FILE = "signoff.junit.xml"
# Rows that are not CPU profiles: checks on the artifact as a whole.
INTEGRITY_ROWS = ("files", "verify-inputs")  # tampering: a waiver cannot cover it
RELEASE_ROWS = "release"  # the artifact name of rows about the release as a whole (its matrix.json)

Row = dict[str, Any]


class SignoffError(InputError):
    """The release or its waivers cannot be judged (no such release, a malformed waivers file): exit 2."""


def row(artifact: str, profile: str, status: str, ok: bool | None, reason: str, *, expected: str = "",
        required: bool = True, waivable: bool = True, **extra) -> Row:
    """One artifact x profile (or artifact x check) row; `ok` None = informational, never blocks."""
    return {"artifact": artifact, "profile": profile, "expected": expected, "status": status, "ok": ok,
            "required": required, "waivable": waivable, "reason": reason, "outcome": None, "waiver": None,
            "fidelity": "", "figures": {}, "thresholds": {}, "latency": None, "cpu_comparison": None,
            "reference_cpu": None, "worst_outputs": None, "cpu": False, "anchor": anchor(artifact, profile),
            "samples": None, "command": None, "stderr_tail": [], "margins": {}, **extra}


def anchor(artifact: str, profile: str) -> str:
    """The HTML id of an artifact x profile's evidence."""
    return "ev-" + re.sub(r"[^A-Za-z0-9_-]+", "-", f"{artifact}--{profile}")


def mb(size: int) -> str:
    """A file size in words: `1.23 MB`, or `45.6 kB` below 100 kB."""
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"

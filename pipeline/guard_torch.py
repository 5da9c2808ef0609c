"""The guard for torch AOTInductor packages lives in pipeline/guard/pt2.py; this name stays for its importers.

    python -m pipeline.guard_torch model.pt2     # the same command as `python -m pipeline.guard`: exit 0 runnable, 3 refused
"""
from pipeline.guard.cli import main
from pipeline.guard.errors import ArtifactRefused, StampError
from pipeline.guard.pt2 import (AUDITED_KEY, STAMP_MEMBER, check_package, ensure_can_run, load_package, package_path,
                                read_package_stamp)
from pipeline.guard.stamp import GuardVerdict

__all__ = ["AUDITED_KEY", "STAMP_MEMBER", "ArtifactRefused", "GuardVerdict", "StampError", "check_package",
           "ensure_can_run", "load_package", "main", "package_path", "read_package_stamp"]

if __name__ == "__main__":
    raise SystemExit(main())

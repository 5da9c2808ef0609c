"""Completeness: the release holds every combination its matrix.json was asked for, and only those.

Rows for a missing, unreadable or empty matrix.json, for combinations that did not build (unless rebuilt after the
matrix finished), for built combinations whose folder is not in the release, and (informational) for folders the
matrix never asked for; and the report's `completeness` summary.
"""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from pipeline.errors import InputError
from pipeline.jsonfiles import read_json
from pipeline.release.matrix import MATRIX_FILE
from pipeline.release.signoff.rows import RELEASE_ROWS, Row, row


def matrix_rows(release: str, release_dir: Path, found: dict[str, dict]) -> tuple[dict | None, list[Row]]:
    """Completeness: rows for a missing matrix.json, for combinations that did not build (unless rebuilt after the
    matrix finished) and for built combinations whose folder is not in the release."""
    path = release_dir / MATRIX_FILE
    if not path.is_file():
        return None, [row(RELEASE_ROWS, "matrix", "no_matrix", False, f"no {MATRIX_FILE} in {release_dir}: nothing says "
                          f"which combinations this release was asked for, so it cannot be called complete (`make "
                          f"matrix RELEASE={release}`, or waive artifact `release`, profile `matrix`)")]
    fix = f"run the matrix again (`make matrix RELEASE={release}`)"
    try:
        matrix = read_json(path, "matrix", fix)
    except InputError as error:  # damaged or edited: the record of what was asked for is gone
        return None, [row(RELEASE_ROWS, "matrix", "unreadable", False, f"{error} (a release whose {MATRIX_FILE} "
                          f"cannot be read cannot be called complete)", waivable=False)]
    if not matrix["combinations"]:
        return matrix, [row(RELEASE_ROWS, "matrix", "empty", False, f"{path} lists no combination: nothing says "
                            f"what this release was asked for, so nothing can be checked complete; {fix}",
                            waivable=False)]
    rows = [found_row for combo in matrix.get("combinations", [])
            for found_row in combination_rows(combo, matrix, release_dir, found)]
    asked = {combo["artifact"] for combo in matrix.get("combinations", [])}
    rows += [row(name, "matrix", "not_asked", None, f"in the release folder, but not one of the {len(asked)} "
                 f"combinations {MATRIX_FILE} records") for name in sorted(set(found) - asked)]
    return matrix, rows


def combination_rows(combo: dict[str, Any], matrix: dict[str, Any], release_dir: Path,
                     found: dict[str, dict]) -> list[Row]:
    """A combination that built but whose folder is missing, or that did not build and was not rebuilt since."""
    command = shlex.join([".venv/bin/python", "-m", "pipeline", *combo["overrides"]])
    rebuilt = found.get(combo["artifact"])
    if combo["outcome"] not in ("build_failed", "crashed"):
        if rebuilt is None:
            return [row(combo["artifact"], "build", "missing", False, f"the matrix built "
                        f"{' '.join(combo['overrides'])} ({combo['outcome']}) but its folder is not in "
                        f"{release_dir}", reproduce=command)]
        return []
    if rebuilt and (rebuilt.get("build") or {}).get("time_utc", "") > matrix.get("finished_utc", ""):
        return []
    return [row(combo["artifact"], "build", combo["outcome"], False,
                f"the matrix combination {' '.join(combo['overrides'])} did not build: {combo['reason']}",
                reproduce=command)]


def completeness(matrix: dict | None, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """Every combination the matrix was asked for, and whether its artifact is in the release."""
    present = {a["name"] for a in artifacts}
    combinations = [{"artifact": c["artifact"], "overrides": c["overrides"], "outcome": c["outcome"],
                     "in_release": c["artifact"] in present} for c in (matrix or {}).get("combinations", [])]
    return {"matrix": matrix is not None, "asked": len(combinations),
            "in_release": sum(c["in_release"] for c in combinations), "combinations": combinations}

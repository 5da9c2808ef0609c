"""The release matrix: one outcome per combination of a `--multirun`, and a table when the sweep ends.

Each combination runs `quantize_task` through `run_combination`, which never raises (one failed or
crashed combination must not stop the others, whatever the launcher) and writes `outcome.json` into
the job's Hydra output folder, the outcome taken from what the task returned or raised. `MatrixTable`,
a Hydra callback that runs where the sweep was started, collects those files once every job is done,
prints the table and writes `matrix.json` into the artifacts folder, where the signoff reads it: a
combination that failed to build leaves no artifact folder, so without this record a release would
look complete while missing it.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback

from pipeline.config import rules
from pipeline.errors import ExitCode, QuantgateError, UsageError, translate
from pipeline.manifest import atomic_write_json
from pipeline.verify.report import VERIFY_FILE, VerifyReport, VerifyReportError

OUTCOME_FILE = "outcome.json"
MATRIX_FILE = "matrix.json"
MATRIX_SCHEMA = "quantgate.matrix/1"
# What the verification's exit code says about a combination that built (pipeline/errors.py).
OUTCOME_BY_EXIT = {ExitCode.OK: "pass", ExitCode.FAILED: "fail", ExitCode.NOT_VERIFIED: "not_verified"}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _verify_reason(folder: Path) -> tuple[str | None, str]:
    """The verify status in verify.json and the reasons of the profiles that did not meet their requirement."""
    try:
        report = VerifyReport.load(folder / VERIFY_FILE)
    except VerifyReportError as error:
        return None, str(error)
    reasons = [f"{name}: {p.reason}" for name, p in report.profiles.items() if p.required and not p.requirement_met]
    return report.status, "; ".join(reasons) or "every required profile met its requirement"


def claim_folder(folder: Path, overrides: list[str]) -> None:
    """Claim `folder` for this combination of the sweep, or refuse: two combinations that differ only in
    keys outside the folder's name (calibration.seed=0,1) would build into one folder, the second
    silently replacing the first. The claims live in the sweep's own folder (one per multirun)."""
    claims = Path(HydraConfig.get().sweep.dir) / ".claims"
    claims.mkdir(parents=True, exist_ok=True)
    claim = claims / hashlib.sha256(str(folder.absolute()).encode()).hexdigest()[:16]
    try:
        with open(claim, "x") as handle:
            json.dump(list(overrides), handle)
        return
    except FileExistsError:
        other = json.loads(claim.read_text() or "[]")
    differ = sorted({o.partition("=")[0] for o in set(overrides) ^ set(other)})
    raise UsageError(f"{folder} is also the folder of another combination of this sweep ({' '.join(other)}): the two "
                     f"differ only in {', '.join(differ) or 'nothing'}, which the folder name (<model>-<mode>-<target>) "
                     f"does not show, so one would replace the other. Sweep such keys in separate runs, each with "
                     f"its own artifacts_dir=...")


def run_combination(cfg, overrides: list[str]) -> int:
    """Build and verify one combination of a sweep; record what happened; return its exit code.

    The outcome comes from what quantize_task returned (the verification's exit code) or raised: a
    QuantgateError is a build refused with a message; anything else is a crash (traceback printed)."""
    # The builder (0.2 s) only when a combination builds: `quantgate signoff` imports this module for MATRIX_FILE
    from pipeline.builder.task import artifact_folder, quantize_task

    started = time.monotonic()
    folder = artifact_folder(cfg)
    verify_status = None
    try:
        try:
            rules.check(cfg)  # a combination the config refuses builds nothing, so claims no folder
            claim_folder(folder, overrides)
            code = quantize_task(cfg, overrides)
        except Exception as error:
            raise translate(error) or error
    except QuantgateError as error:  # refused before anything was published
        print(f"quantgate: error: {error}", file=sys.stderr, flush=True)
        code, outcome, reason = error.exit_code, "build_failed", str(error)
    except Exception as error:  # noqa: BLE001 - the sweep goes on; the traceback is printed and recorded
        traceback.print_exc()
        code, outcome, reason = ExitCode.INTERNAL, "crashed", f"{type(error).__name__}: {error}"
    else:
        if not cfg.verify.enabled:
            outcome, reason = "built", "verification skipped (verify.enabled=false)"
        else:
            verify_status, reason = _verify_reason(folder)
            outcome = OUTCOME_BY_EXIT.get(code, "fail")
    record = {"job": HydraConfig.get().job.num, "overrides": list(overrides), "artifact": folder.name,
              "artifact_dir": str(folder), "outcome": outcome, "exit_code": int(code), "verify_status": verify_status,
              "reason": reason, "seconds": round(time.monotonic() - started, 1), "finished_utc": utc_now()}
    atomic_write_json(Path(HydraConfig.get().runtime.output_dir) / OUTCOME_FILE, record)
    return code


def collect(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's outcome in a sweep folder; a job folder without one died before it could write it."""
    outcomes = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
                          key=lambda p: (len(p.name), p.name)):
        path = job_dir / OUTCOME_FILE
        try:
            outcome = json.loads(path.read_text())
            if isinstance(outcome, dict) and {"artifact", "overrides", "outcome", "reason"} <= set(outcome):
                outcomes.append(outcome)
                continue
            why = f"its {OUTCOME_FILE} lacks the outcome's keys"
        except FileNotFoundError:
            why = "the job died without recording an outcome"
        except (OSError, ValueError) as error:  # damaged: never a silent pass, never a crash of the table
            why = f"its {OUTCOME_FILE} cannot be read ({str(error).splitlines()[0][:80]})"
        outcomes.append({"job": job_dir.name, "overrides": [], "artifact": f"(job {job_dir.name})",
                         "artifact_dir": None, "outcome": "crashed", "exit_code": None, "verify_status": None,
                         "reason": f"{why}; see {job_dir}", "seconds": None, "finished_utc": utc_now()})
    return outcomes


def format_table(outcomes: list[dict[str, Any]]) -> str:
    # The overrides that tell the combinations apart (the artifact name alone may not, e.g. when
    # a sweep varies calibration.n_samples).
    common = set.intersection(*(set(o["overrides"]) for o in outcomes)) if outcomes else set()
    rows = [("job", "artifact", "outcome", "exit", "time", "swept", "detail")]
    for o in outcomes:
        seconds = "-" if o["seconds"] is None else f"{o['seconds']:.0f}s"
        swept = " ".join(item for item in o["overrides"] if item not in common) or "-"
        rows.append((str(o["job"]), o["artifact"], o["outcome"], str(o["exit_code"]), seconds, swept,
                     o["reason"][:120]))
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[6] for row in rows]
    counts = {}
    for o in outcomes:
        counts[o["outcome"]] = counts.get(o["outcome"], 0) + 1
    summary = ", ".join(f"{n} {word}" for word, n in sorted(counts.items()))
    return "\n".join([f"matrix: {len(outcomes)} combination(s): {summary}", *lines])


class MatrixTable(Callback):
    """Hydra callback: after a --multirun, print the table and write matrix.json (sweep and artifacts folders)."""

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        outcomes = collect(sweep_dir)
        print("\n" + format_table(outcomes), flush=True)
        payload = {"schema": MATRIX_SCHEMA, "finished_utc": utc_now(), "sweep_dir": str(sweep_dir),
                   "launcher": str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
                   "combinations": outcomes}
        atomic_write_json(sweep_dir / MATRIX_FILE, payload)
        # One release = one artifacts folder; the signoff reads <artifacts_dir>/matrix.json.
        for release_dir in sorted({str(Path(o["artifact_dir"]).parent) for o in outcomes if o["artifact_dir"]}):
            mine = [o for o in outcomes if o["artifact_dir"] and str(Path(o["artifact_dir"]).parent) == release_dir]
            atomic_write_json(Path(release_dir) / MATRIX_FILE, payload | {"release": Path(release_dir).name,
                                                                          "combinations": mine})
            print(f"matrix: wrote {Path(release_dir) / MATRIX_FILE}", flush=True)

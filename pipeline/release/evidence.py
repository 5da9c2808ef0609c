"""What a signoff requires beyond each artifact's own verify.json: that the evidence is the evidence it names.

Each check returns signoff rows (pipeline/release/signoff/rows.py `row`) for one artifact folder (`artifact_stamp`
reads the stamp the model file carries, for these checks and for publishing):

- `identity_rows`: the folder's name is the name its (signed) manifest.json was built under, and the model file's
  stamp says the mode and target the manifest says: two signed folders swapped by name are caught (never waivable).
- `floor_rows`: the target's floor CPU (conf/target/<target>.yaml `floor_profile`) ran and met its requirement; a
  verification with `verify.profiles=[native]` did not run it, and blocks unless waived by that profile's name.
- `int8_rows`: how many of the model's weight-bearing compute nodes (MatMul, Gemm, Conv) compute in int8; an
  accuracy-gate fallback that left most of them fp32 is a finding (waivable as profile `int8`), not a pass.
- `report_rows`: the calibration report, read against its shape; a malformed one blocks as tampered.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from pipeline import kinds
from pipeline.builder.graph_counts import count_graph
from pipeline.guard import StampError, read_stamp
from pipeline.guard.artifact import ONNX
from pipeline.paths import CONF_DIR

Row = Callable[..., dict[str, Any]]
# Above this share of weight-bearing compute nodes left fp32, the artifact is mostly an fp32 model stamped int8.
MAX_FP32_SHARE = 0.5


def artifact_stamp(manifest) -> dict[str, str]:
    """The quantgate.* stamp as the model file carries it (the source of truth), else as manifest.json has it."""
    model = manifest.path(manifest.model_file)
    try:  # the reader of the model file's container (pipeline/guard/artifact.py)
        return read_stamp(model) or dict(manifest.stamp)
    except (StampError, OSError, ValueError):
        return dict(manifest.stamp)


def identity_rows(row: Row, folder: Path, manifest, stamp: dict[str, str]) -> list[dict[str, Any]]:
    """The folder name, the manifest and the model's stamp must tell the same artifact."""
    problems = []
    if manifest.name != folder.name:
        problems.append(f"the folder is named {folder.name} but its manifest.json was built as {manifest.name}")
    for key, recorded in (("mode", manifest.mode), ("target_isa", manifest.target)):
        if key in stamp and stamp[key] != recorded:
            problems.append(f"{manifest.model_file}'s stamp says {key}={stamp[key]} but manifest.json says {recorded}")
    if not problems:
        return []
    return [row(folder.name, "identity", "misnamed", False, "; ".join(problems) + ": folders renamed or swapped? put "
                "each folder back under its own name (or rebuild); a renamed artifact cannot be signed off",
                waivable=False)]


def floor_profile(target: str) -> str | None:
    """The target's floor CPU profile from conf/target/<target>.yaml; None when it names none (or is unknown)."""
    import yaml
    path = CONF_DIR / "target" / f"{target}.yaml"
    try:
        return (yaml.safe_load(path.read_text()) or {}).get("floor_profile")
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def floor_rows(row: Row, name: str, target: str, profiles: dict[str, Any]) -> list[dict[str, Any]]:
    """A row for the floor CPU when verify.json has no run of it (the runs it has are judged as their own rows)."""
    floor = floor_profile(target)
    if floor is None or any(profile.partition("@")[0] == floor for profile in profiles):
        return []
    ran = ", ".join(profiles) or "none"
    return [row(name, floor, "not_run", False, f"the target {target}'s floor CPU {floor} was not verified (verify.json "
                f"ran: {ran}): the release would ship with no evidence it runs on the lowest CPU it is built for; "
                f"verify with the target's profiles (`make verify ARTIFACT_DIR=...` without verify.profiles=...) or "
                f"waive artifact {name}, profile {floor}", expected="pass")]


def weight_compute_nodes(model) -> tuple[int, int]:
    """(int8, fp32) counts of the compute nodes that carry a weight, as the build stamped them
    (pipeline/builder/graph_counts.py, recounted here from the file the signoff judges)."""
    counts = count_graph(model)
    return counts.int8_nodes, counts.fp32_nodes


def int8_rows(row: Row, folder: Path, manifest) -> list[dict[str, Any]]:
    """The share of weight-bearing compute nodes left fp32 (the accuracy gate's fallback among them)."""
    path = folder / manifest.model_file
    try:
        if not path.is_file() or kinds.kind_of_manifest(manifest).container != ONNX:  # no ONNX graph to count in
            return []
    except kinds.KindError:  # a folder of no kind: the identity and files rows say what is wrong
        return []
    import onnx
    try:
        int8, fp32 = weight_compute_nodes(onnx.load(str(path), load_external_data=False))
    except Exception:  # noqa: BLE001 - an unreadable model is the `files` row's finding (its sha256)
        return []
    total = int8 + fp32
    if not total or not fp32:
        return []
    excluded = len(manifest.fallback.excluded_nodes) if manifest.fallback else 0
    gate = f" ({excluded} taken out by the accuracy gate's fallback)" if excluded else ""
    share = fp32 / total
    words = f"{fp32} of {total} weight-bearing compute nodes (MatMul, Gemm, Conv) stay fp32{gate}, {int8} run in int8"
    if share <= MAX_FP32_SHARE:
        return [row(manifest.name, "int8", "partly_fp32", None, words)]
    return [row(manifest.name, "int8", "mostly_fp32", False, f"{words}: mostly an fp32 model stamped int8 (more than "
                f"{MAX_FP32_SHARE:.0%} fp32); relax the budget the gate held (verify.max_accuracy_drop), calibrate on "
                f"better data, or waive artifact {manifest.name}, profile int8")]


def read_calibration_report(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the report, None) or (None, what is wrong with it): an object whose `tensors` is a list of objects each
    naming a tensor and its fraction outside the calibration range."""
    try:
        report = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return None, f"{path.name} is not valid JSON ({str(error).splitlines()[0][:120]})"
    if not isinstance(report, dict):
        return None, f"{path.name} must be a JSON object"
    tensors = report.get("tensors", [])
    if not isinstance(tensors, list) or not all(
            isinstance(t, dict) and isinstance(t.get("tensor"), str) and isinstance(t.get("fraction_outside"),
                                                                                  (int, float)) for t in tensors):
        return None, f"{path.name}: 'tensors' must be a list of {{tensor, fraction_outside}} records"
    for key in ("worst_fraction_outside", "warn_threshold", "fail_threshold"):
        if report.get(key) is not None and not isinstance(report[key], (int, float)):
            return None, f"{path.name}: {key!r} must be a number, not {json.dumps(report[key])[:40]}"
    return report, None


def report_rows(row: Row, name: str, path: Path) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The calibration report and, when it cannot be read, a tampered row (never waivable)."""
    if not path.is_file():
        return None, []
    report, problem = read_calibration_report(path)
    if problem is None:
        return report, []
    return None, [row(name, "files", "tampered", False, f"{problem}: it was changed after the build; rebuild the "
                      f"artifact (a damaged artifact cannot be signed off)", waivable=False)]

"""Findings on each artifact's facts, judged against the release settings (release.max_latency_ratio,
release.max_size_ratio): what it costs to run and to ship, and what the build measured on its own host.

Each finding kind is one small function `(facts, settings) -> list[Row]` registered with `@finding(kind)`; the
decorator returns its release-wide form `(artifacts, settings=ReleaseConfig()) -> rows` (every artifact in turn),
and `finding_rows` runs every kind in registration order (kind by kind, the order the report lists them):

- `latency`: int8 slower than fp32 beyond release.max_latency_ratio and beyond the timings' noise blocks
  (waivable); within the noise, or a model too fast to time, it is reported, not judged.
- `size`: int8 larger than release.max_size_ratio x fp32 blocks (waivable); a compiled .pt2 is not compared.
- `build-speed`: what pipeline/builder/speed.py measured at build time (manifest.json `speed`): int8 slower than
  fp32 beyond noise, or larger, in its words naming the cause (informational: the native latency row blocks).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pipeline import kinds
from pipeline.config.schema import ReleaseConfig
from pipeline.manifest import Manifest
from pipeline.release.signoff.rows import Row, mb, row

Facts = dict[str, Any]
Judge = Callable[[Facts, ReleaseConfig], list[Row]]
ReleaseFinding = Callable[..., list[Row]]  # (artifacts, settings=ReleaseConfig()) -> rows
FINDINGS: dict[str, ReleaseFinding] = {}

# Below this fp32 p50, a batch-1 latency is timer and scheduler noise, not the model: not measurable.
MIN_MEASURABLE_MS = 0.1
MIN_NOISE_MARGIN = 0.05  # the least relative noise assumed of any timing (a quiet host's run-to-run spread)
FEW_REPEATS, FEW_REPEATS_MARGIN = 5, 0.25  # fewer repeats than this: their spread says little


def finding(kind: str) -> Callable[[Judge], ReleaseFinding]:
    """Register `judge(facts, settings)` as the finding `kind`; returns its release-wide form."""
    def register(judge: Judge) -> ReleaseFinding:
        def over_release(artifacts: list[Facts], settings: ReleaseConfig | None = None) -> list[Row]:
            settings = settings or ReleaseConfig()
            return [found for facts in artifacts for found in judge(facts, settings)]
        over_release.__doc__, over_release.__name__ = judge.__doc__, judge.__name__
        FINDINGS[kind] = over_release
        return over_release
    return register


def finding_rows(artifacts: list[Facts], settings: ReleaseConfig) -> list[Row]:
    """Every registered finding's rows, kind by kind."""
    return [found for judge in FINDINGS.values() for found in judge(artifacts, settings)]


def noise_margin(figures: dict[str, Any]) -> float:
    """The relative noise of the int8/fp32 ratio from the repeats' own spread ((p95 - p50) / p50 of either side),
    at least MIN_NOISE_MARGIN, and FEW_REPEATS_MARGIN when there were too few repeats to tell."""
    spreads = [(figures[f"{side}_p95_ms"] - figures[f"{side}_p50_ms"]) / max(figures[f"{side}_p50_ms"], 1e-12)
               for side in ("int8", "fp32")]
    floor = FEW_REPEATS_MARGIN if (figures.get("repeats") or 0) < FEW_REPEATS else MIN_NOISE_MARGIN
    return max([floor, *spreads])


@finding("latency")
def latency_rows(facts: Facts, settings: ReleaseConfig) -> list[Row]:
    """Performance as a finding: int8 slower than fp32 beyond release.max_latency_ratio by more than the timings'
    noise blocks (waivable: `latency`); within the noise, or a model too fast to time, it is reported, not judged."""
    figures, limit = facts["latency"], settings.max_latency_ratio
    if figures is None:
        return [row(facts["name"], "latency", "not_measured", None, "no native latency in verify.json "
                    "(int8 and the fp32 reference, batch 1): performance is unknown")]
    ratio, margin = figures["p50_ratio"], noise_margin(figures)
    speed = f"{ratio:.2f}x slower than" if ratio > 1 else f"{1 / ratio:.2f}x faster than"
    measured = (f"int8 is {speed} fp32 (p50 {figures['int8_p50_ms']:.3g} ms vs {figures['fp32_p50_ms']:.3g} ms, "
                f"batch {figures['batch']}, {figures.get('repeats') or '?'} repeats, on {figures['profile']})")
    if figures["fp32_p50_ms"] < MIN_MEASURABLE_MS:
        return [row(facts["name"], "latency", "not_measurable", None, f"{measured}: a model this fast "
                    f"(under {MIN_MEASURABLE_MS:g} ms) cannot be timed apart from the timer's noise; not "
                    f"judged against release.max_latency_ratio", latency=figures)]
    within, noisy = ratio <= limit, limit < ratio <= limit * (1 + margin)
    status = "within_limit" if within else "within_noise" if noisy else "too_slow"
    judged = ("<=" if within else ">") + f" release.max_latency_ratio {limit:g}"
    if noisy:
        judged += f", but within the timings' noise (±{margin:.0%} from the repeats' spread): not a finding"
    return [row(facts["name"], "latency", status, None if noisy else within,
                f"{measured}: int8/fp32 {ratio:.2f} {judged}", latency=figures)]


@finding("size")
def size_rows(facts: Facts, settings: ReleaseConfig) -> list[Row]:
    """Size as a finding: int8 larger than release.max_size_ratio x fp32 blocks (waivable: `size`)."""
    size, limit = facts["size"], settings.max_size_ratio
    if not size.get("fp32_bytes"):
        return []
    kind = kinds.kind_of_manifest(Manifest.load(Path(facts["folder"])))  # the recorded stamp: the file may be damaged
    if kind.native_code:  # compiled code and weights, against an ONNX graph: not alike
        return [row(facts["name"], "size", "not_comparable", None, f"a compiled .pt2 package (code and weights, "
                    f"{mb(size['int8_bytes'])}) is not measured against the fp32 ONNX reference's size "
                    f"({mb(size['fp32_bytes'])}); release.max_size_ratio applies to ONNX artifacts")]
    within = size["ratio"] <= limit
    scheme = f"int{kind.bits}"
    return [row(facts["name"], "size", "within_budget" if within else "too_large", within,
                f"{scheme} is {size['ratio']:.2f}x the fp32 size ({mb(size['int8_bytes'])} vs "
                f"{mb(size['fp32_bytes'])}): {'<=' if within else '>'} release.max_size_ratio {limit:g}")]


@finding("build-speed")
def build_speed_rows(facts: Facts, settings: ReleaseConfig) -> list[Row]:
    """What the build measured on its own host (pipeline/builder/speed.py) as findings: int8 slower than fp32 beyond
    noise (with its cause: the op type where int8 spends its time, and what avoids it), or larger. Informational:
    the native latency row is what blocks. A model too small to time has no warning, hence no finding."""
    warnings = (facts.get("build_speed") or {}).get("warnings", {})
    return [row(facts["name"], "build-speed", f"int8_{cost}", None, f"measured at build time: {warning}")
            for cost, warning in warnings.items()]

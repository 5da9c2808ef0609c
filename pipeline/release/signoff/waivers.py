"""Waivers: a person's signed-for exception to a finding, read from conf/waivers/<release>.yaml, and applied to the
rows (each row's `outcome`: ok, info, failed, waived or waiver_expired).

A waiver names an artifact folder and a profile (shell-style wildcards allowed), a reason, who and an expiry date;
it covers only waivable rows (never tampering), and an expired one blocks with the waiver's name.
"""
from __future__ import annotations

import dataclasses
from datetime import date
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from pipeline.paths import CONF_DIR
from pipeline.release.signoff.rows import Row, SignoffError

WAIVERS_DIR = CONF_DIR / "waivers"
FIELDS = ("artifact", "profile", "reason", "who", "expires")


@dataclasses.dataclass
class Waiver:
    artifact: str  # artifact folder name; shell-style wildcards allowed (minilm-*-avx512)
    profile: str  # a CPU profile (native, haswell, ...), `build`, `verify`, or a wildcard
    reason: str
    who: str
    expires: date  # valid through this day (UTC)
    used_by: list[str] = dataclasses.field(default_factory=list)

    def matches(self, artifact: str, profile: str) -> bool:
        return fnmatchcase(artifact, self.artifact) and fnmatchcase(profile, self.profile)

    def expired(self, today: date) -> bool:
        return today > self.expires

    def to_json(self, today: date) -> dict[str, Any]:
        return {"artifact": self.artifact, "profile": self.profile, "reason": self.reason, "who": self.who,
                "expires": self.expires.isoformat(), "expired": self.expired(today), "used_by": self.used_by}


def load_waivers(path: Path | None) -> list[Waiver]:
    """A YAML file `waivers: [{artifact, profile, reason, who, expires: YYYY-MM-DD}, ...]`; missing file = none."""
    if path is None or not path.is_file():
        return []
    import yaml
    try:
        payload = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SignoffError(f"{path} is not valid YAML: {error}") from None
    entries = payload.get("waivers") if isinstance(payload, dict) else None
    if not isinstance(entries, list):
        raise SignoffError(f"{path}: expected a top-level `waivers:` list")
    return [waiver(path, index, entry) for index, entry in enumerate(entries, 1)]


def waiver(path: Path, index: int, entry: Any) -> Waiver:
    """The waiver #`index` of `path`, or SignoffError naming the missing or unknown key, or the bad date."""
    missing = [name for name in FIELDS if not isinstance(entry, dict) or not entry.get(name)]
    if missing:
        raise SignoffError(f"{path}: waiver #{index} lacks {', '.join(missing)} (each waiver needs "
                           f"{', '.join(FIELDS)})")
    expires = entry["expires"]
    if not isinstance(expires, date):
        try:
            expires = date.fromisoformat(str(expires))
        except ValueError:
            raise SignoffError(f"{path}: waiver #{index} expires={expires!r} is not a date (YYYY-MM-DD)") from None
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise SignoffError(f"{path}: waiver #{index} has unknown key(s) {', '.join(unknown)}")
    return Waiver(str(entry["artifact"]), str(entry["profile"]), str(entry["reason"]).strip(), str(entry["who"]),
                  expires)


def apply_waivers(rows: list[Row], waivers: list[Waiver], today: date) -> None:
    """Set each row's `outcome`; the first waiver that matches a waivable failed row covers it (or, expired, not)."""
    for row in rows:
        if row["ok"] is None:
            row["outcome"] = "info"
            continue
        if row["ok"]:
            row["outcome"] = "ok"
            continue
        row["outcome"] = "failed"
        if not row["waivable"]:
            continue
        waiver = next((w for w in waivers if w.matches(row["artifact"], row["profile"])), None)
        if waiver is None:
            continue
        waiver.used_by.append(f"{row['artifact']}/{row['profile']}")
        row["waiver"] = waiver.to_json(today) | {"used_by": None}
        row["outcome"] = "waiver_expired" if waiver.expired(today) else "waived"

"""Waivers files: every field required, dates parsed, wildcards matched, expiry inclusive."""
from datetime import date

import pytest

from pipeline.release.signoff import SignoffError, load_waivers


def write(tmp_path, text):
    path = tmp_path / "waivers.yaml"
    path.write_text(text)
    return path


def test_a_waiver_needs_every_field(tmp_path):
    with pytest.raises(SignoffError, match="waiver #1 lacks reason, who, expires"):
        load_waivers(write(tmp_path, "waivers:\n  - {artifact: a, profile: native}\n"))


def test_bad_dates_and_unknown_keys_are_named(tmp_path):
    with pytest.raises(SignoffError, match="not a date"):
        load_waivers(write(tmp_path, "waivers:\n  - {artifact: a, profile: p, reason: r, who: w, expires: soon}\n"))
    with pytest.raises(SignoffError, match="unknown key.*owner"):
        load_waivers(write(tmp_path, "waivers:\n  - {artifact: a, profile: p, reason: r, who: w, expires: 2030-01-01, "
                                     "owner: x}\n"))


def test_matching_and_expiry(tmp_path):
    [waiver] = load_waivers(write(tmp_path, "waivers:\n  - {artifact: 'minilm-*-avx512', profile: native, "
                                            "reason: no host, who: w, expires: 2030-01-31}\n"))
    assert waiver.matches("minilm-static-avx512", "native") and not waiver.matches("minilm-static-avx2", "native")
    assert not waiver.expired(date(2030, 1, 31)) and waiver.expired(date(2030, 2, 1))


def test_no_file_means_no_waivers(tmp_path):
    assert load_waivers(tmp_path / "absent.yaml") == [] and load_waivers(None) == []

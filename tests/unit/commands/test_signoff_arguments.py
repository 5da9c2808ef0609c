"""`quantgate signoff` arguments (pipeline/commands/signoff.py): release settings typed by the schema, bad ones
refused in one line naming the keys, and a missing release or waivers file refused with exit 2 before any report."""
import pytest

from pipeline.commands.signoff import build_parser, main, release_settings
from pipeline.config.schema import ReleaseConfig
from pipeline.errors import UsageError


def test_release_settings_are_the_schemas_with_the_overrides_typed():
    assert release_settings([]) == ReleaseConfig()
    settings = release_settings(["release.max_latency_ratio=1.2", "release.max_size_ratio=0.3"])
    assert (settings.max_latency_ratio, settings.max_size_ratio) == (1.2, 0.3)


@pytest.mark.parametrize("overrides, words", [
    (["max_latency_ratio=1.2"], "the signoff takes release settings as release.KEY=VALUE (keys: max_latency_ratio"),
    (["release.max_latency_ratio=fast"], "release settings release.max_latency_ratio=fast: "),
    (["release.max_size_ratio=0"], "release.max_size_ratio=0.0 must be more than 0"),
])
def test_bad_release_settings_are_refused_naming_what_is_wrong(overrides, words):
    with pytest.raises(UsageError) as refused:
        release_settings(overrides)
    assert words in str(refused.value)


def test_the_parser_takes_the_documented_options():
    args = build_parser().parse_args(["--release", "rc", "--today", "2026-01-02", "--require-signatures",
                                      "release.max_size_ratio=0.5"])
    assert (args.release, args.today.isoformat(), args.require_signatures, args.overrides) == (
        "rc", "2026-01-02", True, ["release.max_size_ratio=0.5"])


def test_a_missing_release_or_waivers_file_exits_2_in_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "reports"
    assert main(["--release", "rc", "--artifacts-dir", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "quantgate signoff: error: " in capsys.readouterr().err and not out.exists()
    (tmp_path / "rc").mkdir()
    assert main(["--release", "rc", "--artifacts-dir", str(tmp_path / "rc"), "--out", str(out),
                 "--waivers", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"quantgate signoff: error: the waivers file {tmp_path / 'none.yaml'} does "
                                        f"not exist"] and not out.exists()

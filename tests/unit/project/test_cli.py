"""The one command line: every command's --help, --version, a hint for --option habits, usage errors as one
line with exit 2, and one table of exit codes (pipeline/errors.py), the README's."""
import os
import re
import subprocess
import sys

import pytest

from pipeline.cli import ALL_COMMANDS
from pipeline.commandline import run_command
from pipeline.config.compose import config_groups
from pipeline.errors import MEANING, ExitCode, NotVerified, Refused, UsageError, VerificationFailed
from tests.conftest import REPO

# Options (or words) each command's --help must list.
HELP = {
    "build": ["--multirun", "--cfg", "--version", "key=value"],
    "verify": ["--artifact-dir", "--artifact", "--reference", "--inputs", "--target", "--out", "key=value"],
    "inspect": ["MODEL.onnx|MODEL.pt2"],
    "audit": ["--target", "--features", "--json", "key=value"],
    "matrix": ["--release", "--artifacts-dir", "--launcher", "--jobs", "key=value"],
    "signoff": ["--release", "--artifacts-dir", "--waivers", "--out", "--public-key", "--require-signatures",
                "--baseline", "release.KEY=VALUE"],
    "bench": ["--release", "--artifacts-dir", "--out", "--batches", "--seconds", "--threads", "--build-time"],
    "arm": ["--requirements"],
    "keys": ["--out", "--days", "--force"],
    "sign": ["--release", "--key", "--certificate", "--chain", "--verify"],
    "provenance": ["--public-key", "--json"],
    "publish": ["--release", "--registry", "--public-key", "--force"],
    "pull": ["--out", "--public-key", "--force"],
    "registry": ["start", "stop", "--dir", "--port"],
}


def quantgate(*args: str, module: str = "pipeline.cli") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def assert_one_line_usage_error(result: subprocess.CompletedProcess, prog: str, *words: str) -> None:
    assert result.returncode == ExitCode.USAGE, (result.stdout[-2000:], result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_every_command_has_its_help_checked():
    assert set(HELP) == set(ALL_COMMANDS)


@pytest.mark.parametrize("command", sorted(HELP))
def test_help_of_every_command_lists_its_options(command):
    result = quantgate(command, "--help")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: quantgate {command}")
    for option in HELP[command]:
        assert option in result.stdout, option


def test_top_level_help_lists_every_command_and_the_exit_codes():
    result = quantgate("--help")
    assert result.returncode == 0
    for command in ALL_COMMANDS:
        assert re.search(rf"^  {command}\s", result.stdout, re.M), command
    for code in ExitCode:
        assert re.search(rf"^  {code.value}\s", result.stdout, re.M), code


def test_build_help_lists_the_config_groups_and_choices_not_internal_ones():
    result = quantgate("build", "--help")
    text = result.stdout
    assert result.returncode == 0 and "powered by Hydra" not in text
    groups = dict(re.findall(r"^  ([\w/]+) +(\S.*)$", text.split("config groups")[1].split("any key")[0], re.M))
    assert {"schema", "waivers", "cpu"}.isdisjoint(groups)
    for group, choices in config_groups().items():
        assert [c.rstrip("*") for c in groups[group].split("  (")[0].split(", ")] == choices, group
    assert groups["target"].split(", ")[1] == "avx2*" and groups["export"] == "onnx*, aoti"
    # `python -m pipeline --help` is Hydra's own --help, showing the same text.
    assert quantgate("--help", module="pipeline").stdout == text


def test_version_is_quantgates_not_hydras():
    from importlib import metadata
    for result in (quantgate("--version"), quantgate("build", "--version"), quantgate("--version", module="pipeline")):
        assert result.returncode == 0 and result.stdout.strip() == f"quantgate {metadata.version('quantgate')}"


@pytest.mark.parametrize("args, hint", [
    (["--avx2"], "unknown option --avx2: quantgate takes Hydra overrides: target=avx2"),
    (["build", "--avx512-vnni"], "unknown option --avx512-vnni: quantgate takes Hydra overrides: target=avx512_vnni"),
    (["--static", "target=avx2"], "quantgate takes Hydra overrides: mode=static"),
    (["--target", "avx2"], "unknown option --target: quantgate takes Hydra overrides: target=avx2"),
    (["build", "--n-samples=256"], "quantgate takes Hydra overrides: calibration.n_samples=256"),
    (["--verbose"], "unknown option --verbose; see quantgate build --help"),
])
def test_option_habits_get_a_hint_and_the_usage_code(args, hint):
    assert_one_line_usage_error(quantgate(*args), "quantgate", hint)


@pytest.mark.parametrize("override, words", [
    ("target=avx3", ["target=avx3", "valid targets: arm64, avx2, avx512, avx512_vnni, x86_64_v2"]),
    ("calibration.n_samples=abc", ["calibration.n_samples=abc", "'abc' is not an integer"]),
    ("calibration.method=foo", ["calibration.method=foo", "valid: minmax, entropy, percentile"]),
    ("verify.nope=1", ["unknown key verify.nope", "valid keys of verify:", "min_cosine_mean"]),
    ("target=[avx2", ["cannot read an override"]),
    ("calibration=hub", ["calibration=hub needs", "calibration.hub_name=NAME"]),
])
@pytest.mark.parametrize("module", ["pipeline.cli", "pipeline"])
def test_bad_overrides_are_one_line_with_the_usage_code(tmp_path, module, override, words):
    result = quantgate(override, f"artifacts_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", module=module)
    assert_one_line_usage_error(result, "quantgate", *words)
    assert not (tmp_path / "minilm-dynamic-avx2").exists()


@pytest.mark.parametrize("args, prog, words", [
    (["biuld"], "quantgate", ["unknown command 'biuld' (did you mean build?)"]),
    (["signoff"], "quantgate signoff", ["required: --release"]),
    (["verify", "--avx2"], "quantgate verify", ["unknown option --avx2: use --target avx2"]),
    (["verify", "--artifact-dir", "nowhere", "--emulated-max-samples", "2"], "quantgate verify",
     ["quantgate takes Hydra overrides: verify.emulated_max_samples=2"]),
    (["signoff", "--release", "rc", "target=avx2"], "quantgate signoff", ["'target=avx2'", "takes release settings as release.KEY=VALUE"]),
    (["registry", "go"], "quantgate registry", ["invalid choice: 'go'"]),
    (["matrix", "--launcher", "slurm"], "quantgate matrix", ["invalid choice: 'slurm'", "submitit_slurm"]),
    (["audit", "README.md", "verify.enabled=false"], "quantgate audit", ["give --target NAME"]),
])
def test_command_usage_errors_are_one_line_with_the_usage_code(args, prog, words):
    assert_one_line_usage_error(quantgate(*args), prog, *words)


@pytest.mark.parametrize("raised, code", [
    (UsageError("bad"), ExitCode.USAGE), (VerificationFailed("bad"), ExitCode.FAILED),
    (Refused("bad"), ExitCode.REFUSED), (NotVerified("bad"), ExitCode.NOT_VERIFIED),
    (KeyboardInterrupt(), ExitCode.INTERRUPTED), (SystemExit(0), ExitCode.OK), (RuntimeError("bug"), ExitCode.INTERNAL),
])
def test_run_command_is_where_errors_become_exit_codes(capsys, raised, code):
    def command(argv):
        raise raised
    assert run_command("quantgate x", command, []) == code
    err = capsys.readouterr().err
    if isinstance(raised, UsageError | VerificationFailed | Refused | NotVerified):
        assert err == "quantgate x: error: bad\n"
    elif isinstance(raised, KeyboardInterrupt):
        assert err == "quantgate x: interrupted\n"
    elif isinstance(raised, RuntimeError):
        assert "Traceback" in err and "internal error" in err


def test_a_command_returns_its_outcome_code():
    assert run_command("quantgate x", lambda argv: ExitCode.NOT_VERIFIED, []) == 4


def test_readme_has_the_exit_code_table_and_every_command():
    section = (REPO / "README.md").read_text().split("## Command line")[1].split("\n## ")[0]
    for code in ExitCode:
        assert re.search(rf"^\| {code.value} \|", section, re.M), f"exit code {code.value} ({MEANING[code]})"
    for command in ALL_COMMANDS:
        assert re.search(rf"`quantgate [^`]*\b{command}\b", section), command


@pytest.mark.parametrize("args, fast", [
    (["build", "target=avx2"], True), (["target=avx2"], True), (["build", "--multirun", "target=avx2,avx512"], False),
    (["target=avx2", "hydra/launcher=joblib"], False), (["matrix"], False), (["verify", "--artifact-dir", "x"], False),
    ([], False), (["biuld"], False)])
def test_only_a_single_build_skips_the_interpreters_teardown(args, fast):
    from pipeline.cli import one_build
    assert one_build(args) is fast


def test_skipping_the_teardown_still_runs_atexit_and_flushes_everything(tmp_path):
    """exit_without_teardown: atexit handlers run, buffered stdout and the log file reach their files, the code
    is the process's."""
    marker, log = tmp_path / "atexit-ran", tmp_path / "run.log"
    script = (f"import atexit, logging, pathlib, sys\n"
              f"from pipeline.cli import exit_without_teardown\n"
              f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
              f"logging.basicConfig(filename={str(log)!r}, level=logging.INFO)\n"
              f"logging.getLogger('x').info('the last record')\n"
              f"sys.stdout.write('buffered, no newline')\n"
              f"exit_without_teardown(3)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr
    assert result.stdout == "buffered, no newline"
    assert marker.read_text() == "yes"
    assert "the last record" in log.read_text()

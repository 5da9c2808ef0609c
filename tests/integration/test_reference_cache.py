"""The reference cache (pipeline/builder/reference_cache.py): a later build of the same checkpoint reuses the fp32
reference, byte for byte what a fresh export writes; what the reference depends on is in the key; a damaged entry
is rebuilt; an unusable cache folder does not stop a build."""
import fcntl
import json
import os
import shutil

import pytest

from pipeline.builder import reference_cache
from pipeline.builder.models import model_family
from pipeline.builder.task import build
from pipeline.config import compose_config
from pipeline.runtimes import venvs
from pipeline.runtimes.cache import COMPLETE

pytestmark = pytest.mark.slow
SMALL = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=4", "verify.enabled=false",
         "verify.build_gate=false"]
REFERENCE_FILES = ("reference.onnx", "debug/reference.nodes.json", "debug/reference.unfused.onnx")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    from tests.fixtures.hf_checkpoints import tiny_sentence_encoder
    return tiny_sentence_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "reference-cache"
    monkeypatch.setenv(reference_cache.ENV, str(folder))
    return folder


def config(encoder, folder, *overrides):
    return compose_config(["model=minilm", f"model.name_or_path={encoder}", f"artifacts_dir={folder}", *SMALL,
                           *overrides])


def entries(cache) -> list:
    return [p for p in cache.iterdir() if (p / COMPLETE).is_file()]


def test_a_later_build_reuses_the_reference_byte_for_byte(encoder, cache, tmp_path):
    first = build(config(encoder, tmp_path / "a", "target=avx2", "mode=dynamic"))
    second = build(config(encoder, tmp_path / "b", "target=avx512_vnni", "mode=static"))
    fresh = build(config(encoder, tmp_path / "c", "target=avx2", "mode=dynamic", "reference_cache=false"))
    assert (first.reference_cache, second.reference_cache, fresh.reference_cache) == ("built", "reused", "off")
    for name in REFERENCE_FILES:
        assert second.path(name).read_bytes() == first.path(name).read_bytes() == fresh.path(name).read_bytes(), name
    assert second.fusion == first.fusion and second.fusion.operators["Attention"] == 2
    assert (second.opset, second.reference_size_bytes) == (first.opset, first.reference_size_bytes)
    assert len(entries(cache)) == 1
    # The artifact a reused reference gives is the one a fresh export gives.
    assert first.path("model.onnx").read_bytes() == fresh.path("model.onnx").read_bytes()


def test_what_the_reference_depends_on_is_in_its_key(encoder, tmp_path):
    checkpoint = shutil.copytree(encoder, tmp_path / "checkpoint")
    cfg = config(checkpoint, tmp_path)
    runtime = venvs.prepare(venvs.resolve(cfg.runtime)).record()
    key = reference_cache.entry_key(cfg, model_family(cfg), runtime)
    assert reference_cache.entry_key(cfg, model_family(cfg), runtime) == key
    assert reference_cache.entry_key(cfg, model_family(cfg), {**runtime, "env": "/elsewhere"}) == key
    opset = config(checkpoint, tmp_path, "model.opset=17")
    assert reference_cache.entry_key(opset, model_family(opset), runtime) != key
    older = {**runtime, "versions": {**runtime["versions"], "onnxruntime": "1.16.3"}}
    assert reference_cache.entry_key(cfg, model_family(cfg), older) != key
    settings = (checkpoint / "config.json").read_text()
    (checkpoint / "config.json").write_text(json.dumps({**json.loads(settings), "layer_norm_eps": 1e-6}))
    assert reference_cache.entry_key(cfg, model_family(cfg), runtime) != key
    (checkpoint / "config.json").write_text(settings)
    assert reference_cache.entry_key(cfg, model_family(cfg), runtime) == key
    weights = checkpoint / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor
    weights.write_bytes(bytes(data))
    assert reference_cache.entry_key(cfg, model_family(cfg), runtime) != key


def test_a_damaged_entry_is_rebuilt_not_used(encoder, cache, tmp_path):
    first = build(config(encoder, tmp_path / "a", "target=avx2"))
    [entry] = entries(cache)
    cached = entry / "reference.onnx"
    damaged = bytearray(cached.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    cached.write_bytes(bytes(damaged))
    again = build(config(encoder, tmp_path / "b", "target=avx2"))
    assert again.reference_cache == "built"
    assert again.path("reference.onnx").read_bytes() == first.path("reference.onnx").read_bytes()
    assert cached.read_bytes() == first.path("reference.onnx").read_bytes()


def test_a_cache_folder_that_cannot_be_written_does_not_stop_the_build(encoder, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(reference_cache.ENV, str(blocker / "cache"))
    manifest = build(config(encoder, tmp_path / "a", "target=avx2"))
    assert manifest.reference_cache == "off"
    assert f"the reference cache {blocker / 'cache'} is unusable" in capsys.readouterr().err


def test_only_the_most_recently_used_entries_stay(tmp_path):
    for number in range(reference_cache.KEEP + 3):
        entry = tmp_path / f"entry{number}"
        entry.mkdir()
        (entry / COMPLETE).write_text("x")
        os.utime(entry / COMPLETE, (1_000_000 + number, 1_000_000 + number))
    half_built = tmp_path / ".entry-new.building"
    half_built.mkdir()
    with open(tmp_path / "entry1.lock", "a+") as held:  # another build is reading entry1
        fcntl.flock(held, fcntl.LOCK_EX)
        reference_cache._prune(tmp_path, keep=reference_cache.KEEP)
    kept = sorted(p.name for p in tmp_path.iterdir() if (p / COMPLETE).is_file())
    assert kept == sorted(["entry1"] + [f"entry{n}" for n in range(3, reference_cache.KEEP + 3)])
    assert half_built.is_dir()


def test_two_builds_of_one_checkpoint_at_once_export_it_once(encoder, cache, tmp_path):
    """As `make matrix JOBS=2` runs them: the second waits on the entry's lock, then reuses the first's export."""
    import subprocess
    import sys

    from tests.conftest import REPO
    builds = [subprocess.Popen([sys.executable, "-m", "pipeline.cli", "build", "model=minilm",
                                f"model.name_or_path={encoder}", f"target={target}", f"artifacts_dir={tmp_path / target}",
                                f"hydra.run.dir={tmp_path / 'runs' / target}", *SMALL],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, reference_cache.ENV: str(cache)})
              for target in ("avx2", "avx512_vnni")]
    outputs = [build.communicate(timeout=600)[0] for build in builds]
    assert [build.returncode for build in builds] == [0, 0], outputs
    statuses = sorted(json.loads(next((tmp_path / target).iterdir()).joinpath("manifest.json").read_text())
                      ["reference_cache"] for target in ("avx2", "avx512_vnni"))
    assert statuses == ["built", "reused"], outputs
    assert sum("to ONNX (opset" in output and "done in" in output for output in outputs) == 1
    assert len(entries(cache)) == 1


def test_bench_times_the_build_with_and_without_the_cache(encoder, cache, tmp_path):
    from pipeline.commands.bench import main as bench_main
    built = build(config(encoder, tmp_path / "a", "target=avx2"))
    out = tmp_path / "bench"
    assert bench_main(["--artifacts-dir", str(built.folder), "--out", str(out), "--batches", "1", "--seconds", "0.2",
                       "--sequence-length", "0", "--build-time", "1"]) == 0
    [case] = json.loads((out / "results.json").read_text())["artifacts"]
    timed = case["build_time"]
    assert timed["runs"] == 1 and timed["reference_cache"] == "reused"
    assert all(len(seconds) == 1 and seconds[0] > 0 for seconds in timed["command_seconds"].values())
    assert set(timed["stage_seconds"]["anew"]) == set(timed["stage_seconds"]["cached"]) >= {"export", "quantize", "gate"}
    assert timed["cached_vs_anew"] > 0
    assert f"- {built.folder.name}: `quantgate build` (verify off)" in (out / "results.md").read_text()
    assert not list((tmp_path / "a").glob("*-anew")) and built.path("model.onnx").is_file()  # scratch rebuilds only


def test_an_entry_that_cannot_be_written_does_not_stop_the_build(encoder, cache, tmp_path, capsys):
    """Storing the export fails (here: a file where the entry is assembled, as a full or read-only disk would):
    said, and the build goes on with its own export."""
    cfg = config(encoder, tmp_path / "a", "target=avx2")
    runtime = venvs.prepare(venvs.resolve(cfg.runtime)).record()
    key = reference_cache.entry_key(cfg, model_family(cfg), runtime)
    cache.mkdir()
    (cache / f".{key}.building").write_text("in the way")
    manifest = build(cfg)
    assert manifest.reference_cache == "off" and manifest.fusion.operators["Attention"] == 2
    assert "could not store the reference in the cache" in capsys.readouterr().err
    assert entries(cache) == []

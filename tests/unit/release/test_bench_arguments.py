"""`quantgate bench` arguments: timed token inputs at --sequence-length, sessions that do not spin, a release
with nothing to bench, options out of range (one line, exit 2), and which subject each kind of artifact is."""
import numpy as np
import pytest

from pipeline.commands.bench import main as bench_main
from pipeline.release.bench.onnx_int8 import at_sequence_length
from pipeline.timing import session


def test_token_inputs_are_joined_from_real_unpadded_tokens_to_the_length():
    ids = np.array([[101, 7, 8, 102, 0, 0], [101, 9, 102, 0, 0, 0]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    longer = at_sequence_length({"input_ids": ids, "attention_mask": mask}, 10)
    assert longer["input_ids"].shape == (2, 10) and longer["input_ids"].dtype == np.int64
    assert longer["attention_mask"].tolist() == [[1] * 10] * 2
    # the real tokens in order, never the padding: 101 7 8 102 101 9 102, again
    assert longer["input_ids"][0].tolist() == [101, 7, 8, 102, 101, 9, 102, 101, 7, 8]
    assert 0 not in longer["input_ids"]


def test_other_inputs_and_no_length_are_left_as_they_are():
    pixels = {"pixels": np.zeros((3, 64), dtype=np.float32)}
    assert at_sequence_length(pixels, 128) is pixels
    tokens = {"input_ids": np.ones((2, 4), dtype=np.int64), "attention_mask": np.ones((2, 4), dtype=np.int64)}
    assert at_sequence_length(tokens, None) is tokens


def test_an_empty_release_names_the_matrix_and_what_make_quantize_built(tmp_path, capsys):
    # `make quantize` writes artifacts/<model>-<mode>-<target>/, beside the releases, not into artifacts/candidate/
    (tmp_path / "minilm-dynamic-avx2").mkdir()
    (tmp_path / "minilm-dynamic-avx2" / "manifest.json").write_text("{}")
    assert bench_main(["--artifacts-dir", str(tmp_path / "candidate"), "--release", "candidate"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"quantgate bench: error: no artifact folders in {tmp_path / 'candidate'}: build the release first "
        f"(`make matrix RELEASE=candidate`), or bench one artifact folder: "
        f"`make bench ARTIFACTS={tmp_path / 'minilm-dynamic-avx2'}`")


def test_interleaved_sessions_do_not_spin_between_runs():
    # a spinning pool of one model holds the cores while the next model runs: batch-1 p50s tripled
    from onnx import TensorProto, helper
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    options = session(model.SerializeToString(), threads=2).get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.intra_op_num_threads == 2


def test_a_models_row_shows_the_first_figure_it_has_and_says_so_when_it_has_none():
    """A generic model judged only by its detections or its near-empty samples has no cosine: its row says what it
    has (the row used to raise KeyError 'cosine_mean' and take the whole bench down)."""
    from pipeline.release.bench.report import _fid
    assert _fid({"top1_agreement": 0.9, "cosine_mean": 0.5}) == "top-1 0.900"
    assert _fid({"detection_recall": 0.96}) == "detection recall 0.960"
    assert _fid({}) == "no fidelity figure"


@pytest.mark.parametrize("options, says", [
    (["--build-time", "-1"], "--build-time -1: give a number of rebuilds, or 0 for none"),
    (["--sequence-length", "-5"], "--sequence-length -5: give a number of tokens, or 0 for the held-out samples"),
    (["--new-tokens", "0"], "--new-tokens 0: give a number of tokens"),
    (["--threads", "0"], "--threads 0: give a number of threads"),
    (["--batches", "0", "8"], "--batches 0 8 --seconds 1.5: give batch sizes of at least 1"),
    (["--prompt-tokens", "many"], "argument --prompt-tokens: invalid int value: 'many'"),
    (["--avx2"], "unknown option --avx2"),
])
def test_an_option_out_of_range_is_one_line_and_exit_2(options, says, tmp_path, capsys):
    assert bench_main(["--artifacts-dir", str(tmp_path), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("quantgate bench: error: ") and says in err and err.count("\n") == 1, err
    assert "Traceback" not in err and not (tmp_path / "results.json").exists()


def test_the_cli_runs_bench_from_the_commands_package():
    from pipeline.cli import COMMANDS
    assert COMMANDS["bench"][0] == "pipeline.commands.bench"

"""Batch axes found from the graph (pipeline/layout.py) and arrays read in the model's own layout
(calibration/arrays.py, calibration/layout.py): a recurrent state `[directions, batch, hidden]`, a scalar given
once, the errors that name the array, the axis found and the fix."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from calibration import layout
from calibration.arrays import InputSpec, load_arrays
from calibration.errors import CalibrationError
from pipeline.errors import InputError
from pipeline.layout import find_layout, with_batch_axes

HIDDEN, FEATURES = 4, 3


def lstm_model(x_dims, state_dims, *, sr: bool = False, layout_attribute: int = 0):
    """An LSTM whose initial_h and initial_c are graph inputs, as the ONNX standard lays them out."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name) for name, shape in (
        ("W", (1, 4 * HIDDEN, FEATURES)), ("R", (1, 4 * HIDDEN, HIDDEN)))]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "", "", "h0", "c0"], ["y", "hn", "cn"], hidden_size=HIDDEN,
                              layout=layout_attribute, name="lstm")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_dims),
              helper.make_tensor_value_info("h0", TensorProto.FLOAT, state_dims),
              helper.make_tensor_value_info("c0", TensorProto.FLOAT, state_dims)]
    if sr:
        inputs.append(helper.make_tensor_value_info("sr", TensorProto.INT64, []))
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("y", "hn", "cn")]
    return helper.make_model(helper.make_graph(nodes, "lstm", inputs, outputs, weights),
                             opset_imports=[helper.make_opsetid("", 17)])


def test_the_batch_dimension_the_inputs_share_is_found_wherever_it_lies():
    found = find_layout(lstm_model([1, "N", FEATURES], [1, "N", HIDDEN], sr=True))
    assert found.inputs == {"x": 1, "h0": 1, "c0": 1, "sr": None}
    assert "'N'" in found.why["h0"] and found.why["sr"] == "a scalar: given once"
    assert found.outputs["hn"] == 1 and not found.batch_first()  # inferred: [directions, batch, hidden]


def test_unnamed_dims_fall_back_to_the_recurrent_op_and_the_only_dynamic_axis():
    found = find_layout(lstm_model([None, None, FEATURES], [1, -1, HIDDEN]))
    assert found.inputs["h0"] == 1 and "initial_h of LSTM lstm (layout 0)" in found.why["h0"]
    assert found.inputs["x"] == 1  # X of a layout-0 LSTM: [sequence, batch, features]
    batch_first = find_layout(lstm_model(["b", 1, FEATURES], [-1, 1, HIDDEN], layout_attribute=1))
    assert batch_first.inputs == {"x": 0, "h0": 0, "c0": 0}


def test_configured_axes_win_and_are_checked():
    model = lstm_model([1, "N", FEATURES], [1, "N", HIDDEN], sr=True)
    assert find_layout(model, {"h0": 1, "sr": None, "x": 1}).why["x"] == "model.batch_axes"
    with pytest.raises(InputError, match=r"model.batch_axes=\{h0: 3\}: input h0 has 3 axes"):
        find_layout(model, {"h0": 3})
    with pytest.raises(InputError, match=r"names \['state'\], which .* does not take; its inputs: \['x', 'h0', 'c0', 'sr'\]"):
        find_layout(model, {"state": 1})


def identity_model(**inputs):
    """A graph that passes its first input through, with inputs of the given dims."""
    first = next(iter(inputs))
    values = [helper.make_tensor_value_info(name, TensorProto.INT64 if name == "sr" else TensorProto.FLOAT, dims)
              for name, dims in inputs.items()]
    return helper.make_model(helper.make_graph([helper.make_node("Identity", [first], ["out"])], "g", values, [
        helper.make_tensor_value_info("out", TensorProto.FLOAT, inputs[first])]))


def test_a_model_for_one_fixed_batch_is_batched_on_axis_0():
    found = find_layout(identity_model(image=[1, 3, 8, 8], scale=[1]))
    assert found.inputs == {"image": 0, "scale": 0} and "fixed batch" in found.why["image"]
    assert find_layout(identity_model(image=["n", 3], scale=[1])).inputs == {"image": 0, "scale": None}


SPECS = with_batch_axes([InputSpec("audio", np.dtype(np.float32), ("batch", 6)),
                         InputSpec("state", np.dtype(np.float32), (2, "batch", 5)),
                         InputSpec("sr", np.dtype(np.int64), ())],
                        find_layout(identity_model(audio=["batch", 6], state=[2, "batch", 5], sr=[])))


def test_arrays_in_the_models_layout_are_examples_on_their_axis_and_a_scalar_is_broadcast(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", audio=rng.standard_normal((3, 6)), state=rng.standard_normal((2, 3, 5)),
             sr=np.array(16000))
    np.savez(tmp_path / "b.npz", audio=rng.standard_normal((2, 6)), state=rng.standard_normal((2, 2, 5)),
             sr=np.array(16000))
    data = load_arrays(tmp_path, SPECS)
    assert len(data) == 5 and data.arrays["state"].shape == (2, 5, 5) and data.arrays["sr"].shape == ()
    picked = data.take([4, 0])
    assert picked["state"].shape == (2, 2, 5) and picked["sr"] == 16000
    assert np.array_equal(picked["state"][:, 1], data.arrays["state"][:, 0])
    assert len(set(data.row_digests())) == 5
    joined = layout.concatenate([data.take([0]), data.take([1, 2])], data.axes)
    assert np.array_equal(joined["state"], data.take([0, 1, 2])["state"]) and joined["sr"] == 16000


@pytest.mark.parametrize("arrays, expected", [
    ({"audio": np.zeros((3, 6)), "state": np.zeros((3, 2, 5)), "sr": np.array(16000)},
     r"array state has shape \[3, 2, 5\], but axis 0 of the model input is fixed at 2: state float32 \[2, \?, 5\], "
     r"examples on axis 1 \(the batch dimension 'batch' the inputs share\); the examples look like they are on axis "
     r"0: save the array in the model's layout, np.moveaxis\(state, 0, 1\); or name the axis in config: "
     r"model.batch_axes=\{state: AXIS\}"),
    ({"audio": np.zeros((3, 6)), "state": np.zeros((2, 3, 5)), "sr": np.full(3, 16000)},
     r"array sr has shape \[3\], but the model input sr int64 \[\] is not batched \(a scalar: given once\): give it "
     r"once, as the model takes it \(e.g. np.savez\(..., sr=sr\[0\]\) when every example shares it\)"),
    ({"audio": np.zeros((3, 6)), "state": np.zeros((2, 4, 5)), "sr": np.array(16000)},
     r"the same number of examples on its batch axis .*\{'audio': 3, 'state': 4\} on axes \{'audio': 0, 'state': 1\}"),
])
def test_a_layout_mismatch_names_the_array_the_axis_found_and_the_fix(tmp_path, arrays, expected):
    np.savez(tmp_path / "c.npz", **arrays)
    with pytest.raises(CalibrationError, match=expected):
        load_arrays(tmp_path / "c.npz", SPECS)


def test_files_that_give_a_broadcast_input_different_values_are_refused(tmp_path):
    for name, rate in (("a", 16000), ("b", 8000)):
        np.savez(tmp_path / f"{name}.npz", audio=np.zeros((1, 6)), state=np.zeros((2, 1, 5)), sr=np.array(rate))
    with pytest.raises(CalibrationError, match="the files give sr different values; it is not batched"):
        load_arrays(tmp_path, SPECS)


@pytest.mark.parametrize("overrides, expected", [
    (["model=minilm", "+model.batch_axes.x=1"], "model.batch_axes is for model=onnx"),
    (["model=minilm", "+model.state.hn=h0"], "model.state is for model=onnx"),
    (["model=onnx", "model.path=m.onnx", "calibration=npz", "calibration.path=d.npz", "verify.stream_steps=0"],
     "verify.stream_steps=0 is out of range: it must be more than 0"),
])
def test_layout_settings_are_checked_with_the_config(overrides, expected):
    from pipeline.config import compose_config, rules
    from pipeline.errors import UsageError
    with pytest.raises(UsageError, match=expected):
        rules.check(compose_config(overrides))

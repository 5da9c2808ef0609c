"""Files whose weights onnxruntime cannot store as int8: a convolution weight the graph computes with an operator
the export stage does not fold (`Exp` of a stored logarithm; tests/fixtures/paddle_style.py `computed_weight_model`).
With a bias, onnxruntime's dynamic quantizer raises ValueError("Expected w to be an initializer"), exit 70 before;
without one, the weight stays fp32, quantized at every run, under a stamp saying int8 weights. Each is one line
naming the node and the fix (mode.nodes_to_exclude), no traceback, nothing published."""
import onnx
import pytest

from tests.fixtures.paddle_style import CHANNELS, computed_weight_model, write_npz
from tests.reliability.helpers import assert_user_error, published, quantgate

FAST = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=8", "verify.enabled=false",
        "target=avx2"]
CASES = {  # (bias, mode): exit code, what the message says
    (True, "dynamic"): (2, ["mode=dynamic: the weight w of conv is computed in the graph",
                            "mode.nodes_to_exclude=[conv]"]),
    (False, "static"): (1, ["the stamp check failed", "weight_type=int8, but 1 weight(s) are stored fp32 and "
                            "quantized at every run (read by conv)", "mode.nodes_to_exclude=[conv]",
                            "Nothing was published"]),
    (False, "dynamic"): (1, ["the stamp check failed", "(read by conv)", "mode.nodes_to_exclude=[conv]"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("bias, mode", list(CASES))
def test_a_weight_computed_in_the_graph_is_named_not_stamped_int8(tmp_path, bias, mode):
    code, expected = CASES[bias, mode]
    onnx.save(computed_weight_model(bias, op="Exp"), str(tmp_path / "model.onnx"))
    data = write_npz(tmp_path / "x.npz", n=32, channels=CHANNELS)
    result = quantgate("build", "model=onnx", f"model.path={tmp_path / 'model.onnx'}", "calibration=npz",
                       f"calibration.path={data}", f"mode={mode}", f"artifacts_dir={tmp_path / 'a'}", *FAST)
    assert_user_error(result, *expected)
    assert result.returncode == code and published(tmp_path / "a") == []
    assert result.stderr.strip().splitlines()[-1].startswith("quantgate: error:")

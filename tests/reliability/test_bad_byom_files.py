"""Bad models and data a user brings (model=onnx, model=torch, calibration=npz): one line naming what is wrong
and the fix, exit 2, no traceback, no artifact folder.

Every case is refused by the build's checks before any work (`pipeline.builder.task.validate`), tried in this
process (fast); one case of each kind also goes through the command line as a user runs it."""
import numpy as np
import pytest

from pipeline.errors import QuantgateError, translate

from tests.fixtures.byom import npz_arrays, write_npz, write_onnx_model
from tests.reliability.helpers import assert_user_error, published, quantgate

def refused(tmp_path, *overrides: str, cli: bool = False) -> str:
    """The message the build refuses these overrides with (exit 2), checked as the command line shows it."""
    if cli:
        result = quantgate(*overrides, f"artifacts_dir={tmp_path / 'a'}", *FAST)
        assert_user_error(result)
        assert result.returncode == 2
        assert published(tmp_path / "a") == []
        return result.stderr
    from pipeline.builder.models import _FAMILY_CACHE
    from pipeline.builder.task import validate
    from pipeline.config import compose_config
    _FAMILY_CACHE.clear()
    with pytest.raises(Exception) as raised:
        validate(compose_config([*overrides, f"artifacts_dir={tmp_path / 'a'}", *FAST]))
    error = translate(raised.value) or raised.value
    assert isinstance(error, QuantgateError) and error.exit_code == 2, repr(raised.value)
    assert "\n" not in str(error)
    return str(error)


FAST = ["calibration.n_samples=16", "calibration.n_validation=8", "calibration.n_heldout=8", "verify.enabled=false"]


def _quantized(folder):
    from onnxruntime.quantization import quantize_dynamic
    fp32 = write_onnx_model(folder / "fp32.onnx", external_data=False)
    quantize_dynamic(str(fp32), str(folder / "model.onnx"))


def _junk(folder):
    (folder / "model.onnx").write_bytes(b"\x00not onnx\xff" * 50)


def _external_data(folder, location: str | None):
    """model.onnx whose weights are in model.onnx.data, then moved away (None) or pointed at `location`."""
    import onnx
    write_onnx_model(folder / "model.onnx")
    if location is None:
        (folder / "model.onnx.data").unlink()
        return
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save(model, str(folder / "model.onnx"))


MODELS = {
    "external data missing": (lambda folder: _external_data(folder, None),
                              ["its external data cannot be read", "model.onnx.data"]),
    "external data outside its folder": (lambda folder: _external_data(folder, "../../../etc/passwd"),
                                         ["its external data cannot be read", "outside the directory"]),
    "float16": (lambda folder: write_onnx_model(folder / "model.onnx", dtype=np.float16),
                ["is not an fp32 model", "float16"]),
    "already quantized": (_quantized, ["is already quantized", "DynamicQuantizeLinear", "give the fp32 model"]),
    "unreadable": (_junk, ["is not a readable ONNX model"]),
    "missing": (lambda folder: None, ["does not exist"]),
}


@pytest.mark.parametrize("case, cli", [(case, case == "already quantized") for case in MODELS])
def test_onnx_file_that_cannot_be_built_is_refused(tmp_path, case, cli):
    make, expected = MODELS[case]
    make(tmp_path)
    calib = write_npz(tmp_path / "calib.npz")
    message = refused(tmp_path, "model=onnx", f"model.path={tmp_path / 'model.onnx'}", f"calibration.path={calib}",
                      cli=cli)
    for text in [f"model.path='{tmp_path / 'model.onnx'}'", *expected]:
        assert text in message


def _arrays(change):
    arrays = npz_arrays()
    return change(arrays) or arrays


NPZ = {
    "an input's name": (lambda a: {"tokenz": a.pop("tokens")} | a,
                        ["no array for model input(s) ['tokens']", "['tokenz'] match no model input",
                         "tokens float32 [?, ?, 8]; extra float32 [?, 4]"]),
    "an input's rank": (lambda a: a.update(tokens=a["tokens"][:, 0]),
                        ["array tokens has 2 axes [128, 8]", "takes 3", "tokens float32 [?, ?, 8]"]),
    "an input's dtype": (lambda a: a.update(tokens=a["tokens"].astype(np.int32)),
                         ["array tokens holds int32 values", "takes float32", "astype(np.float32)"]),
    "a fixed axis": (lambda a: a.update(extra=a["extra"][:, :3]),
                     ["array extra has shape [128, 3]", "axis 1 of the model input is fixed at 4"]),
}


@pytest.mark.parametrize("case, cli", [(case, case == "an input's name") for case in NPZ])
def test_npz_that_does_not_match_the_inputs_is_refused(tmp_path, case, cli):
    change, expected = NPZ[case]
    model = write_onnx_model(tmp_path / "model.onnx")
    calib = write_npz(tmp_path / "calib.npz", _arrays(change))
    message = refused(tmp_path, "model=onnx", f"model.path={model}", f"calibration.path={calib}", cli=cli)
    for text in [str(calib), *expected]:
        assert text in message


FACTORIES = {
    "tests.fixtures.byom_pkg.absent:build": ["cannot import tests.fixtures.byom_pkg.absent", "PYTHONPATH"],
    "tests.fixtures.byom_pkg.models:absent": ["has no absent", "its functions:", "build"],
    "tests.fixtures.byom_pkg.models": ["is not package.module:function"],
    "tests.fixtures.byom_pkg.models:not_a_pair": ["returned TinyClassifier", "returns (module, example_inputs)"],
    "tests.fixtures.byom_pkg.models:broken": ["raised RuntimeError: weights file missing"],
}


@pytest.mark.parametrize("factory, cli", [(factory, factory.endswith("absent:build")) for factory in FACTORIES])
def test_factory_that_cannot_give_a_module_is_refused(tmp_path, factory, cli):
    message = refused(tmp_path, "model=torch", f"model.factory={factory}", f"calibration.path={tmp_path / 'c.npz'}",
                      cli=cli)
    for text in [f"model.factory='{factory}'", *FACTORIES[factory]]:
        assert text in message


@pytest.mark.parametrize("overrides, expected", [
    (["model=onnx", "calibration.path=x.npz"], "model=onnx needs the file: model.path="),
    (["model=torch", "calibration.path=x.npz"], "model=torch needs your code: model.factory="),
    (["model=onnx", "model.path=m.onnx"], "calibration=npz needs the arrays: calibration.path="),
    (["model=onnx", "model.path=m.onnx", "calibration=pydoc_topics"], "use calibration=npz"),
    (["model=onnx", "model.path=m.onnx", "calibration.path=x.npz", "mode=qat"], "mode=qat needs model=torch"),
    (["model=digits_cnn", "calibration=npz", "calibration.path=x.npz"], "calibration=npz is for model=onnx"),
])
def test_incomplete_or_conflicting_settings_are_refused(tmp_path, overrides, expected):
    assert expected in refused(tmp_path, *overrides)


def test_module_that_cannot_have_a_dynamic_batch_axis_is_refused_at_export(tmp_path):
    from pipeline.builder.task import build
    from pipeline.config import compose_config
    from tests.fixtures.byom_pkg.models import FEATURES
    features = np.random.default_rng(0).standard_normal((64, FEATURES)).astype(np.float32)
    np.savez(tmp_path / "features.npz", features=features)
    overrides = ["model=torch", "model.factory=tests.fixtures.byom_pkg.models:fixed_batch",
                 f"calibration.path={tmp_path / 'features.npz'}", f"artifacts_dir={tmp_path / 'a'}", *FAST]
    with pytest.raises(QuantgateError) as raised:
        build(compose_config(overrides))
    assert raised.value.exit_code == 2
    assert "torch.export cannot export the module with a dynamic batch axis" in str(raised.value)
    assert "Constraints violated (batch)" in str(raised.value) and "any batch size" in str(raised.value)
    assert published(tmp_path / "a") == []


def test_labels_no_output_can_be_judged_against_are_refused_not_skipped(tmp_path):
    """One-hot rows where a classifier needs class ids: verification used to skip them without a word, and the
    build passed on agreement with fp32 alone."""
    model = write_onnx_model(tmp_path / "model.onnx")
    arrays = npz_arrays()
    arrays["labels"] = np.eye(3, dtype=np.int64)[np.arange(len(arrays["tokens"])) % 3]
    calib = write_npz(tmp_path / "calib.npz", arrays)
    result = quantgate("model=onnx", f"model.path={model}", "model.kind=classifier", f"calibration.path={calib}",
                       f"artifacts_dir={tmp_path / 'a'}", *FAST)
    assert result.returncode == 2
    assert_user_error(result, "the data's labels have shape [8, 3], which fits none of the model's outputs",
                      "logits [8, 3], states [8, 5, 6]", "save labels.argmax(-1)", "model.kind=multi_label")
    assert published(tmp_path / "a") == []
    # the same labels on a model that judges outputs against fp32 only are said to be unused, not refused
    result = quantgate("model=onnx", f"model.path={model}", f"calibration.path={calib}",
                       f"artifacts_dir={tmp_path / 'b'}", *FAST)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the data's labels (shape [8, 3]) are not judged: model.kind=generic" in result.stderr

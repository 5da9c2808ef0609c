"""A static build of a graph whose convolutions read computed zero Pads (tests/fixtures/padded_convnet.py), end to end:
the artifact has no Pad and runs its convolutions in int8, the build says what it fused, and the accuracy gate's
fallback ranks and takes out nodes of the prepared graph by their reference names."""
import numpy as np
import onnx
import pytest

from pipeline.builder.task import quantize_task
from pipeline.config import compose_config
from pipeline.errors import BuildFailed
from pipeline.manifest import Manifest
from tests.fixtures.padded_convnet import padded_graph

SMALL = ["mode=static", "target=avx2", "calibration.n_samples=16", "calibration.n_validation=8",
         "calibration.n_heldout=8", "verify.enabled=false", "speed.enabled=false"]


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    root = tmp_path_factory.mktemp("padded")
    onnx.save(padded_graph(), str(root / "padded.onnx"))
    coarse = np.random.default_rng(0).random((32, 8, 3, 3)).astype(np.float32)
    np.savez(root / "images.npz", image=np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3))
    return ["model=onnx", f"model.path={root / 'padded.onnx'}", "calibration=npz",
            f"calibration.path={root / 'images.npz'}", *SMALL]


def test_the_static_artifact_has_no_pad_and_says_what_it_fused(padded, tmp_path, capfd):
    overrides = [*padded, f"artifacts_dir={tmp_path}"]
    assert quantize_task(compose_config(overrides), overrides) == 0
    manifest = Manifest.load(tmp_path / "padded-static-avx2")
    graph = onnx.load(str(manifest.path(manifest.model_file))).graph
    assert "Pad" not in {node.op_type for node in graph.node} and manifest.quantization.fp32_convs == []
    producer = {output: node.op_type for node in graph.node for output in node.output}
    for node in graph.node:
        if node.op_type == "Conv":  # every convolution reads a dequantized int8 activation and weight
            assert producer[node.input[0]] == producer[node.input[1]] == "DequantizeLinear", node.name
    assert "quantize: 1 Pad(s) fused into the convolution that reads it" in capfd.readouterr().err
    assert any(node.op_type == "Pad" for node in onnx.load(str(manifest.path(manifest.reference_file))).graph.node)


def test_the_gate_takes_out_nodes_of_the_prepared_graph_by_name(padded, tmp_path):
    overrides = [*padded, "verify.min_cosine_mean=1.0", "verify.min_cosine_worst=1.0", "verify.build_gate=true",
                 "verify.fallback_max_excluded_nodes=2", f"artifacts_dir={tmp_path}"]
    with pytest.raises(BuildFailed) as refused:
        quantize_task(compose_config(overrides), overrides)
    assert "2 node(s) out of static int8" in str(refused.value)

"""The model family contract (pipeline/builder/family.py): a new family is its class plus one registration, and
builds through the real stages (torch export, onnxruntime quantization, the gate, the stamp); a family missing a
member of the contract is refused when registered, naming the member."""
import numpy as np
import onnx
import pytest

from pipeline.builder import models
from pipeline.builder.checkpoints import DataSplits
from pipeline.builder.family import FamilyBase, LanguageModelFamily, ModelFamily, protocol_members
from pipeline.builder.models import FAMILIES, model_family, register_family
from pipeline.builder.task import build
from pipeline.config import compose_config
from pipeline.manifest import sha256_bytes

FEATURES, CLASSES = 12, 3


class ToyFamily(FamilyBase):
    """A seeded two-layer MLP over 12 numbers; its data are seeded random rows labelled by the fp32 model."""

    kind = "classifier"
    input_names = ["features"]
    output_names = ["logits"]
    source_name = "toy (a seeded MLP)"

    def __init__(self, cfg):
        self.cfg = cfg
        self._module = None

    def load_torch(self):
        import torch
        if self._module is None:
            torch.manual_seed(int(self.cfg.model.seed))
            self._module = torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(),
                                               torch.nn.Linear(32, CLASSES)).eval()
        return self._module

    def example_inputs(self) -> tuple:
        import torch
        return (torch.zeros(2, FEATURES),)

    def dynamic_shapes(self) -> tuple:
        import torch
        return ({0: torch.export.Dim("batch", min=1, max=4096)},)

    def weights_sha256(self) -> str:
        state = self.load_torch().state_dict()
        return sha256_bytes(b"".join(key.encode() + state[key].numpy().tobytes() for key in sorted(state)))

    def data(self) -> DataSplits:
        import torch
        rows = np.random.default_rng(int(self.cfg.calibration.seed)).normal(size=(400, FEATURES)).astype(np.float32)
        with torch.no_grad():
            labels = self.load_torch()(torch.from_numpy(rows)).argmax(-1).tolist()
        pool = rows.tolist()
        return DataSplits(pool, pool, pool, labels, labels, labels, dataset_name="toy rows", shared_pool=True)

    def encode(self, examples: list, pad_to_max_length: bool = False) -> dict[str, np.ndarray]:
        return {"features": np.asarray(examples, dtype=np.float32)}


@pytest.fixture
def toy_registered():
    register_family("toy", ToyFamily)
    try:
        yield
    finally:
        FAMILIES.pop("toy", None)
        models._FAMILY_CACHE.clear()


def test_a_registered_family_builds_through_the_real_stages(toy_registered, tmp_path, monkeypatch):
    monkeypatch.setenv("QUANTGATE_REFERENCE_CACHE", "off")
    cfg = compose_config(["model=digits_cnn", "model.family=toy", "model.name=toy", "model.train_steps=0",
                          "mode=dynamic", "target=avx2", "calibration.n_samples=32", "calibration.n_validation=32",
                          "calibration.n_heldout=16", "speed.enabled=false", f"out={tmp_path / 'toy'}"])
    assert isinstance(model_family(cfg), ToyFamily)
    manifest = build(cfg, verify=None)
    folder = tmp_path / "toy"
    assert manifest.source_model == "toy (a seeded MLP)" and manifest.model_kind == "classifier"
    assert manifest.input_names == ["features"] and manifest.output_names == ["logits"]
    assert manifest.calibration.n == 32 and manifest.fallback.within_budget
    int8_ops = {node.op_type for node in onnx.load(str(folder / manifest.model_file)).graph.node}
    assert int8_ops & {"MatMulInteger", "DynamicQuantizeLinear"}, int8_ops
    with np.load(folder / manifest.heldout_file) as heldout:  # labels saved by FamilyBase's encode_labels
        assert heldout["features"].shape == (16, FEATURES) and heldout["labels"].dtype == np.int64
    assert not (folder / "config.json").exists()  # no checkpoint_folder: no hub files


class NoEncode(FamilyBase):
    kind, input_names, output_names, source_name = "generic", ["x"], ["y"], "no encode"

    def weights_sha256(self): return ""
    def data(self): return DataSplits([], [], [])
    def load_torch(self): return None
    def example_inputs(self): return ()
    def dynamic_shapes(self): return ()


def test_a_family_missing_a_member_is_refused_when_registered_naming_it():
    with pytest.raises(TypeError, match=r"model family 'broken' \(.*NoEncode\) does not meet .* missing encode$"):
        register_family("broken", NoEncode)
    assert "broken" not in FAMILIES


def test_capabilities_come_from_the_base_and_a_fusable_family_needs_its_attention_shape():
    class Bare:  # every required member, no capability: told to inherit their defaults
        kind, input_names, output_names, source_name = "generic", ["x"], ["y"], "bare"
        weights_sha256 = data = encode = load_torch = example_inputs = dynamic_shapes = NoEncode.data

    with pytest.raises(TypeError, match=r"missing fusable \(inherit pipeline.builder.family.FamilyBase"):
        register_family("bare", Bare)

    class Fusable(NoEncode):
        fusable = True

        def encode(self, examples, pad_to_max_length=False): return {}

    with pytest.raises(TypeError, match=r"missing attention_shape .*; load_torch\(attention=\.\.\.\)"):
        register_family("fusable", Fusable)
    assert not {"bare", "fusable"} & set(FAMILIES)


def test_instance_attributes_set_in_init_count_and_an_onnx_family_needs_no_torch_module():
    class OwnGraph(FamilyBase):  # its ONNX graph itself: no load_torch / example_inputs / dynamic_shapes
        def __init__(self, cfg):
            self.kind, self.input_names, self.output_names = "generic", ["x"], ["y"]

        source_name = "own graph"
        def weights_sha256(self): return ""
        def data(self): return DataSplits([], [], [])
        def encode(self, examples, pad_to_max_length=False): return {}
        def reference_onnx(self): return b""

    register_family("own_graph", OwnGraph)
    FAMILIES.pop("own_graph")
    assert {"encode", "load_torch", "reference_onnx", "checkpoint_folder"} <= set(protocol_members(ModelFamily))
    assert {"path", "sequences", "data"} <= set(protocol_members(LanguageModelFamily))

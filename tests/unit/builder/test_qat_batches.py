"""QAT's training batches (pipeline/builder/qat.py): the fp32 model's outputs are computed once, and every step's
targets are those outputs' rows for the step's inputs, as if the fp32 model ran on that step's batch."""
import numpy as np
import pytest
import torch

from pipeline.builder.qat import _batches, teacher_outputs


class TwoOutputs(torch.nn.Module):
    """A module with a pytree of outputs (a user's model=torch module may return several)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(6, 3)

    def forward(self, features, scale):
        hidden = self.linear(features * scale)
        return {"hidden": hidden, "pair": (hidden.sum(dim=1), torch.tanh(hidden))}


@pytest.fixture
def arrays():
    generator = np.random.default_rng(1)
    return {"features": generator.normal(size=(11, 6)).astype(np.float32),
            "scale": generator.uniform(0.5, 2, size=(11, 1)).astype(np.float32)}


def test_each_step_targets_are_the_fp32_outputs_of_that_steps_inputs(arrays):
    teacher = TwoOutputs().eval()
    targets = teacher_outputs(teacher, arrays, ["features", "scale"], batch_size=4)  # 3 chunks: 4, 4, 3 rows
    assert targets["hidden"].shape == (11, 3) and targets["pair"][0].shape == (11,)
    steps = list(_batches(arrays, targets, batch_size=5, steps=6, seed=3))
    assert len(steps) == 6
    with torch.no_grad():
        for inputs, target in steps:
            assert inputs["features"].shape == (5, 6)
            direct = teacher(inputs["features"], inputs["scale"])
            torch.testing.assert_close(target["hidden"], direct["hidden"])
            torch.testing.assert_close(target["pair"][0], direct["pair"][0])
            torch.testing.assert_close(target["pair"][1], direct["pair"][1])


def test_labels_are_drawn_with_their_rows_and_the_draws_are_seeded(arrays):
    labels = np.arange(11) * 10
    first = list(_batches(arrays, labels, batch_size=4, steps=3, seed=7))
    again = list(_batches(arrays, labels, batch_size=4, steps=3, seed=7))
    for (inputs, target), (inputs_again, target_again) in zip(first, again):
        rows = [int(np.flatnonzero((arrays["features"] == row.numpy()).all(axis=1))[0]) for row in inputs["features"]]
        assert target.tolist() == [row * 10 for row in rows]
        assert torch.equal(inputs["features"], inputs_again["features"]) and torch.equal(target, target_again)
    other = list(_batches(arrays, labels, batch_size=4, steps=3, seed=8))
    assert any(not torch.equal(a[1], b[1]) for a, b in zip(first, other))

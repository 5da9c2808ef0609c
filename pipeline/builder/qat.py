"""Quantization-aware training with torchao's PT2E flow, exported as QDQ ONNX.

Why PT2E (torchao 0.18, `prepare_qat_pt2e` / `convert_pt2e`): it is the maintained successor of
`torch.ao.quantization` (deprecated in torch 2.13), it works on a `torch.export` graph that the
dynamo ONNX exporter takes as is, and a converted graph exports as QuantizeLinear /
DequantizeLinear pairs that onnxruntime fuses into int8 kernels.

The target's policy maps onto the quantizer: x86 targets use X86InductorQuantizer's u8
activations and s8 per-channel weights, with `reduce_range` (7-bit activations) where the target
asks for it; an s8 activation target (arm64) gets the same config with int8 activations.

int8 graph: a model exported unfused gets torchao's converted graph as QDQ ONNX (`train_and_export`). A
transformer encoder whose reference.onnx is the fused graph (model.fuse, pipeline/builder/fuse.py) instead gets its
fine-tuned weights (`QatResult.weights`) exported through that same fused graph and quantized by onnxruntime as a
static build is (pipeline/builder/quantize.py): the dynamo export of the converted graph fuses nothing, so it ran
at 0.90x fp32 where the fused int8 graph runs at about 0.7x (MiniLM, `make bench`).

Objectives: classifiers (digits_cnn) fine-tune on their labelled train split with cross-entropy;
embedding models (minilm) need no labels: the fake-quantized student matches the fp32 model's
embeddings on the calibration text (1 - cosine similarity), i.e. self-distillation. A module of the user's
(model=torch, data from calibration=npz, no separate train split) is self-distilled the same way, on every output.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.manifest import QuantizationRecord
from pipeline.builder.export import export_onnx
from pipeline.builder.models import model_family


def _linear_only_quantizer(config):
    """Annotates every aten.linear (activation and weight) and every aten.embedding (its table, weight-only) with
    the x86 config, and nothing else.

    X86InductorQuantizer (torchao 0.18) raises IndexError on MiniLM's exported graph while
    matching linear+unary fusion partitions; transformer QAT only needs its linears quantized,
    which the documented `Quantizer.annotate` interface expresses in a few lines.
    """
    import torch
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, Quantizer

    class LinearOnlyQuantizer(Quantizer):
        def annotate(self, model):
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
                    activation, weight = node.args[0], node.args[1]
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={activation: config.input_activation, weight: config.weight},
                        _annotated=True)
                elif node.op == "call_function" and node.target == torch.ops.aten.embedding.default:
                    # Weight-only, one scale per row (the weight spec's channel axis 0): the embedding tables
                    # are stored int8 (MiniLM's word table: 47 MB fp32), as quantize_static's Gather rule does.
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={node.args[0]: config.weight}, _annotated=True)
            return model

        def validate(self, model):
            pass

    return LinearOnlyQuantizer()


def _floating_point_only(quantizer):
    """`quantizer`, with its annotations kept to floating-point tensors.

    X86InductorQuantizer (torchao 0.18) annotates binary ops whatever their dtype: RoBERTa's position ids
    (`cumsum(input_ids != pad) * mask + pad`, int64) got observers, and the first training step died in
    `fused_moving_avg_obs_fake_quant` ("expected scalar type Float but found Int"). Integer tensors are indices
    and counts, never quantized: their inputs and outputs lose the annotation here.
    """
    from torchao.quantization.pt2e.quantizer import Quantizer

    def floating(node) -> bool:
        dtype = getattr(node.meta.get("val"), "dtype", None)  # the exported tensor's (fake) value
        return dtype is None or dtype.is_floating_point

    class FloatingPointOnly(Quantizer):
        def annotate(self, model):
            quantizer.annotate(model)
            for node in model.graph.nodes:
                annotation = node.meta.get("quantization_annotation")
                if annotation is None:
                    continue
                annotation.input_qspec_map = {source: spec for source, spec in annotation.input_qspec_map.items()
                                              if floating(source)}
                if not floating(node):
                    annotation.output_qspec = None
            return model

        def validate(self, model):
            quantizer.validate(model)

    return FloatingPointOnly()


def quantizer_for(record: QuantizationRecord, linear_only: bool = False, is_qat: bool = True):
    """The target's policy as a PT2E quantizer, matching what onnxruntime does for static.

    onnxruntime's `reduce_range` means 7-bit weights; torchao's x86 `reduce_range` flag would
    instead cut activations to 7 bits, so the policy is applied to the weight spec here.
    """
    import torch
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    config = get_default_x86_inductor_quantization_config(is_qat=is_qat, reduce_range=False)
    weight = config.weight
    if record.reduce_range:
        weight = dataclasses.replace(weight, quant_min=-64, quant_max=63)
    if not record.per_channel:
        weight = dataclasses.replace(weight, qscheme=torch.per_tensor_symmetric, ch_axis=0)
    config = dataclasses.replace(config, weight=weight)
    if record.activation_type == "int8":
        def signed(spec):
            return None if spec is None else dataclasses.replace(spec, dtype=torch.int8, quant_min=-128, quant_max=127)
        config = dataclasses.replace(config, input_activation=signed(config.input_activation),
                                     output_activation=signed(config.output_activation))
    return _floating_point_only(_linear_only_quantizer(config) if linear_only
                                else X86InductorQuantizer().set_global(config))


def _batches(arrays: dict[str, np.ndarray], targets, batch_size: int, steps: int, seed: int):
    """`steps` seeded draws of `batch_size` rows: (the inputs' rows, the targets' rows). `targets` is the labels
    (numpy) or the fp32 model's outputs (a tensor or a pytree of them)."""
    import torch
    from torch.utils._pytree import tree_map
    generator = np.random.default_rng(seed)
    count = len(next(iter(arrays.values())))
    for _ in range(steps):
        rows = generator.choice(count, size=min(batch_size, count), replace=False)
        taken = torch.from_numpy(rows)
        yield ({name: torch.from_numpy(array[rows]) for name, array in arrays.items()},
               torch.from_numpy(targets[rows]) if isinstance(targets, np.ndarray)
               else tree_map(lambda tensor: tensor[taken], targets))


def teacher_outputs(teacher, arrays: dict[str, np.ndarray], input_names: list[str], batch_size: int):
    """The fp32 model's outputs on every row of `arrays`, computed once: the training steps draw their rows
    from these instead of running the fp32 model at every step (a fifth of MiniLM's step time)."""
    import torch
    from torch.utils._pytree import tree_map
    count = len(arrays[input_names[0]])
    with torch.no_grad():
        chunks = [teacher(*[torch.from_numpy(arrays[name][start:start + batch_size]) for name in input_names])
                  for start in range(0, count, batch_size)]
    return tree_map(lambda *parts: torch.cat(parts), *chunks)


def distillation_loss(outputs, reference):
    """1 - cosine per sample to the fp32 model's outputs (any rank, flattened per sample), averaged over outputs
    (a tensor, or a tuple/list/dict of them)."""
    import torch
    from torch.utils._pytree import tree_leaves
    losses = [(1 - torch.nn.functional.cosine_similarity(out.reshape(len(out), -1).float(),
                                                          ref.reshape(len(ref), -1).float(), dim=1)).mean()
              for out, ref in zip(tree_leaves(outputs), tree_leaves(reference))]
    return sum(losses) / len(losses)


def _merge(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Calibration batches padded to one length, so the QAT sampler can draw rows across them."""
    width = max(batch[next(iter(batch))].shape[-1] for batch in batches) if batches[0][next(iter(batches[0]))].ndim == 2 else None
    merged: dict[str, list] = {}
    for batch in batches:
        for name, array in batch.items():
            if width is not None:
                array = np.pad(array, ((0, 0), (0, width - array.shape[1])))
            merged.setdefault(name, []).append(array)
    return {name: np.concatenate(arrays) for name, arrays in merged.items()}


@dataclass
class QatResult:
    prepared: Any  # torchao's fine-tuned graph with its fake quantization, in eval mode
    weights: dict[str, Any]  # the fine-tuned float parameters, named as in the family's torch module
    # (min, max) each linear's input fake quantization learned, by the linear's weight name ("encoder....dense.weight")
    input_ranges: dict[str, tuple[float, float]]
    summary: dict[str, Any]

    def converted(self):
        """torchao's convert_pt2e of the fine-tuned graph: int8 weights, QDQ activations. The unfused export and
        export=aoti take it; a fused encoder needs only `weights` and `input_ranges` (so no conversion)."""
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e
        return convert_pt2e(self.prepared)


def train_and_export(cfg, record: QuantizationRecord, calibration_batches: list, output: Path) -> dict:
    """Fine-tune with fake quantization, convert, export QDQ ONNX to `output`; returns a summary."""
    family = model_family(cfg)
    result = train(cfg, record, calibration_batches)
    output.write_bytes(export_onnx(result.converted(), family.example_inputs(), family.dynamic_shapes(),
                                   family.input_names, family.output_names, int(cfg.model.opset)))
    return result.summary


def train(cfg, record: QuantizationRecord, calibration_batches: list) -> QatResult:
    """Fine-tune with fake quantization; returns the fine-tuned graph, its weights, learned ranges and a summary."""
    import torch
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from tqdm import tqdm

    family = model_family(cfg)
    torch.manual_seed(int(cfg.model.seed))
    teacher = family.load_torch().eval()
    student = copy.deepcopy(teacher)
    example = family.example_inputs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
        graph = torch.export.export(student, example, dynamic_shapes=family.dynamic_shapes()).module()
        # What no output uses (MiniLM's pooler) is neither trained nor given a quantization range.
        graph.graph.eliminate_dead_code()
        graph.recompile()
        prepared = prepare_qat_pt2e(graph, quantizer_for(record, linear_only=family.kind == "embedding"))
    # Start from post-training ranges: observe the calibration batches with fake quantization off,
    # then train with it on. Starting from empty ranges costs MiniLM half its cosine at step one.
    from torchao.quantization.pt2e import disable_fake_quant, enable_fake_quant
    prepared.apply(disable_fake_quant)
    with torch.no_grad():
        for batch in calibration_batches:
            prepared(*[torch.from_numpy(batch[name]) for name in family.input_names])
    prepared.apply(enable_fake_quant)
    data = family.data()
    if family.kind == "classifier" and data.train_inputs is not None:
        arrays, targets, objective = data.train_inputs, np.asarray(data.train_labels), \
            "cross-entropy on the labelled train split"
    else:
        arrays = _merge(calibration_batches)
        targets = teacher_outputs(teacher, arrays, family.input_names, int(cfg.mode.qat_batch_size))
        objective = "1 - cosine to the fp32 model's embeddings on the calibration text (no labels)" \
            if family.kind == "embedding" else "1 - cosine to the fp32 model's outputs per sample, every output, " \
                                               "on the calibration sample (self-distillation)"
    labelled = isinstance(targets, np.ndarray)
    # Only training on labels runs in train mode. Distilling stays in eval mode: dropout would make the student's
    # outputs differ from the fp32 model's at every step, and the loss would chase noise.
    if labelled:
        move_exported_model_to_train(prepared)
    learning_rate = float(cfg.model.qat_learning_rate or cfg.mode.qat_learning_rate)
    # fused: one kernel per step over all parameters (CPU since torch 2.4), not a Python loop over 100 of them
    optimizer = torch.optim.Adam(prepared.parameters(), lr=learning_rate, fused=True)
    losses = []
    steps = int(cfg.mode.qat_steps)
    progress = tqdm(_batches(arrays, targets, int(cfg.mode.qat_batch_size), steps, int(cfg.model.seed)),
                    total=steps, desc="QAT fine-tuning", unit="step")
    for inputs, target in progress:
        outputs = prepared(*[inputs[name] for name in family.input_names])
        loss = torch.nn.functional.cross_entropy(outputs, target) if labelled else distillation_loss(outputs, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        progress.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)
    if labelled:
        move_exported_model_to_eval(prepared)
    weights = {name: parameter.detach().clone() for name, parameter in prepared.named_parameters()}
    input_ranges = learned_input_ranges(prepared)
    window = max(1, steps // 10)
    summary = {"api": "torchao.quantization.pt2e prepare_qat_pt2e/convert_pt2e (X86InductorQuantizer)",
               "objective": objective, "steps": steps, "learning_rate": learning_rate,
               "batch_size": int(cfg.mode.qat_batch_size), "loss_first": float(np.mean(losses[:window])),
               "loss_last": float(np.mean(losses[-window:]))}
    return QatResult(prepared, weights, input_ranges, summary)


def learned_input_ranges(prepared) -> dict[str, tuple[float, float]]:
    """(min, max) of each linear's input as its fake quantization's observer holds it after training, by the linear's
    weight name: the ranges the fine-tuned weights were trained with."""
    import torch

    ranges = {}
    for node in prepared.graph.nodes:
        if node.op != "call_function" or node.target != torch.ops.aten.linear.default:
            continue
        activation, weight = node.args[0], node.args[1]
        if activation.op != "call_module" or weight.op != "call_module" or weight.args[0].op != "get_attr":
            continue
        observer = prepared.get_submodule(activation.target).activation_post_process
        ranges[weight.args[0].target] = (float(observer.min_val), float(observer.max_val))
    return ranges

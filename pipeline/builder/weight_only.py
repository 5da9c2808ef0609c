"""mode.algorithm for int4 decoders: how the MatMulNBits weights are chosen, by onnxruntime's own quantizer.

`rtn` (the default) is round-to-nearest, as onnxruntime-genai's builder writes it. `hqq` (Half-Quadratic
Quantization: scales and zero points fitted to each block's weights, no data) and `gptq` (each weight column's
rounding error compensated on the next ones, through the Hessian of the layer's inputs on calibration text) re-quantize
the builder's fp32 export with `onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer` and replace the
builder's model.onnx and its weights; the genai_config.json and tokenizer stay, so onnxruntime-genai still loads the
folder. GPTQ's calibration text is the calibration source's (`calibration=files` for your own), a seeded sample
disjoint from the held-out text the gate judges on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.errors import BuildFailed


def hqq(cfg, calibration: list[np.ndarray], reference: Path):
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig
    return HQQWeightOnlyQuantConfig(block_size=int(cfg.mode.block_size), bits=4)


def gptq(cfg, calibration: list[np.ndarray], reference: Path):
    from onnxruntime.quantization.matmul_nbits_quantizer import GPTQWeightOnlyQuantConfig
    return GPTQWeightOnlyQuantConfig(calibration_data_reader=SequenceReader(reference, calibration))


# mode.algorithm -> the quantizer's config for it (rtn: the builder's own weights, nothing to redo)
ALGORITHMS: dict[str, Callable] = {"hqq": hqq, "gptq": gptq}
CALIBRATED = frozenset({"gptq"})  # the algorithms that read calibration text


class SequenceReader:
    """onnxruntime's CalibrationDataReader over token sequences: each one teacher-forced from an empty KV cache, the
    feeds the fp32 decoder takes (pipeline/verify/child_decoder.py builds the same). Deep-copied by the quantizer."""

    def __init__(self, reference: Path, sequences: list[np.ndarray]):
        self.reference, self.sequences, self.index = str(reference), sequences, 0
        self.past = None

    def get_next(self) -> dict | None:
        from pipeline.verify import child_decoder
        if self.index >= len(self.sequences):
            return None
        if self.past is None:
            import onnxruntime as ort
            session = ort.InferenceSession(self.reference, providers=["CPUExecutionProvider"])
            self.past = child_decoder.empty_past(session, 1, child_decoder.head_size(self.reference))
        ids = self.sequences[self.index][None, :].astype(np.int64)
        self.index += 1
        return {"input_ids": ids, "attention_mask": np.ones_like(ids), **self.past}

    def __iter__(self):
        while (feed := self.get_next()) is not None:
            yield feed


def requantize(cfg, folder: Path, reference: Path, calibration: list[np.ndarray]) -> None:
    """Replace folder/model.onnx (+ model.onnx.data) by `reference` (the fp32 export) quantized with
    mode.algorithm, at mode.block_size, mode.symmetric and the target's accuracy_level."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    algorithm = str(cfg.mode.algorithm)
    config = ALGORITHMS[algorithm](cfg, calibration, reference)
    level = cfg.target.accuracy_level
    quantizer = MatMulNBitsQuantizer(onnx.load(str(reference)), block_size=int(cfg.mode.block_size),
                                     is_symmetric=bool(cfg.mode.symmetric), algo_config=config,
                                     accuracy_level=None if level is None else int(level))
    try:
        quantizer.process()
    except Exception as error:  # the quantizer's own failures (shapes, data) come as any exception type
        raise BuildFailed(f"onnxruntime's MatMulNBitsQuantizer could not apply mode.algorithm={algorithm} to "
                          f"{reference.name} ({type(error).__name__}: {str(error)[:200]}); try mode.algorithm=rtn. "
                          f"Nothing was published") from None
    for name in ("model.onnx", "model.onnx.data"):
        (folder / name).unlink(missing_ok=True)
    quantizer.model.save_model_to_file(str(folder / "model.onnx"), use_external_data_format=True)

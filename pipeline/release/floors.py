"""This host's int8 kernel floor on a model's own shapes: each GEMM (a MatMul's or fused Attention's weight) and each
convolution of the fp32 graph timed alone, fp32 against the int8 kernel that replaces it, their runs interleaved in one
process, each by its kernel's own time in onnxruntime's profiler (a lone kernel of a few microseconds is otherwise
mostly the fixed cost of a run). `int8_vs_fp32` is the ratio a model whose time were all these kernels could reach:
how far an artifact is from it is what the rest of its graph (quantize/dequantize, layout transposes, fp32 operators)
costs. For convolutions, `model_int8_vs_fp32` is the floor of the whole model: its fp32 time with only its
convolutions sped up (model_floor), which a small CNN's fixed cost per run keeps well above the kernels' ratio.
For weight-only decoders, `matmul_nbits_floor` times each MatMulNBits of the artifact (its bits, block size and
accuracy level) against the fp32 MatMul it replaced, at the rows of a decode step (1) or of a prefill (the prompt).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


CONTRIB_DOMAIN = "com.microsoft"
MODEL_RUNS = 20  # profiled runs of the whole fp32 model (model_floor)
# A kernel's time is the 10th percentile of its runs: what the host's kernel does when it gets the cores. On a loaded
# 2-core host one 64->64 3x3 fp32 convolution at batch 8 took 2.9 ms in some runs and 11-19 ms in most (preempted);
# the median then made int8 look 12x faster than fp32.
KERNEL_PERCENTILE = 10


def _model_bytes(graph) -> bytes:
    from onnx import helper
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(CONTRIB_DOMAIN, 1)])
    model.ir_version = 8
    return model.SerializeToString()


# Operators onnxruntime adds around a lone fp32 convolution (NCHWc layout changes): in a model they sit at its edges
# only, so a kernel's time leaves them out.
LAYOUT_OPS = ("ReorderInput", "ReorderOutput", "Transpose")


def _kernel_micros(profile: Path) -> list[float]:
    """Per run after the first (warm-up), the kernel microseconds of a profiled session's compute nodes (LAYOUT_OPS
    left out), from onnxruntime's profile file (deleted)."""
    events = json.loads(profile.read_text())
    profile.unlink(missing_ok=True)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")
               and e["args"].get("op_name") not in LAYOUT_OPS]
    return [sum(e["dur"] for e in kernels if start <= e["ts"] <= end) for start, end in runs]


def _kernel_p50_ms(graphs: dict[str, tuple], threads: int, seconds: float, work: Path) -> dict[str, float]:
    """Kernel time (ms, the KERNEL_PERCENTILE of the runs) of each graph ({name: (graph, feed)}), their runs
    interleaved in one process for about `seconds` each: the kernels' own time from onnxruntime's profiler, without the
    fixed cost of a run (which a lone kernel of a few microseconds would otherwise be mostly made of)."""
    import time

    import onnxruntime as ort

    from pipeline.timing import MAX_REPEATS, MIN_REPEATS, session_options
    sessions = {}
    for name, (graph, _) in graphs.items():
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(work / f"floor-{name}")
        sessions[name] = ort.InferenceSession(_model_bytes(graph), options, providers=["CPUExecutionProvider"])
    deadline, rounds = time.perf_counter() + seconds * len(graphs), 0
    while rounds < MIN_REPEATS or (rounds < MAX_REPEATS and time.perf_counter() < deadline):
        for name, sess in sessions.items():
            sess.run(None, graphs[name][1])
        rounds += 1
    return {name: float(np.percentile(_kernel_micros(Path(sess.end_profiling())), KERNEL_PERCENTILE)) / 1000
            for name, sess in sessions.items()}


def _floor(cases: list[dict[str, Any]], threads: int, seconds: float) -> tuple[dict[str, dict], dict[str, float]]:
    """Time each case ({"name", "nodes", "macs", "fp32", "int8": (graph, feed)}; "copies": how many of its nodes each
    graph holds, default 1), fp32 and int8 interleaved, by their kernels' own time; per case GMAC/s of each, and the
    node-weighted total ms of fp32, int8 and the faster of the two per case ("best": a build may keep any convolution
    fp32)."""
    import tempfile
    per_case, totals = {}, {"fp32": 0.0, "int8": 0.0, "best": 0.0}
    with tempfile.TemporaryDirectory() as work:
        for case in cases:
            p50 = _kernel_p50_ms({name: case[name] for name in ("fp32", "int8")}, threads, seconds, Path(work))
            per_case[case["name"]] = {"nodes": case["nodes"], **{
                f"{name}_gmac_per_s": case["macs"] / (max(ms, 1e-3) / 1000) / 1e9 for name, ms in p50.items()}}
            for name, ms in {**p50, "best": min(p50.values())}.items():
                totals[name] += case["nodes"] / case.get("copies", 1) * ms
    return per_case, totals


def _ratio(totals: dict[str, float], name: str = "int8") -> float | None:
    return totals[name] / totals["fp32"] if totals["fp32"] else None


def weight_shapes(path: Path) -> dict[tuple[int, int], int]:
    """(K, N) of every 2-D weight a MatMul or fused Attention multiplies by, with how many nodes use it."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    shapes: dict[tuple[int, int], int] = {}
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Attention") and len(node.input) > 1 and len(dims.get(node.input[1], ())) == 2:
            shape = dims[node.input[1]]
            shapes[shape] = shapes.get(shape, 0) + 1
    return shapes


def gemm_floor(fp32: Path, rows: int, threads: int, seconds: float) -> dict[str, Any]:
    """This host's int8 GEMM speed on the model's own weight shapes: for each (K, N), one MatMul (fp32) and one
    DynamicQuantizeMatMul (int8 weights, activations quantized at run time, what dynamic int8 runs) on `rows`
    rows (batch x sequence). `int8_vs_fp32` is the floor for a model whose time is all GEMM."""
    import onnx
    from onnx import TensorProto, helper
    rng = np.random.default_rng(0)
    cases = []
    for (k, n), count in sorted(weight_shapes(fp32).items()):
        a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [rows, k])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])
        weight = rng.standard_normal((k, n)).astype(np.float32)
        float_graph = helper.make_graph([helper.make_node("MatMul", ["a", "w"], ["y"])], "fp32", [a], [y],
                                        [onnx.numpy_helper.from_array(weight, "w")])
        quantized = [onnx.numpy_helper.from_array(np.clip(np.round(weight * 40), -127, 127).astype(np.int8), "w"),
                     onnx.numpy_helper.from_array(np.float32(1 / 40), "scale"),
                     onnx.numpy_helper.from_array(np.int8(0), "zero")]
        int8_graph = helper.make_graph([helper.make_node("DynamicQuantizeMatMul", ["a", "w", "scale", "zero"], ["y"],
                                                         domain=CONTRIB_DOMAIN)], "int8", [a], [y], quantized)
        feed = {"a": rng.standard_normal((rows, k)).astype(np.float32)}
        cases.append({"name": f"{k}x{n}", "nodes": count, "macs": rows * k * n, "fp32": (float_graph, feed),
                      "int8": (int8_graph, feed)})
    per_shape, totals = _floor(cases, threads, seconds)
    return {"rows": rows, "shapes": per_shape, "int8_vs_fp32": _ratio(totals)}


def conv_shapes(path: Path, feed: dict[str, np.ndarray]) -> dict[tuple, int]:
    """Every 2-D convolution of the fp32 graph at this feed's shapes, as (input NCHW, weight OIHW, strides, pads,
    dilations, group), with how many nodes have it; input shapes from onnx shape inference (a convolution whose
    input shape it cannot tell is left out). The convolutions are those static int8 quantizes: with the Pads it fuses
    into them (pipeline/builder/conv_prep.py), whose computed pads would also hide the shapes from onnx's inference."""
    import onnx

    from pipeline.builder.conv_prep import prepare
    model = onnx.load(str(path))
    for value in model.graph.input:
        if value.name in feed:
            dims = value.type.tensor_type.shape.dim
            for dim, size in zip(dims, feed[value.name].shape):
                dim.Clear()
                dim.dim_value = size
    model = prepare(model).model
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input]}
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    found: dict[tuple, int] = {}
    for node in model.graph.node:
        x = shapes.get(node.input[0]) if node.op_type == "Conv" else None
        weight = weights.get(node.input[1]) if node.op_type == "Conv" else None
        if not x or len(x) != 4 or 0 in x or not weight or len(weight) != 4:
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        key = (tuple(x), weight, tuple(attributes.get("strides", [1, 1])), tuple(attributes.get("pads", [0] * 4)),
               tuple(attributes.get("dilations", [1, 1])), int(attributes.get("group", 1)))
        found[key] = found.get(key, 0) + 1
    return found


def _conv_case(key: tuple, count: int, rng) -> dict[str, Any]:
    """fp32 Conv (NCHW) against onnxruntime's int8 QLinearConv (NHWC uint8, what static int8 runs) on one shape."""
    import onnx
    from onnx import TensorProto, helper
    (n, c, h, w), (m, cg, kh, kw), strides, pads, dilations, group = key
    out_h = (h + pads[0] + pads[2] - dilations[0] * (kh - 1) - 1) // strides[0] + 1
    out_w = (w + pads[1] + pads[3] - dilations[1] * (kw - 1) - 1) // strides[1] + 1
    attributes = {"kernel_shape": [kh, kw], "strides": list(strides), "pads": list(pads),
                  "dilations": list(dilations), "group": group}
    weight = rng.standard_normal((m, cg, kh, kw)).astype(np.float32)
    tensor = onnx.numpy_helper.from_array
    float_graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], **attributes)], "fp32",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, c, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, m, out_h, out_w])],
        [tensor(weight, "w"), tensor(np.zeros(m, np.float32), "b")])
    int8_graph = helper.make_graph(
        [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                          domain=CONTRIB_DOMAIN, channels_last=1, **attributes)], "int8",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [n, h, w, c])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [n, out_h, out_w, m])],
        [tensor(np.clip(np.round(weight * 40), -127, 127).astype(np.int8), "w"), tensor(np.float32(0.02), "xs"),
         tensor(np.uint8(128), "xz"), tensor(np.full(m, 1 / 40, np.float32), "ws"), tensor(np.zeros(m, np.int8), "wz"),
         tensor(np.float32(0.05), "ys"), tensor(np.uint8(128), "yz"), tensor(np.zeros(m, np.int32), "b")])
    return {"name": f"{c}->{m} {kh}x{kw}/{strides[0]} g{group} at {h}x{w}", "nodes": count,
            "macs": n * m * cg * kh * kw * out_h * out_w,
            "fp32": (float_graph, {"x": rng.standard_normal((n, c, h, w)).astype(np.float32)}),
            "int8": (int8_graph, {"x": rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)})}


def conv_floor(fp32: Path, feed: dict[str, np.ndarray], threads: int, seconds: float) -> dict[str, Any]:
    """This host's int8 convolution speed on the model's own convolutions at this feed: for each shape, one Conv
    (fp32) and one QLinearConv (int8, channels last: what static int8 runs between its convolutions).
    `int8_vs_fp32` is the floor for a model whose time is all convolution; None without convolutions."""
    rng = np.random.default_rng(0)
    cases = [_conv_case(key, count, rng) for key, count in conv_shapes(fp32, feed).items()]
    per_shape, totals = _floor(cases, threads, seconds)
    floor = {"batch": len(next(iter(feed.values()))), "shapes": per_shape, "int8_vs_fp32": _ratio(totals)}
    if cases:
        floor.update(model_floor(fp32, feed, threads, _ratio(totals, "best")))
    return floor


def model_floor(fp32: Path, feed: dict[str, np.ndarray], threads: int, best_ratio: float) -> dict[str, float]:
    """The floor of the whole model: the share of its fp32 graph's kernel time that its convolutions take
    (`fp32_conv_share`, onnxruntime's profiler) sped up to the best of int8 and fp32 on each of their shapes
    (`best_kernel_ratio`), the rest of its kernels as fp32 runs them (`model_int8_vs_fp32`). The fixed cost of a run is
    left out (onnxruntime's profiler inflates it), so an artifact stays above this floor unless int8 also speeds up
    its other operators (pooling in uint8), and a small CNN, whose runs are much fixed cost, well above it."""
    import tempfile

    import onnxruntime as ort

    from pipeline.timing import session_options
    with tempfile.TemporaryDirectory() as work:
        options = session_options(threads)
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(work) / "model")
        sess = ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
        for _ in range(1 + MODEL_RUNS):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    kernels = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    shares = []
    for start, end in runs:
        inside = [e for e in kernels if start <= e["ts"] <= end]
        total = sum(e["dur"] for e in inside)
        convolutions = sum(e["dur"] for e in inside if e["args"].get("op_name") in ("Conv", "FusedConv"))
        shares.append(convolutions / max(total, 1))
    share = float(np.median(shares))
    return {"fp32_conv_share": round(share, 4), "best_kernel_ratio": round(best_ratio, 4),
            "model_int8_vs_fp32": round(whole_model_ratio(share, best_ratio), 4)}


def whole_model_ratio(share: float, kernel_ratio: float) -> float:
    """A whole model's time ratio when the kernels that take `share` of its fp32 kernel time run `kernel_ratio` of
    their fp32 time and the rest as fp32 runs it."""
    return 1 - share * (1 - kernel_ratio)


def nbits_shapes(path: Path) -> dict[tuple, int]:
    """Every MatMulNBits of a weight-only model as (K, N, bits, block_size, accuracy_level, its other inputs'
    (shape, onnx type)), with how many nodes have it; the weights are not loaded."""
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    tensors = {t.name: (tuple(t.dims), t.data_type) for t in model.graph.initializer}
    found: dict[tuple, int] = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        key = (attributes["K"], attributes["N"], attributes.get("bits", 4), attributes["block_size"],
               attributes.get("accuracy_level", 0), tuple(tensors.get(name, ((), 0)) for name in node.input[1:]))
        found[key] = found.get(key, 0) + 1
    return found


# fp32 weight bytes a MatMulNBits floor graph holds at most: its shape's nodes each get their own weight, so that the
# weights stream from memory as a decoder's do (one weight, timed alone, stays in the cache: on a 100M Llama at decode
# the lone kernels measured 0.49x fp32 and the whole model ran at 0.39x), up to this much.
STREAMED_BYTES = 256 << 20


def _random_like(dims: tuple, onnx_type: int, name: str, rng):
    """A tensor of these dims and onnx type, random (a kernel's speed does not depend on the values)."""
    from onnx import helper, numpy_helper
    dtype = helper.tensor_dtype_to_np_dtype(onnx_type)
    values = (rng.random(dims, dtype=np.float32) * 0.01 + 1e-3 if np.issubdtype(dtype, np.floating)
              else rng.integers(0, 256 if dtype == np.uint8 else 2, dims, dtype=np.uint8))
    return numpy_helper.from_array(values.astype(dtype), name)


def _nbits_case(key: tuple, count: int, rows: int, rng) -> dict[str, Any]:
    """fp32 MatMul against MatMulNBits on one weight shape, `rows` rows: each graph holds `copies` of the node (the
    shape's nodes in the model, up to STREAMED_BYTES of fp32 weights), each with its own weight of the artifact's
    shapes and types (packed weights, scales, zero points)."""
    from onnx import TensorProto, helper
    k, n, bits, block_size, accuracy_level, others = key
    copies = max(1, min(count, STREAMED_BYTES // (k * n * 4)))
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, rows, k])
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [1, rows, n]) for i in range(copies)]
    floats = [helper.make_node("MatMul", ["a", f"w{i}"], [f"y{i}"]) for i in range(copies)]
    float_weights = [_random_like((k, n), TensorProto.FLOAT, f"w{i}", rng) for i in range(copies)]
    nbits, tensors = [], []
    for i in range(copies):
        names = [f"in{i}_{index}" if onnx_type else "" for index, (_, onnx_type) in enumerate(others)]
        tensors += [_random_like(dims, onnx_type, name, rng) for (dims, onnx_type), name in zip(others, names) if name]
        nbits.append(helper.make_node("MatMulNBits", ["a", *names], [f"y{i}"], domain=CONTRIB_DOMAIN, K=k, N=n,
                                      bits=bits, block_size=block_size, accuracy_level=accuracy_level))
    feed = {"a": rng.standard_normal((1, rows, k)).astype(np.float32)}
    return {"name": f"{k}x{n} int{bits}", "nodes": count, "copies": copies, "macs": copies * rows * k * n,
            "fp32": (helper.make_graph(floats, "fp32", [a], outputs, float_weights), feed),
            "int8": (helper.make_graph(nbits, "nbits", [a], outputs, tensors), feed)}


def matmul_nbits_floor(artifact: Path, rows: int, threads: int, seconds: float) -> dict[str, Any]:
    """This host's MatMulNBits speed on a weight-only model's own weights: for each of its MatMulNBits shapes, the
    kernel (the artifact's bits, block size, accuracy level) against the fp32 MatMul it replaced, on `rows` rows (1:
    a decode step; the prompt's tokens: a prefill), timed by kernel time, interleaved, each node with its own weight
    (_nbits_case: streamed from memory as in the model, not cached). `kernel_vs_fp32` is the time
    ratio of a model whose time were all these MatMuls (None without MatMulNBits)."""
    rng = np.random.default_rng(0)
    cases = [_nbits_case(key, count, rows, rng) for key, count in sorted(nbits_shapes(artifact).items())]
    per_shape, totals = _floor(cases, threads, seconds)
    return {"rows": rows, "shapes": {name: {"nodes": figures["nodes"], "fp32_gmac_per_s": figures["fp32_gmac_per_s"],
                                            "nbits_gmac_per_s": figures["int8_gmac_per_s"]}
                                     for name, figures in per_shape.items()},
            "kernel_vs_fp32": _ratio(totals)}

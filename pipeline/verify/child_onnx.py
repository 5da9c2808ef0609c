"""One verification run of an ONNX model on one CPU profile, in its own process.

    [qemu-x86_64 -cpu Haswell] python -m pipeline.verify.child_onnx --model M.onnx --inputs I.npz --out DIR \
        [--samples N] [--threads 1] [--latency-repeats R] [--no-guard] [--padding-extra K] [--layout JSON]

The guard runs first, with the standard library only: on a CPU below the artifact's floor, importing
a wheel built for a newer CPU can already die with SIGILL (numpy 2.4 did under -cpu Nehalem on an Intel
host), so a child that imported numpy first could crash exactly where the guard must refuse. Only after
the guard agrees are numpy and onnxruntime imported.

Writes DIR/outputs.npz (every model output, first N samples) and DIR/run.json (versions, timings,
the CPU features CPUID showed). The guard here checks the CPU only: whether this runtime loads the
model was predicted by the parent, and the load below is the proof. Exit codes: 0 ran; 2 bad inputs;
3 refused by the guard (pipeline.guard.EXIT_REFUSED); 4 out of memory; 5 onnxruntime refused to load
the model; anything else, or a signal, is a crash. Imports nothing beyond the standard library, numpy
and onnxruntime, so it runs in any runtime environment (pipeline.runtimes.venvs).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from pipeline.guard import EXIT_REFUSED, ArtifactRefused, StampError, ensure_can_run, read_stamp
from pipeline.guard.cpuid import host_features

EXIT_BAD_INPUTS = 2
EXIT_OUT_OF_MEMORY = 4
EXIT_LOAD_FAILED = 5
LOAD_FAILED_PREFIX = "quantgate load: "
DEFAULT_BATCH = 16
# onnxruntime reports allocation failures as exceptions with these words, not as MemoryError.
OUT_OF_MEMORY_WORDS = ("bad_alloc", "Failed to allocate memory", "Unable to allocate")
ONNX_TO_NUMPY = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
                 "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
                 "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipeline.verify.child_onnx", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--inputs", required=True, help=".npz with one array per model input, samples on axis 0")
    parser.add_argument("--out", required=True, help="folder for outputs.npz and run.json")
    parser.add_argument("--samples", type=int, default=0, help="use the first N samples; 0 = all")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads; 0 = its default")
    parser.add_argument("--latency-repeats", type=int, default=0, help="time N batch-1 runs after one warm-up")
    parser.add_argument("--no-guard", action="store_true", help="skip the guard (the fp32 reference has no stamp)")
    parser.add_argument("--custom-ops", action="append", default=[], metavar="LIB",
                        help="a custom-operator library to register (onnxruntime's register_custom_ops_library)")
    parser.add_argument("--layout", default="",
                        help='JSON {"inputs": {name: axis or null}, "outputs": {...}, "state": {output: input}, '
                             '"steps": T}: where the examples lie (default: axis 0; null: an input given once, passed '
                             'whole to every batch) and, for a stateful model, sequences of T samples run streamed')
    parser.add_argument("--padding-extra", type=int, default=0,
                        help="also run each sequence alone and all of them padded K tokens past the longest")
    return parser.parse_args(argv)


def guard(model: str) -> str:
    """The guard's verdict in words; raises ArtifactRefused/StampError when it refuses."""
    if not read_stamp(model):
        # An artifact built outside quantgate: nothing to check, and nothing to refuse with.
        return "no quantgate stamp: the guard cannot check this artifact"
    return ensure_can_run(model, check_runtime=False).message()


def run_model(args: argparse.Namespace, guard_message: str) -> int:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        # A spinning pool burns emulated cycles for nothing under QEMU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    for library in args.custom_ops:  # native code of the user's: it runs (and may crash) on this CPU
        options.register_custom_ops_library(library)
    started = time.perf_counter()
    try:
        session = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # the runtime's verdict on this model: the proof of the guard's prediction
        if any(words in str(error) for words in OUT_OF_MEMORY_WORDS):
            raise
        text = " ".join(str(error).split())
        print(text, file=sys.stderr)
        # onnxruntime puts its C++ source location and signature first; the words come after it.
        said = text.rsplit(") ", 1)[-1] if "onnxruntime_src" in text else text
        print(f"{LOAD_FAILED_PREFIX}onnxruntime {ort.__version__} refused to load the model: {said}", file=sys.stderr)
        return EXIT_LOAD_FAILED
    load_seconds = time.perf_counter() - started

    axes = json.loads(args.layout) if args.layout else {}
    input_axes = axes.get("inputs") or {}  # outputs are moved batch-first where they are run (batch_run, stream_run)
    arrays = np.load(args.inputs)
    feeds = {}
    for node in session.get_inputs():
        if node.name not in arrays.files:
            print(f"{args.inputs} has no array named {node.name!r} (model inputs: "
                  f"{[n.name for n in session.get_inputs()]}; arrays: {arrays.files})", file=sys.stderr)
            return EXIT_BAD_INPUTS
        array = take(arrays[node.name], slice(0, args.samples or None), input_axes.get(node.name, 0))
        feeds[node.name] = array.astype(ONNX_TO_NUMPY.get(node.type, array.dtype), copy=False)
    batched = next(node for node in session.get_inputs() if input_axes.get(node.name, 0) is not None)
    batch_axis = input_axes.get(batched.name, 0)
    n_samples = feeds[batched.name].shape[batch_axis]
    # A model exported with a fixed batch size only accepts that batch.
    first_batch_dim = batched.shape[batch_axis] if len(batched.shape or ()) > batch_axis else None
    batch = first_batch_dim if isinstance(first_batch_dim, int) and first_batch_dim > 0 else DEFAULT_BATCH

    output_names = [node.name for node in session.get_outputs()]
    started = time.perf_counter()
    if axes.get("state") and axes.get("steps"):
        outputs = stream_run(session.run, output_names, feeds, axes, int(axes["steps"]))
    else:
        outputs = batch_run(session.run, output_names, feeds, axes, n_samples, batch)
    run_seconds = time.perf_counter() - started

    latency_seconds = []
    if args.latency_repeats:
        one = {k: take(v, slice(0, 1), input_axes.get(k, 0)) for k, v in feeds.items()}
        session.run(None, one)  # warm-up: first run allocates and plans
        for _ in range(args.latency_repeats):
            started = time.perf_counter()
            session.run(None, one)
            latency_seconds.append(time.perf_counter() - started)

    if args.padding_extra:
        outputs |= padding_runs(session, feeds, args.padding_extra)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "outputs.npz", **outputs)
    report = {
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__},
        "guard": guard_message, "samples": n_samples, "batch": batch, "threads": args.threads,
        "output_names": output_names, "load_seconds": load_seconds, "run_seconds": run_seconds,
        "latency_seconds": latency_seconds, "cpu_features": sorted(host_features()),
    }
    (out / "run.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def batch_run(run, output_names: list[str], feeds: dict, axes: dict, n_samples: int, batch: int) -> dict:
    """Every output for every sample, `batch` samples per run, with the examples on axis 0 whatever the model's
    layout (the parent judges per sample there)."""
    import numpy as np
    input_axes, output_axes = axes.get("inputs") or {}, axes.get("outputs") or {}
    chunks = [run(None, {k: take(v, slice(i, i + batch), input_axes.get(k, 0)) for k, v in feeds.items()})
              for i in range(0, n_samples, batch)]
    out_axes = [output_axes.get(name, 0) for name in output_names]
    if len(chunks) > 1 and any(axis is None or chunk[j].ndim <= axis or drop_axis(chunk[j], axis) != drop_axis(
            chunks[0][j], axis) for chunk in chunks for j, axis in enumerate(out_axes)):
        chunks = [run(None, feeds)]  # outputs not batched where said, or shaped by the batch: one run
    return {name: batch_first(np.concatenate([chunk[j] for chunk in chunks], axis=out_axes[j] or 0)
                              if len(chunks) > 1 else chunks[0][j], out_axes[j])
            for j, name in enumerate(output_names)}


def stream_run(run, output_names: list[str], feeds: dict, axes: dict, steps: int) -> dict:
    """The samples as sequences of `steps` consecutive chunks (sample s*steps + t is step t of sequence s), all
    sequences side by side in one batch per step; each state input takes its sample's value at step 0 and the
    paired output of the step before after that (axes["state"]: output -> input). Outputs in sample order, examples
    on axis 0."""
    import numpy as np
    input_axes, output_axes, pairs = axes.get("inputs") or {}, axes.get("outputs") or {}, axes["state"]
    n = next(v.shape[input_axes.get(k, 0)] for k, v in feeds.items() if input_axes.get(k, 0) is not None)
    steps = max(1, min(steps, n))
    sequences = n // steps
    carried, per_step = {}, []
    for step in range(steps):
        rows = np.arange(sequences) * steps + step
        feed = {k: v if input_axes.get(k, 0) is None else np.take(v, rows, axis=input_axes.get(k, 0))
                for k, v in feeds.items()}
        feed |= carried
        results = dict(zip(output_names, run(None, feed)))
        carried = {pairs[name]: results[name] for name in pairs if name in results}
        per_step.append({name: batch_first(value, output_axes.get(name, 0)) for name, value in results.items()})
    # [steps, sequences, ...] -> sample order s*steps + t
    return {name: np.stack([step[name] for step in per_step], axis=1).reshape(
        sequences * steps, *per_step[0][name].shape[1:]) for name in output_names}


def take(array, rows: slice, axis: int | None):
    """The examples `rows` of an input along its batch axis; an input given once (axis None) whole."""
    if axis is None or array.ndim <= axis:
        return array
    index = [slice(None)] * array.ndim
    index[axis] = rows
    return array[tuple(index)]


def drop_axis(array, axis: int) -> tuple:
    return array.shape[:axis] + array.shape[axis + 1:]


def batch_first(array, axis: int | None):
    import numpy as np
    return np.moveaxis(array, axis, 0) if axis and array.ndim > axis else array


def padding_runs(session, feeds: dict, extra: int) -> dict:
    """Each sequence alone (trimmed to its mask) and all together padded `extra` tokens past the longest;
    outputs named padding_alone.<output> and padding_batched.<output>, plus padding_mask (which positions
    are tokens). Per-token outputs of a sequence run alone are padded with zeros to the batch's width."""
    import numpy as np

    mask = feeds["attention_mask"]
    lengths = mask.sum(axis=1).astype(int)
    pad_id = int(feeds["input_ids"][mask == 0][0]) if (mask == 0).any() else 0  # the tokenizer's own pad id
    width = int(lengths.max()) + extra
    alone, batched = [], {}
    for name, array in feeds.items():
        padded = np.full((len(array), width, *array.shape[2:]), pad_id if name == "input_ids" else 0, dtype=array.dtype)
        for i, length in enumerate(lengths):
            padded[i, :length] = array[i, :length]
        batched[name] = padded
    for i, length in enumerate(lengths):
        alone.append(session.run(None, {name: array[i:i + 1, :length] for name, array in feeds.items()}))
    together = session.run(None, batched)
    result = {"padding_mask": (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)}
    for j, node in enumerate(session.get_outputs()):
        runs = []
        for run, length in zip(alone, lengths):
            out = run[j]
            if out.ndim >= 2 and out.shape[1] == length and together[j].ndim == out.ndim and together[j].shape[1] == width:
                grown = np.zeros((out.shape[0], width, *out.shape[2:]), dtype=out.dtype)
                grown[:, :length] = out
                out = grown
            runs.append(out)
        result[f"padding_alone.{node.name}"] = np.concatenate(runs)
        result[f"padding_batched.{node.name}"] = together[j]
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    guard_message = "guard skipped (--no-guard)"
    if not args.no_guard:
        try:
            guard_message = guard(args.model)
        except (ArtifactRefused, StampError) as refusal:
            print(f"quantgate guard: refused: {refusal}", file=sys.stderr)
            return EXIT_REFUSED
    try:
        return run_model(args, guard_message)
    except MemoryError as error:
        print(f"out of memory: {error}", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    except Exception as error:  # onnxruntime raises its own types for allocation failures
        if any(words in str(error) for words in OUT_OF_MEMORY_WORDS):
            print(f"out of memory: {error}", file=sys.stderr)
            return EXIT_OUT_OF_MEMORY
        raise


if __name__ == "__main__":
    raise SystemExit(main())

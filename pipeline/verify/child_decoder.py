"""The sandboxed child of a decoder verification: the guard (standard library), then plain onnxruntime and numpy,
so it runs under QEMU and refuses cleanly below the artifact's floor.

    [qemu-x86_64 -cpu Haswell] python -m pipeline.verify.child_decoder MODEL.onnx SEQUENCES.npz OUT.npz \
        [--sequences N] [--threads 1] [--no-guard]

The guard also refuses an onnxruntime older than the stamp's min_onnxruntime (read from package metadata, before
onnxruntime is imported). Runs each held-out token sequence teacher-forced in one pass with an empty KV cache (every
`past_key_values.*` input of length 0) and writes its logits ([tokens, vocab]) to OUT.npz as `logits_<i>`. Exit
codes as pipeline/verify/child_onnx.py: 0 ran, 3 refused by the guard.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.guard import EXIT_REFUSED, ArtifactRefused, StampError, ensure_can_run, read_stamp
from pipeline.guard.stamp import runtime_floor_problems


def head_size(model: str) -> int | None:
    """The decoder's head size from genai_config.json beside it (the builder leaves the graph's axis symbolic)."""
    config = Path(model).with_name("genai_config.json")
    if not config.is_file():
        return None
    return int(json.loads(config.read_text())["model"]["decoder"]["head_size"])


def empty_past(session, batch: int, size: int | None) -> dict:
    """Every past_key_values.* input with 0 past tokens: [batch, kv_heads, 0, head_size]."""
    import numpy as np
    past = {}
    for spec in session.get_inputs():
        if spec.name.startswith("past_key_values."):
            kv_heads, head = spec.shape[1], spec.shape[3] if isinstance(spec.shape[3], int) else size
            if head is None:
                raise SystemExit(f"{spec.name}: its head size is symbolic and no genai_config.json names it")
            dtype = np.float16 if "float16" in spec.type else np.float32
            past[spec.name] = np.zeros((batch, kv_heads, 0, head), dtype=dtype)
    return past


def run(model: str, sequences: list, threads: int) -> list:
    """Logits [tokens, vocab] of each sequence, teacher-forced from an empty cache, on `threads` intra-op threads."""
    import numpy as np
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # spinning burns emulated cycles
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    size = head_size(model)
    names = {spec.name for spec in session.get_inputs()}
    logits = []
    for ids in sequences:
        feed = {"input_ids": ids[None, :].astype(np.int64), **empty_past(session, 1, size)}
        if "attention_mask" in names:
            feed["attention_mask"] = np.ones_like(feed["input_ids"])
        if "position_ids" in names:
            feed["position_ids"] = np.arange(len(ids), dtype=np.int64)[None, :]
        logits.append(session.run(["logits"], feed)[0][0].astype(np.float32))
    return logits


def installed_versions() -> dict:
    """The installed onnxruntime's version from its package metadata (not imported: the guard decides first)."""
    from importlib import metadata
    try:
        return {"versions": {"onnxruntime": metadata.version("onnxruntime")}}
    except metadata.PackageNotFoundError:
        return {"versions": {}}


def load_sequences(path: str, limit: int | None = None) -> list:
    import numpy as np
    data = np.load(path)
    ids, lengths = data["input_ids"], data["lengths"]
    count = len(lengths) if limit is None else min(limit, len(lengths))
    return [ids[i, :lengths[i]] for i in range(count)]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.verify.child_decoder")
    parser.add_argument("model")
    parser.add_argument("sequences")
    parser.add_argument("out")
    parser.add_argument("--sequences", dest="limit", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-guard", action="store_true", help="skip the guard (the fp32 reference has no stamp)")
    args = parser.parse_args()
    if not args.no_guard and read_stamp(args.model):
        try:
            print(f"quantgate guard: {ensure_can_run(args.model, check_runtime=False).message()}", file=sys.stderr)
            too_old = runtime_floor_problems(read_stamp(args.model), installed_versions())
            if too_old:
                raise ArtifactRefused(f"{Path(args.model).name}: {'; '.join(too_old)}")
        except (ArtifactRefused, StampError) as refused:
            print(f"quantgate guard: {refused}", file=sys.stderr)
            return EXIT_REFUSED
    import numpy as np
    logits = run(args.model, load_sequences(args.sequences, args.limit), args.threads)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # on a lab host: out/ in the run's folder
    np.savez(args.out, **{f"logits_{i}": array for i, array in enumerate(logits)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""One greedy generation through onnxruntime-genai at batch 1, timed (prefill, decode), and the child process whose
peak memory the decoder bench reads (pipeline/release/bench/decoder.py): it loads one folder's model, generates once
and prints its peak resident memory in kB; with no arguments it only imports numpy and onnxruntime-genai (the
baseline every peak includes). It imports nothing else, so that its peak is the model's and the runtime's.

The peak is the process's VmHWM (/proc/self/status), which starts anew at exec: getrusage's ru_maxrss, in the child
or from os.wait4, keeps the peak of the process it was forked from (a parent holding three models gave every child
the parent's 769 MB).

    python -m pipeline.release.bench.decoder_child [FOLDER PROMPT.npy NEW_TOKENS THREADS]
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


def load_model(folder: Path, threads: int):
    """onnxruntime-genai's model on the folder, with `threads` intra-op threads."""
    import onnxruntime_genai as og
    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
    return og.Model(config)


def generate_once(model, prompt: np.ndarray, new_tokens: int) -> tuple[float, float]:
    """(seconds of the prefill, seconds of `new_tokens` decode steps) of one greedy generation at batch 1."""
    import onnxruntime_genai as og
    params = og.GeneratorParams(model)
    total = len(prompt) + new_tokens  # min_length too: an end-of-text token must not stop the loop early
    params.set_search_options(max_length=total, min_length=total, do_sample=False)
    generator = og.Generator(model, params)
    started = time.perf_counter()
    generator.append_tokens(prompt)  # runs the prompt through the model: the prefill
    prefilled = time.perf_counter()
    for _ in range(new_tokens):
        generator.generate_next_token()
    return prefilled - started, time.perf_counter() - prefilled


def peak_rss_kb() -> int:
    """This process's peak resident memory since exec, in kB (getrusage where there is no /proc)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main(argv: list[str]) -> int:
    import numpy as np
    import onnxruntime_genai  # noqa: F401 - the baseline: what every generating child has loaded
    if argv:
        folder, prompt, new_tokens, threads = Path(argv[0]), np.load(argv[1]), int(argv[2]), int(argv[3])
        generate_once(load_model(folder, threads), prompt, new_tokens)
    print(peak_rss_kb())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

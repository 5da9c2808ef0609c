"""What one `quantgate bench` run is asked to measure: the typed settings every bench subject receives."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BenchSettings:
    """The options of `quantgate bench` (pipeline/commands/bench.py), as the subjects use them."""

    root: Path  # a folder of artifact folders (a release), or one artifact folder
    out: Path  # where results.json and results.md go
    release: str = "candidate"
    batches: tuple[int, ...] = (1, 32)
    seconds: float = 1.5  # time budget per model x batch, after warm-up
    threads: int = 1  # intra-op threads of every timed session
    sequence_length: int | None = 128  # tokens per timed sample of token models (None: as held out)
    build_runs: int = 0  # --build-time N
    prompt_tokens: int = 128  # decoders: the prefill's length
    new_tokens: int = 32  # decoders: tokens generated after the prefill

    def as_json(self) -> dict:
        return {"sequence_length": self.sequence_length, "batches": list(self.batches),
                "seconds_per_case": self.seconds, "intra_op_threads": self.threads,
                "build_time_runs": self.build_runs, "prompt_tokens": self.prompt_tokens,
                "new_tokens": self.new_tokens}

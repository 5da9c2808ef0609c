"""Stage progress through `logging` (logger `quantgate`): a line when a step starts, its duration when it ends.

Under the Hydra app, conf/hydra/job_logging/quantgate.yaml sends it to the console and to the run's log file
(logs/runs/<time>/<job name>.log); third-party warnings (torchao's missing optional kernels, onnxruntime's
pre-processing advice, Python `warnings`) go to the log file only (`ThirdPartyNoise` keeps them off the
console). Elsewhere (the other commands, tests) a console handler is added on first use.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager

LOGGER = "quantgate"
log = logging.getLogger(LOGGER)


class CurrentStderr(logging.StreamHandler):
    """A console handler that writes to whatever sys.stderr is at the time (pytest swaps it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class ThirdPartyNoise(logging.Filter):
    """On the console: quantgate's own records, and errors from anyone; the rest stays in the log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == LOGGER or record.name.startswith(f"{LOGGER}.") or record.levelno >= logging.ERROR


def _ensure_handler() -> None:
    if not log.handlers:
        handler = CurrentStderr()
        handler.setFormatter(logging.Formatter("[quantgate] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def route_third_party_logs() -> None:
    """torch gives its logger its own console handler: send its records the way of every third party's
    (through the root handlers, so to the run's log file and, errors only, to the console)."""
    import torch  # noqa: F401 - importing torch installs the handler this replaces
    del torch
    torch_log = logging.getLogger("torch")
    torch_log.handlers.clear()
    torch_log.propagate = True
    logging.captureWarnings(True)  # Python warnings too


def say(message: str) -> None:
    _ensure_handler()
    log.info(message)


@contextmanager
def step(label: str):
    say(f"{label} ...")
    started = time.perf_counter()
    yield
    say(f"{label}: done in {time.perf_counter() - started:.1f} s")

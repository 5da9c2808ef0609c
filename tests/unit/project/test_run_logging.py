"""The Hydra run's logging (conf/hydra/job_logging/quantgate.yaml): progress on the console and in the log file;
third-party warnings in the log file only; errors from anyone on the console."""
from __future__ import annotations

import logging
import logging.config
import warnings

import pytest
from omegaconf import OmegaConf

from pipeline.paths import CONF_DIR
from pipeline.progress import say


@pytest.fixture
def run_logging(tmp_path):
    spec = OmegaConf.load(CONF_DIR / "hydra" / "job_logging" / "quantgate.yaml")
    spec.handlers.file.filename = str(tmp_path / "build.log")
    saved = {name: (lg.handlers[:], lg.level, lg.propagate) for name, lg in
             [("", logging.getLogger()), ("quantgate", logging.getLogger("quantgate"))]}
    logging.config.dictConfig(OmegaConf.to_container(spec))
    # Off first: an earlier run in this process (route_third_party_logs) may have left capturing "on" while pytest
    # restored warnings.showwarning after that test, and then captureWarnings(True) alone would do nothing.
    logging.captureWarnings(False)
    logging.captureWarnings(True)
    yield tmp_path / "build.log"
    logging.captureWarnings(False)
    for name, (handlers, level, propagate) in saved.items():
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.close()
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


def test_progress_reaches_console_and_log_third_party_noise_only_the_log(run_logging, capsys):
    say("export: minilm to ONNX ...")
    logging.getLogger("torchao").warning("Failed to load _C_mxfp8.so")
    logging.warning("Please consider to run pre-processing before quantization")
    with warnings.catch_warnings():  # shown whatever filters an earlier test in this process left behind
        warnings.simplefilter("always")
        warnings.warn("a deprecated torch API", DeprecationWarning, stacklevel=1)
    logging.getLogger("onnxruntime").error("a real failure")
    console = capsys.readouterr().err
    assert "[quantgate] export: minilm to ONNX ..." in console and "a real failure" in console
    for noise in ("_C_mxfp8", "pre-processing", "deprecated torch API"):
        assert noise not in console
    for handler in logging.getLogger().handlers + logging.getLogger("quantgate").handlers:
        handler.flush()
    text = run_logging.read_text()
    for line in ("[quantgate][INFO] export: minilm", "[torchao][WARNING] Failed to load", "[root][WARNING] Please consider",
                 "[py.warnings][WARNING]", "[onnxruntime][ERROR] a real failure"):
        assert line in text, line

"""Refuse, in words, to run an artifact on a CPU or runtime it was not built for.

The error a user should have seen instead of "Illegal instruction (core dumped)". Standard library
only: it must run on CPUs where importing numpy or onnxruntime already dies (numpy 2.4 does on
Nehalem), so it reads the stamp with a tiny protobuf walker (ONNX) or zipfile (.pt2) and the CPU
through CPUID. This folder is also packaged alone, as the `quantgate-guard` distribution whose import
name is `quantgate_guard` (pyproject.toml here, `make guard-wheel`); its modules import each other
only relatively and nothing else of quantgate.

    from pipeline.guard import ensure_can_run          # in a deployment: from quantgate_guard import ...
    ensure_can_run("model.onnx")          # ArtifactRefused (or StampError) before the model is loaded
    ensure_can_run("model.pt2")           # the same for a torch AOTInductor package
    ensure_can_run("deploy/minilm-dynamic-avx2/model.onnx", public_key="keys/quantgate.pub")
                                          # also refuses an unsigned or altered artifact folder
    session = open_session("model.onnx")  # the guard, then onnxruntime.InferenceSession
    runner = load_package("model.pt2")    # the guard, then torch's aoti_load_package

    python -m pipeline.guard PATH [--public-key KEY] [--cpu-only]   # exit 0 ok, 3 refused, 2 usage error

    errors.py     the exceptions (defined once) and exit codes
    cpuid.py      this CPU's features: CPUID (x86-64), getauxval (64-bit Arm)
    protobuf.py   reading and writing the few protobuf fields the guard needs
    stamp.py      the stamp's keys, decode_stamp (validates it) and check_stamp: a stamp against a host's CPU
                  and runtime
    onnx.py       an ONNX model's stamp and versions, external-data safety, open_session
    pt2.py        a .pt2 package's stamp, torch's version, load_package
    probe.py      what the installed onnxruntime loads (imports onnxruntime only when asked)
    signature.py  the optional model-signing check (imports model-signing only when asked)
    artifact.py   the table of containers (ONNX, .pt2): ensure_can_run / read_stamp for either;
                  cli.py + __main__.py: the command
"""
from __future__ import annotations

from .artifact import artifact_kind, ensure_can_run, read_stamp
from .cli import main
from .errors import (EXIT_OK, EXIT_REFUSED, EXIT_USAGE, ArtifactRefused, GuardError, SignatureCheckUnavailable,
                     StampError, UnreadableArtifact, UnsafeModelError)
from .onnx import check_external_data, open_session, read_onnx_header, read_onnx_versions
from .pt2 import check_package, load_package, read_package_stamp
from .signature import SignatureInvalid, check_signature
from .stamp import (REQUIRED_STAMP_KEYS, STAMP_PREFIX, STAMP_SCHEMA, GuardVerdict, ModelVersions, check_stamp,
                    decode_stamp, predict_load, required_headline)

__version__ = "0.1.0"
__all__ = [
    "EXIT_OK", "EXIT_REFUSED", "EXIT_USAGE", "REQUIRED_STAMP_KEYS", "STAMP_PREFIX", "STAMP_SCHEMA",
    "ArtifactRefused", "GuardError", "GuardVerdict", "ModelVersions", "SignatureCheckUnavailable", "SignatureInvalid",
    "StampError", "UnreadableArtifact", "UnsafeModelError", "artifact_kind", "check_external_data", "check_package",
    "check_signature", "check_stamp", "decode_stamp", "ensure_can_run", "load_package", "main", "open_session", "predict_load",
    "read_onnx_header", "read_onnx_versions", "read_package_stamp", "read_stamp", "required_headline",
]

"""Ask an installed onnxruntime what it can load: the highest IR version and opset per domain.

    python -m pipeline.guard.probe          # prints JSON; run inside any runtime environment

Nothing is looked up in a table: the runtime is handed tiny one-node models (written with the guard's
protobuf writer, since a deployment environment has no `onnx` package) and either loads them or says
why not, which is exactly the check a real artifact meets. Imports only the standard library until
`probe()` imports onnxruntime itself.
"""
from __future__ import annotations

import json
import platform
import re
import sys

from .protobuf import encode_field as _field

# Domains an exported or quantized model may import; onnxruntime accepts anything up to its own
# schema registry's version for each, and refuses higher ones at load time.
DOMAINS = ("", "ai.onnx.ml", "com.microsoft")
SEARCH_CEILING = 64  # above any opset onnx will publish for years; binary search keeps it ~6 loads


def tiny_model(ir_version: int, opsets: dict[str, int]) -> bytes:
    """ModelProto bytes: y = Identity(x), float[1], importing `opsets` (domain -> version)."""
    tensor_type = _field(1, _field(1, 1) + _field(2, _field(1, _field(1, 1))))  # float, shape [1]
    value = lambda name: _field(1, name) + _field(2, tensor_type)  # noqa: E731
    node = _field(1, "x") + _field(2, "y") + _field(4, "Identity")
    graph = _field(1, node) + _field(2, "probe") + _field(11, value("x")) + _field(12, value("y"))
    imports = b"".join(_field(8, _field(1, domain) + _field(2, version)) for domain, version in opsets.items())
    return _field(1, ir_version) + _field(7, graph) + imports


def _loads(ort, model: bytes) -> tuple[bool, str]:
    try:
        ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return True, ""
    except Exception as error:  # onnxruntime's Fail/InvalidGraph types differ by version
        return False, str(error)


def _highest(accepts, low: int, high: int) -> int:
    """The largest n in [low, high] with accepts(n), given accepts is true up to a point; low-1 if none."""
    while low <= high:
        middle = (low + high) // 2
        if accepts(middle):
            low = middle + 1
        else:
            high = middle - 1
    return high


def probe() -> dict:
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # the refusals are the point; keep them off stderr
    base = {"": 11}  # Identity-11 is known to every runtime this project meets
    ok, message = _loads(ort, tiny_model(SEARCH_CEILING * 16, base))
    # The runtime usually names its limit ("max supported IR version: 9"); search if it does not.
    said = re.search(r"max supported IR version: (\d+)", message)
    max_ir = int(said.group(1)) if said else _highest(lambda ir: _loads(ort, tiny_model(ir, base))[0], 3, 64)
    max_opsets = {}
    for domain in DOMAINS:
        opsets = lambda v: base | {domain: v}  # noqa: E731
        max_opsets[domain] = _highest(lambda v: _loads(ort, tiny_model(max_ir, opsets(v)))[0], 1, SEARCH_CEILING)
    versions = {"python": platform.python_version(), "onnxruntime": ort.__version__}
    from importlib import metadata
    try:
        versions["numpy"] = metadata.version("numpy")
    except metadata.PackageNotFoundError:
        pass
    return {"versions": versions, "max_ir_version": max_ir, "max_opsets": max_opsets,
            "source": f"probed from onnxruntime {ort.__version__} itself by loading one-node models"}


def installed_limits() -> dict:
    """probe() of the onnxruntime this process would import; no versions when there is none."""
    try:
        return probe()
    except ImportError:
        return {"versions": {}, "max_ir_version": 0, "max_opsets": {}, "source": "onnxruntime is not installed"}


def main() -> int:
    json.dump(probe(), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What an installed onnxruntime loads: pipeline/guard/probe.py; this name stays for its importers.

    python -m pipeline.runtime_probe          # prints JSON; run inside any runtime environment
"""
from pipeline.guard.probe import DOMAINS, SEARCH_CEILING, installed_limits, main, probe, tiny_model

__all__ = ["DOMAINS", "SEARCH_CEILING", "installed_limits", "main", "probe", "tiny_model"]

if __name__ == "__main__":
    raise SystemExit(main())

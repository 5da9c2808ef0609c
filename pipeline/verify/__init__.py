"""Verification: run an artifact on CPU profiles and judge what comes back (fidelity, per-CPU numerics, the report)."""

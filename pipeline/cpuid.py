"""This CPU's features (CPUID, getauxval) live in pipeline/guard/cpuid.py; this name stays for its importers.

    python -m pipeline.cpuid       # prints the features, archspec names
"""
from pipeline.guard.cpuid import ARM_READABLE_FEATURES, READABLE_FEATURES, arm_features, arm_hwcaps, host_features

__all__ = ["ARM_READABLE_FEATURES", "READABLE_FEATURES", "arm_features", "arm_hwcaps", "host_features"]

if __name__ == "__main__":
    print(" ".join(sorted(host_features())))

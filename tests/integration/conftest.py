"""A small real release shared by the signoff and bench tests: two digits_cnn artifacts, one failing."""
import pytest

# Natively only, compared with this host itself: these tests are about the signoff, not about CPUs.
FAST = ["model=digits_cnn", "target=avx2", "verify.profiles=[native]", "verify.reference_cpu=native"]


@pytest.fixture(scope="session")
def digits_release(tmp_path_factory):
    """artifacts/<release>/ with digits_cnn-static-avx2 (passes) and digits_cnn-dynamic-avx2 (fails fidelity)."""
    from pipeline.builder.task import quantize_task
    from pipeline.config import compose_config

    release = tmp_path_factory.mktemp("artifacts") / "rc1"
    good = [*FAST, "mode=static", f"artifacts_dir={release}"]
    # An impossible bar (int8 equal to fp32 to the last bit): verification fails on `native`, the build's gate does not
    # (it budgets agreement and accuracy, not element-wise errors).
    bad = [*FAST, "mode=dynamic", "verify.max_abs_error=0", f"artifacts_dir={release}"]
    assert quantize_task(compose_config(good), good) == 0
    assert quantize_task(compose_config(bad), bad) == 1
    return release

"""How the verdict is composed: only the profiles that count decide it (verify.json status, the padding verdict);
informational ones are reported. And how a padding move is explained from fp32's own padded run, the native int8
run and the profile's own int8 error (pipeline.verify.padding)."""
from pipeline.verify.padding import Baselines, Movement, explain, summarize
from pipeline.verify.report import counted_why, overall_status

HINT = "likely u8s8 saturation on CPUs without VNNI"


def profile(required: bool, status: str, met: bool, padding: dict | None = None) -> dict:
    return {"required": required, "status": status, "requirement_met": met, "padding": padding}


def test_an_informational_profile_never_decides_whatever_its_status():
    below = profile(False, "fail", False)  # below the target, unstamped: ran, and failed its checks
    assert overall_status({"native": profile(True, "pass", True), "haswell": below}) == "pass"
    assert overall_status({"native": profile(True, "not_verified", False), "haswell": below}) == "not_verified"
    assert overall_status({"native": profile(True, "fail", False), "haswell": profile(False, "pass", False)}) == "fail"
    assert overall_status({"haswell": profile(False, "pass", False)}) == "not_verified"  # nothing that counts ran
    assert overall_status({"native": profile(True, "pass", True)}, failed_elsewhere=True) == "fail"
    assert counted_why(False, "haswell lacks avx512_vnni").startswith("informational, never decides the verdict")
    assert counted_why(True, "native has every feature").startswith("counts toward the verdict")


def test_the_padding_verdict_comes_from_the_profiles_that_count():
    moved = {"status": "fail", "reason": "padding changes the output ...: this CPU's int8 kernels", "cause": "cpu_kernels"}
    kept = {"status": "pass", "reason": ""}
    pending = {"status": "pending", "extra_tokens": 16}
    summary = summarize(pending, {"native": profile(True, "pass", True, kept),
                                  "haswell": profile(False, "fail", False, moved)}, Baselines(dynamic=True))
    assert summary["status"] == "pass" and summary["counted"] == ["native"] and summary["informational"] == ["haswell"]
    assert "informational, not counted: haswell: fail" in summary["reason"]
    assert summary["dynamic_quantization"] is True
    unverified = summarize(pending, {"native": profile(True, "not_verified", False),
                                     "haswell": profile(False, "fail", False, moved)}, None)
    assert unverified["status"] == "not_verified"
    failed = summarize(pending, {"haswell": profile(True, "fail", False, moved)}, None)
    assert failed["status"] == "fail" and "haswell" in failed["reason"]


def test_each_cause_of_a_padding_move_in_words():
    fp32_kept, fp32_moved = {"status": "pass"}, {"status": "fail", "reason": "embedding: cosine worst 0.3 < 0.95"}
    native_kept, native_moved = {"status": "kept"}, {"status": "moved"}
    small, large = Movement({"h": 0.4}, {"h": 1.0}), Movement({"h": 3.0}, {"h": 1.0})

    def cause(baselines: Baselines, moved: Movement, hint: str = "") -> dict:
        return explain("h: per-token cosine worst 0.91 < 0.95", moved, baselines, 16, hint)

    assert cause(Baselines(fp32_moved, native=native_moved, dynamic=True), small)["cause"] == "mask_ignored"
    ranges = cause(Baselines(fp32_kept, native=native_kept, dynamic=True), small, HINT)
    assert (ranges["status"], ranges["cause"]) == ("pass", "batch_ranges")
    assert "not the attention mask" in ranges["reason"] and HINT in ranges["reason"]
    assert "h moved by up to 0.4" in ranges["reason"] and "and so does the native int8 run" in ranges["reason"]
    assert cause(Baselines(fp32_kept, native=native_kept, dynamic=False), small)["cause"] == "int8_noise"
    kernels = cause(Baselines(fp32_kept, native=native_kept, dynamic=True), large, HINT)
    assert (kernels["status"], kernels["cause"]) == ("fail", "cpu_kernels") and HINT in kernels["reason"]
    graph = cause(Baselines(fp32_kept, native=native_moved, dynamic=True), large)
    assert (graph["status"], graph["cause"]) == ("fail", "int8_graph") and "dynamic activation ranges" in graph["reason"]
    unknown = cause(Baselines(), small)  # fp32's padded run is missing: the old words, and a failure
    assert (unknown["status"], unknown["cause"]) == ("fail", "unknown") and "attention_mask is ignored" in unknown["reason"]

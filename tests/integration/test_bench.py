"""The benchmark on the small digits_cnn release: valid JSON with int8/fp32 ratios and the Markdown table."""
import json

import pytest

from pipeline.commands.bench import main as bench_main

pytestmark = pytest.mark.slow


def test_bench_writes_ratios_for_every_artifact(digits_release, tmp_path):
    assert bench_main(["--artifacts-dir", str(digits_release), "--out", str(tmp_path), "--batches", "1", "8",
                       "--seconds", "0.2"]) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    assert {a["artifact"] for a in report["artifacts"]} == {"digits_cnn-static-avx2", "digits_cnn-dynamic-avx2"}
    for case in report["artifacts"]:
        assert set(case["latency"]) == {"1", "8"}
        for figures in case["latency"]["8"].values():
            assert figures["p95_ms"] >= figures["p50_ms"] > 0 and figures["repeats"] >= 5
        assert 0 < case["ratios"]["size_int8_vs_fp32"] < 1
        assert case["ratios"]["8"]["int8_vs_plain_int8_p50"] > 0
        assert set(case["gemm_floor"]) == {"1", "8"}  # the int8 GEMMs' own ratio at each batch
        for batch, floor in case["gemm_floor"].items():
            assert floor["rows"] == int(batch) and floor["int8_vs_fp32"] == case["ratios"][batch].get(
                "int8_vs_fp32_gemm_floor") and (floor["int8_vs_fp32"] is None) == (not floor["shapes"])
        # the int8 convolutions' own ratio on the model's two convolutions, at each batch
        for batch, floor in case["conv_floor"].items():
            assert floor["batch"] == int(batch) and len(floor["shapes"]) == 2
            assert floor["int8_vs_fp32"] == case["ratios"][batch]["int8_vs_fp32_conv_floor"] > 0
        assert 0 <= case["fidelity"]["int8"]["top1_agreement"] <= 1
    table = (tmp_path / "results.md").read_text()
    assert "| digits_cnn-static-avx2 |" in table and "plain ORT dyn" in table
    assert "distance to this host's int8 floor on its convolutions" in table and "x the floor" in table
    for case in report["artifacts"]:  # digits_cnn's fp32 runs in hundredths of a millisecond
        for batch, verdict in case["verdict"].items():
            if verdict == "too_small_to_time":
                assert f"b{batch} {case['noise'][batch]['ratio']:.2f}x" in table and "too small to time here" in table
    # both modes of one model and target over one fp32 graph, timed in one loop
    [side] = report["side_by_side"]
    assert (side["model"], side["target"]) == ("digits_cnn", "avx2") and set(side["int8_vs_fp32_p50"]) == {"1", "8"}
    assert set(side["int8_vs_fp32_p50"]["8"]) == {"digits_cnn-static-avx2", "digits_cnn-dynamic-avx2"}
    assert all(ratio > 0 for ratio in side["int8_vs_fp32_p50"]["8"].values())
    assert "Modes side by side" in table and "static " in table.split("Modes side by side")[1]
    # the release's signoff shows the bench as a plot when reports/<release>/bench/ holds it
    from pipeline.release.signoff import bench_plot
    reports = tmp_path.parent / f"{tmp_path.name}-reports"
    (reports / "bench").mkdir(parents=True)
    (reports / "bench" / "results.json").write_text(json.dumps(report))
    plot = bench_plot(reports)["bench.png"]
    assert plot[:8] == b"\x89PNG\r\n\x1a\n" and len(plot) > 10_000
    assert bench_plot(tmp_path / "no-such-reports") == {}

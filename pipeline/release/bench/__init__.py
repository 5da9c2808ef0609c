"""What quantization buys on this host, per kind of artifact (`quantgate bench`; options in
pipeline/commands/bench.py). One module per concern:

- settings.py: the typed settings a run is given;
- subjects.py: the registry of bench subjects, keyed by what the artifact is (weight-only decoder, detector,
  transformer encoder, CNN, any other ONNX graph; an export=aoti package is listed as not benched);
- onnx_int8.py: the int8 ONNX subjects: latency against the fused fp32 graph and a plain `quantize_dynamic`,
  interleaved, with the noise; size, fidelity; modes side by side;
- decoder.py (and decoder_child.py): the weight-only decoder subject: prefill and decode tokens/s through
  onnxruntime-genai, peak memory of a child process, size, against the fp32 export;
- profiles.py: where the time goes (op-type profile); floor.py: the distance to this host's int8 floor
  (pipeline/release/floors.py); build_time.py: `--build-time`;
- run.py: one run (folders -> subjects -> report); report.py: results.json and results.md.

Every figure of one subject is measured in one process, the sessions' runs interleaved (one run of each in turn,
repeated), with the same session options (pipeline/timing.py), so the ratios compare like with like; on a shared
machine trust the ratios, not the milliseconds.
"""

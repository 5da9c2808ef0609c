"""Verify an ONNX artifact on every CPU profile of its target, each run in its own child process.

Order of work: the fp32 reference natively; the artifact natively (no guard: a measurement), from which
the few samples the emulated profiles run are chosen (the most stressed); the artifact on the reference
CPU (verify.reference_cpu); then every profile (pipeline.verify.planning), each in a child
(pipeline.verify.child_onnx) run by its kind's runner (pipeline.verify.cpu_kinds). Each profile's outputs are
judged against fp32 (every output, pipeline.verify.fidelity) and against the reference CPU's on the same samples
(per-CPU numerics: u8s8 saturation without VNNI). Each profile also names a runtime (`haswell@ort116`;
default: the one the artifact was stamped for): the child runs in that runtime's venv
(pipeline.runtimes.venvs), after the guard has predicted in words whether that runtime loads the
artifact; the real load confirms or refutes the prediction. Token models are also checked for padding
invariance on every profile that runs. The report is pipeline.verify.report.VerifyReport.

One module per concern:

- `inputs`: the files checked before anything runs (models, held-out arrays, labels, layout);
- `job`: planning one verification (the `Job`: profiles, runtimes, sample counts, padding check, notes);
- `running`: one child on one profile (its command line, files placed where it runs, its record and outputs);
- `evidence` and `measurement`: what every profile is judged against, and the runs before the profiles that make it;
- `profiles`: every profile of the plan run and judged (lab hosts in parallel);
- `judging` and `padding_runs`: one run's outputs judged (fidelity, per-CPU numerics, state drift, padding,
  the guard's prediction);
- `verification`: files to verify.json (`verify_files`), and a build folder's snapshot (`verify_snapshot`);
- `table`: the report in a few lines for the terminal.
"""
from pipeline.verify.onnx.inputs import graph_io
from pipeline.verify.onnx.running import child_command, progress
from pipeline.verify.onnx.table import format_table
from pipeline.verify.onnx.verification import verify_files, verify_snapshot

__all__ = ["child_command", "format_table", "graph_io", "progress", "verify_files", "verify_snapshot"]

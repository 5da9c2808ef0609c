"""The scheduled CI workflow: valid against GitHub's workflow schema (offline), and it does what it promises."""
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

WORKFLOW = Path(__file__).resolve().parents[2] / ".github" / "workflows" / "build-artifacts.yml"


def test_workflow_passes_the_github_schema():
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    result = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_schedules_builds_signs_off_uploads_and_gates():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert triggers["schedule"][0]["cron"] and "workflow_dispatch" in triggers
    [job] = workflow["jobs"].values()
    runs = [step.get("run", "") for step in job["steps"]]
    uses = [step.get("uses", "") for step in job["steps"]]
    assert any("make setup" in run for run in runs)
    matrix = next(i for i, run in enumerate(runs) if "make matrix" in run)
    signoff = next(i for i, run in enumerate(runs) if "make signoff" in run)
    assert matrix < signoff
    # The signoff step's exit code (1 when blocked) fails the job; uploads still run after it.
    assert "continue-on-error" not in job["steps"][signoff]
    uploads = [i for i, use in enumerate(uses) if use.startswith("actions/upload-artifact")]
    assert len(uploads) == 2 and all(i > signoff and "cancelled()" in job["steps"][i]["if"] for i in uploads)
    assert any("reports/" in str(job["steps"][i]["with"]["path"]) for i in uploads)
    assert any("artifacts/" in str(job["steps"][i]["with"]["path"]) for i in uploads)

"""The release matrix through the Ray launcher (hydra_plugins/quantgate_ray_launcher/) on a real Ray head on
127.0.0.1: `quantgate matrix --launcher ray` joins it, each combination runs as a Ray task in one of its workers,
and the table and matrix.json come out as with joblib, a refused combination among them."""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


@dataclass
class RayHead:
    address: str
    env: dict
    temp_dir: Path
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ray_processes(temp_dir: Path) -> list[int]:
    """The pids of the processes of this head (raylet, GCS, workers, ...): their command lines name its temp dir."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if str(temp_dir).encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on 127.0.0.1 (a free port, 2 CPUs, no dashboard) in a temp dir of its own, with
    a token of its own; stopped by signalling that process, which stops the processes it started. Not `ray stop`:
    that stops every Ray on the machine."""
    # A short path: Ray's unix sockets live under it (at most 107 characters).
    temp_dir = Path(tempfile.mkdtemp(prefix="qg-ray-", dir="/tmp"))
    port = free_port()
    env = {**os.environ,
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # Ray's node address stays 127.0.0.1 (else the host's)
           "RAY_USAGE_STATS_ENABLED": "0",
           # Token authentication, with a token of this test's (neither read from nor written to ~/.ray).
           "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    ray = Path(sys.executable).with_name("ray")
    log = open(temp_dir / "head.log", "w")
    process = subprocess.Popen(
        [str(ray), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp_dir}", "--block"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=temp_dir, start_new_session=True)
    head = RayHead(f"127.0.0.1:{port}", env, temp_dir, process)
    try:
        deadline = time.monotonic() + 120
        while "Ray runtime started" not in (temp_dir / "head.log").read_text():
            assert process.poll() is None, f"ray start exited: {(temp_dir / 'head.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no Ray head in 120 s: {(temp_dir / 'head.log').read_text()[-3000:]}"
            time.sleep(0.5)
        yield head
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        for pid in ray_processes(temp_dir):  # anything of this head's still alive, by pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_matrix_runs_in_the_workers_of_a_running_ray_head(ray_head, tmp_path):
    release = tmp_path / "artifacts" / "rc-ray"
    sweep = tmp_path / "sweep"
    # The two combinations (static, dynamic) plus a refused twin of each (no calibration samples): the refused
    # ones are recorded, not raised, and do not stop the builds. One CPU per task: two at a time on the head.
    command = [sys.executable, "-m", "pipeline.cli", "matrix", "--launcher", "ray", "--release", "rc-ray",
               "--artifacts-dir", str(release), f"hydra.launcher.ray.init.address={ray_head.address}",
               "hydra.launcher.ray.remote.num_cpus=1", "model=digits_cnn", "mode=static,dynamic", "target=avx2",
               "calibration.n_samples=64,0", "verify.profiles=[native]", "verify.reference_cpu=native",
               "verify.native_max_samples=16", "verify.latency_repeats=2", f"hydra.sweep.dir={sweep}"]
    # From another folder than the head's, so the workers can only find the checkout and the relative paths
    # through what the launcher gives them (PYTHONPATH, the driver's working directory).
    result = subprocess.run(command, cwd=REPO, env={**ray_head.env, "HYDRA_FULL_ERROR": "0"}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-3000:], result.stderr[-3000:])
    output = result.stdout + result.stderr
    table = result.stdout[result.stdout.index("matrix: 4 combination(s)"):]
    assert table.splitlines()[0] == "matrix: 4 combination(s): 2 build_failed, 2 pass"

    matrix = json.loads((release / "matrix.json").read_text())
    assert matrix["launcher"] == "RayLauncher"
    outcomes = {(c["artifact"], " ".join(sorted(c["overrides"]))): c["outcome"] for c in matrix["combinations"]}
    assert sorted(outcomes.values()) == ["build_failed", "build_failed", "pass", "pass"]
    assert {artifact for (artifact, _), outcome in outcomes.items() if outcome == "pass"} == {
        "digits_cnn-static-avx2", "digits_cnn-dynamic-avx2"}
    for mode in ("static", "dynamic"):
        folder = release / f"digits_cnn-{mode}-avx2"
        assert json.loads((folder / "verify.json").read_text())["status"] == "pass"
        assert f"digits_cnn-{mode}-avx2" in table

    # Each combination ran as a Ray task in a worker of that head: not this process, not the driver, and the
    # head's own log folder holds that worker's log.
    tasks = [json.loads((sweep / str(job) / "ray_task.json").read_text()) for job in range(4)]
    assert len({t["task_id"] for t in tasks}) == 4 and {t["node_ip"] for t in tasks} == {"127.0.0.1"}
    assert all(t["cwd"] == str(REPO) for t in tasks)
    logs = list((ray_head.temp_dir / "session_latest" / "logs").glob("worker-*.out"))
    for task in tasks:
        assert task["pid"] != os.getpid()
        assert any(log.name.endswith(f"-{task['pid']}.out") for log in logs), (task, [p.name for p in logs])
        assert f"ran as Ray task {task['task_id']}" in output


CRASHING_APP = '''
import os
import hydra

@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg):
    if cfg.x == 2:
        os._exit(3)  # the worker process dies, as in a segfault or an out-of-memory kill
    print("job with x", cfg.x, "done in", os.getpid(), flush=True)

if __name__ == "__main__":
    main()
'''


@pytest.mark.parametrize("record", [False, True])
def test_a_task_whose_worker_dies_is_reported_after_the_others_finished(ray_head, tmp_path, record):
    """Hydra's way (record_lost_tasks=false): the sweep fails; quantgate's (true, conf/hydra/launcher/ray.yaml): the
    job's folder says what happened and the sweep ends as usual, for the matrix table to list it as crashed."""
    app = tmp_path / "app.py"
    app.write_text(CRASHING_APP)
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, str(app), "--multirun", "+x=1,2", "hydra/launcher=ray", f"hydra.sweep.dir={sweep}",
         f"hydra.launcher.ray.init.address={ray_head.address}", "+hydra.launcher.ray.remote.max_retries=0",
         f"hydra.launcher.record_lost_tasks={record}"],
        cwd=tmp_path, env={**ray_head.env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert "#1 (+x=2) did not run to its end in Ray" in output and "WorkerCrashedError" in output, output[-3000:]
    done = json.loads((sweep / "0" / "ray_task.json").read_text())  # the other one ran to its end
    assert f"ran as Ray task {done['task_id']}" in output and not (sweep / "1" / "ray_task.json").exists()
    if record:
        assert result.returncode == 0, output[-3000:]
        assert "WorkerCrashedError" in (sweep / "1" / "ray_task_error.txt").read_text()
        # What quantgate's matrix table makes of that folder (no outcome.json in it): a crashed combination.
        from pipeline.release.matrix import collect
        lost = [o for o in collect(sweep) if o["job"] == "1"]
        assert [o["outcome"] for o in lost] == ["crashed"] and "died without recording an outcome" in lost[0]["reason"]
    else:
        assert result.returncode != 0, output[-3000:]

"""`hataori serve` and `hataori deploy` against real Prefect servers (subprocesses, free ports, a
PREFECT_HOME of their own): a scheduled run completes and stopping serve stops the server it
started; a work pool deployment is run by a real `prefect worker`; bad input fails before any
server starts, with a message that names the problem."""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

STORY = "Once upon a time a small cat lived by the sea. The cat liked fish and long naps in the sun.\n"
RUN_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A tiny pipeline over a local corpus: a whole run takes seconds. The artifacts and the
    PREFECT_HOME are shared by the tests of this module (a later run is cached; a later server
    start skips the database migration)."""
    root = tmp_path_factory.mktemp("serve")
    (root / "local.txt").write_text("\n\n".join(f"{STORY} Chapter {i}." for i in range(100)), encoding="utf-8")
    (root / "pipe.toml").write_text(f"""
name = "serve-test"
artifacts = "{root / 'artifacts'}"
[corpus]
[[corpus.sources]]
url = "{root / 'local.txt'}"
doc_split = "blank_line"
[tokenizer]
vocab_size = 280
[dataset]
shard_tokens = 2000
val_fraction = 0.1
[pretrain]
preset = "tiny"
max_steps = 2
batch_size = 2
context_length = 16
checkpoint_interval = 2
eval_interval = 2
eval_batches = 1
sample_tokens = 0
device = "cpu"
""", encoding="utf-8")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def environment(root: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return {**env, "PREFECT_HOME": str(root / ".prefect"), **extra}


def hataori(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True,
                          env=env or environment(root), timeout=timeout, cwd=root)


def flow_runs(api: str, deployment: str, **flow_run_filter) -> list[dict]:
    import httpx

    body = {"flow_runs": flow_run_filter, "deployments": {"name": {"any_": [deployment]}}, "limit": 20}
    r = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:  # exited (or a zombie) since it was listed
        return []


def gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


# ------------------------------------------------------------------------ errors, before any server


@pytest.mark.parametrize("args, message", [
    (["serve"], "give exactly one of --cron EXPR or --interval SECONDS"),
    (["serve", "--cron", "0 3 * * *", "--interval", "60"], "give exactly one of --cron EXPR or --interval SECONDS"),
    (["deploy", "--pool", "p", "--cron", "0 3 * * *", "--interval", "60"], "give exactly one of --cron EXPR or --interval SECONDS"),
    (["serve", "--interval", "0"], "--interval 0: must be a positive number of seconds"),
    (["serve", "--cron", "0 3 * * *", "--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus': not an IANA time zone"),
    (["serve", "--cron", "0 3 * *"], "--cron '0 3 * *': not a valid cron expression; expected 5 fields, minute hour "
                                     "day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 every day)"),
])
def test_a_bad_schedule_is_refused_before_any_server_starts(project, tmp_path, args, message):
    command, *options = args
    r = hataori(project, command, str(project / "pipe.toml"), *options, env=environment(tmp_path))
    assert r.returncode == 2 and f"error: {message}" in r.stderr, r.stderr
    assert not list(tmp_path.glob(".prefect/server-*.log"))  # no server was started


def test_serve_reports_config_errors_first(project, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((project / "pipe.toml").read_text().replace("vocab_size = 280", "vocab_sise = 280"))
    r = hataori(project, "serve", str(bad), "--interval", "5", env=environment(tmp_path))
    assert r.returncode == 2 and "tokenizer.vocab_sise: Extra inputs are not permitted (bad.toml line" in r.stderr
    assert not list(tmp_path.glob(".prefect/server-*.log"))


def test_serve_names_an_unreachable_prefect_api_url(project, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    r = hataori(project, "serve", str(project / "pipe.toml"), "--interval", "5",
                env=environment(tmp_path, PREFECT_API_URL=url))
    assert r.returncode == 2, r.stderr
    assert f"error: the Prefect server at PREFECT_API_URL={url} is not reachable" in r.stderr
    assert not list(tmp_path.glob(".prefect/server-*.log"))


def test_cron_rules_a_port_held_by_something_else_and_deploy_without_a_server(project, tmp_path):
    """pipeline.serve's checks, in one Python process (Prefect and torch load once)."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # 501 to all
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    script = f"""
import json
from pipeline.serve import ServeError, connect, deploy, make_schedule
out = {{}}
for cron in ["0 3 * * *", "*/15 9-17 * * mon-fri", "@daily", "61 * * * *", "0 3 * *", "H 3 * * *", "not cron"]:
    try:
        out[cron] = make_schedule(cron, None, "Asia/Tokyo").cron
    except ServeError as e:
        out[cron] = str(e)
for name, call in [("port", lambda: connect({httpd.server_address[1]}, echo=print)),
                   ("deploy", lambda: deploy({str(project / 'pipe.toml')!r}, [], pool="p"))]:
    try:
        call()
    except ServeError as e:
        out[name] = str(e)
print(json.dumps(out))
"""
    try:
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment(tmp_path), timeout=120)
    finally:
        httpd.shutdown()
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout.splitlines()[-1])
    for good in ("0 3 * * *", "*/15 9-17 * * mon-fri", "@daily"):  # croniter's syntax, Prefect's rules
        assert out[good] == good
    for bad in ("61 * * * *", "0 3 * *", "H 3 * * *", "not cron"):
        assert out[bad].startswith(f"--cron {bad!r}: not a valid cron expression"), out
    assert out["port"] == (f"port {httpd.server_address[1]} on 127.0.0.1 is in use by something that is not a "
                           "Prefect server; choose another with --port")
    assert out["deploy"].startswith("hataori deploy needs a Prefect server that outlives it: set PREFECT_API_URL")
    assert not list(tmp_path.glob(".prefect/server-*.log"))


# ------------------------------------------------------------------------------- real servers


def artifacts(api: str, key: str) -> list[dict]:
    import httpx

    r = httpx.post(f"{api}/artifacts/filter", json={"artifacts": {"key": {"any_": [key]}}}, timeout=10)
    r.raise_for_status()
    return r.json()


def assert_training_is_visible(api: str, flow_run_id: str) -> None:
    """What a user sees of the run in the UI: training progress lines in its log, a progress
    artifact at 100%, a table of the metrics, and the report under keys that name the config."""
    import httpx

    logs = httpx.post(f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200}, timeout=10).json()
    messages = [entry["message"] for entry in logs]
    assert any(m.startswith("pretrain step 2/2 (100%) | loss ") for m in messages), messages
    assert any(m.startswith("pretrain eval at step 2: val_loss ") for m in messages), messages
    progress = artifacts(api, "hataori-serve-test-pretrain-progress")
    assert progress and progress[-1]["type"] == "progress" and float(progress[-1]["data"]) == 100.0
    table = artifacts(api, "hataori-serve-test-pretrain-metrics")
    assert table and table[-1]["type"] == "table" and '"step"' in str(table[-1]["data"])
    report = artifacts(api, "hataori-serve-test-report")
    assert report and report[-1]["type"] == "markdown" and "# hataori run report: serve-test" in report[-1]["data"]


@pytest.mark.slow
def test_serve_runs_the_flow_on_its_schedule_and_stops_its_server(project):
    """`hataori serve --interval 5` starts a Prefect server, the scheduler creates runs, the served
    runner completes one; SIGTERM (what systemd sends) stops serve, the runner and the server."""
    import httpx
    import psutil

    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = environment(project, PREFECT_RUNNER_POLL_FREQUENCY="2")  # poll every 2 s, not 10
    log = project / f"serve-{port}.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "serve", str(project / "pipe.toml"),
                                 "--interval", "5", "--port", str(port), "--name", "every-5s"],
                                stdout=out, stderr=subprocess.STDOUT, env=env, cwd=project, start_new_session=True)
    try:
        deadline, done = time.monotonic() + RUN_TIMEOUT_S, []
        while not done and time.monotonic() < deadline and proc.poll() is None:
            try:
                done = flow_runs(api, "every-5s", state={"type": {"any_": ["COMPLETED"]}})
            except httpx.HTTPError:
                pass  # the server is still starting
            time.sleep(1)
        output = log.read_text(errors="replace")
        assert done, f"no completed run within {RUN_TIMEOUT_S} s (serve exit status {proc.poll()}):\n{output[-4000:]}"
        run = done[0]
        assert run["auto_scheduled"] and run["parameters"]["config_path"] == str(project / "pipe.toml")
        deployment = httpx.get(f"{api}/deployments/name/hataori/every-5s", timeout=10).json()
        assert run["deployment_id"] == deployment["id"] and deployment["schedules"][0]["schedule"]["interval"] == 5.0
        assert f"UI: http://127.0.0.1:{port}/deployments" in output
        # The UI of a server on another port than 4200 calls that port; "run it now" names the server.
        assert httpx.get(f"http://127.0.0.1:{port}/ui-settings", timeout=10).json()["api_url"] == api
        assert f"run it now: PREFECT_API_URL={api} prefect deployment run 'hataori/every-5s'" in output
        assert run["name"].startswith("serve-test ") and "serve-test" in run["tags"]
        assert (project / ".prefect" / f"server-{port}.log").is_file()

        children = psutil.Process(proc.pid).children(recursive=True)
        server = [c for c in children if "server" in cmdline(c) and str(port) in cmdline(c)]
        assert len(server) == 1, [cmdline(c) for c in children]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text(errors="replace")
    assert "All deployments have been paused!" in output, output[-3000:]
    assert f"stopping the Prefect server on 127.0.0.1:{port}" in output, output[-3000:]
    assert gone(server[0].pid)  # serve waits for its server to exit
    deadline = time.monotonic() + 15  # multiprocessing's resource tracker leaves a moment after its parent
    while not all(gone(c.pid) for c in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert all(gone(c.pid) for c in children), [(c.pid, cmdline(c)) for c in children if not gone(c.pid)]
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nobody listens on the port any more


@pytest.mark.slow
def test_a_shared_server_records_hataori_run_and_a_work_pool_worker_runs_a_deployment(project):
    """Scale-out on a shared server (PREFECT_API_URL): `hataori run` reports its flow run there
    instead of to an ephemeral server; `hataori deploy --pool` registers the flow with a process
    work pool, and a real `prefect worker start --pool ... --run-once` completes a run of it."""
    import httpx

    from pipeline.serve import LocalServer

    server = LocalServer(free_port(), home=project / ".prefect")
    server.start(timeout=180)
    try:
        env = environment(project, PREFECT_API_URL=server.api_url)
        r = hataori(project, "run", str(project / "pipe.toml"), "--no-progress", "--force", "pretrain", env=env,
                    timeout=RUN_TIMEOUT_S)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs = [run for run in httpx.post(f"{server.api_url}/flow_runs/filter", json={}, timeout=10).json()
                if run["deployment_id"] is None]  # (the served runs of the test above share this database)
        assert [run["state_type"] for run in runs] == ["COMPLETED"]
        assert f"View at {server.ui_url}/runs/flow-run/{runs[0]['id']}" in r.stdout + r.stderr
        assert runs[0]["name"].startswith("serve-test 20") and set(runs[0]["tags"]) >= {"hataori", "serve-test"}
        assert_training_is_visible(server.api_url, runs[0]["id"])
        reports = artifacts(server.api_url, "hataori-serve-test-report")
        cached = hataori(project, "run", str(project / "pipe.toml"), "--no-progress", env=env, timeout=RUN_TIMEOUT_S)
        assert cached.returncode == 0 and "built" not in cached.stdout, cached.stdout
        assert len(artifacts(server.api_url, "hataori-serve-test-report")) == len(reports)  # nothing new to publish

        r = hataori(project, "deploy", str(project / "pipe.toml"), "--pool", "test-pool", "--name", "via-pool",
                    "--workdir", str(project), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "created the process work pool 'test-pool'" in r.stdout and "prefect worker start --pool test-pool" in r.stdout
        assert httpx.get(f"{server.api_url}/work_pools/test-pool", timeout=10).json()["type"] == "process"
        deployment = httpx.get(f"{server.api_url}/deployments/name/hataori/via-pool", timeout=10).json()
        assert deployment["work_pool_name"] == "test-pool" and deployment["job_variables"] == {"working_dir": str(project)}
        assert deployment["entrypoint"] == "pipeline.flows.pipeline_flow" and not deployment["schedules"]

        created = httpx.post(f"{server.api_url}/deployments/{deployment['id']}/create_flow_run", json={}, timeout=10)
        created.raise_for_status()
        worker = subprocess.run([sys.executable, "-m", "prefect", "worker", "start", "--pool", "test-pool", "--run-once"],
                                capture_output=True, text=True, env=env, cwd=project, timeout=RUN_TIMEOUT_S)
        assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]
        run = httpx.get(f"{server.api_url}/flow_runs/{created.json()['id']}", timeout=10).json()
        assert run["state_type"] == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
        assert run["work_pool_name"] == "test-pool"
    finally:
        server.stop()

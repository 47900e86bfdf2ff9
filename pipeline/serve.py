"""`hataori serve` and `hataori deploy`: the pipeline flow on a schedule, or on other machines.

Prefect's ephemeral server (what `hataori run` uses) lives only as long as one flow run, so it
cannot schedule anything. `serve` therefore talks to a real server: the one PREFECT_API_URL names
(environment or Prefect profile), checked with `/api/health` first; or, when none is configured, a
`prefect server start` child on 127.0.0.1 that it starts, waits for and stops again on exit
(Ctrl-C, SIGTERM, an error). Then it serves a deployment of the flow whose parameters are the
config path and the --set overrides, with a cron or interval schedule, and runs what comes due in
a subprocess, one run at a time.

`deploy` registers the same deployment with a `process` work pool on a configured server instead;
any `prefect worker start --pool NAME` on a machine with hataori installed runs it. Plain
functions; `pipeline.cli.run` holds the commands.
"""

from __future__ import annotations

import atexit
import datetime
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

DEFAULT_PORT = 4200
HOST = "127.0.0.1"
# A fresh PREFECT_HOME migrates its database on the first start (about 20 s on 2 idle cores).
STARTUP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
FLOW_NAME = "hataori"
# Runs of one pipeline share its artifact store (and its lock): a run that comes due while another
# is going waits its turn (Prefect shows it as Late) rather than starting beside it.
RUN_LIMIT = 1


class ServeError(RuntimeError):
    """Cannot serve: a bad schedule, an unreachable server, a port in use. The message says which."""


# ---------------------------------------------------------------------------------------- schedule


def check_schedule(cron: str | None, interval: float | None, timezone: str | None = None, required: bool = True) -> None:
    """The checks that need no Prefect: one of cron and interval (at most one unless `required`),
    a positive interval, an IANA time zone. Cron syntax is checked by `make_schedule`."""
    if (cron is not None and interval is not None) or (required and cron is None and interval is None):
        raise ServeError("give exactly one of --cron EXPR or --interval SECONDS")
    if interval is not None and not interval > 0:
        raise ServeError(f"--interval {interval:g}: must be a positive number of seconds")
    if timezone is not None:
        from zoneinfo import available_timezones

        if timezone not in available_timezones():
            raise ServeError(f"--timezone {timezone!r}: not an IANA time zone (e.g. UTC, Asia/Tokyo, America/New_York)")


def make_schedule(cron: str | None, interval: float | None, timezone: str | None = None):
    """A Prefect schedule from exactly one of `cron` and `interval` (seconds)."""
    check_schedule(cron, interval, timezone)
    import pipeline.flows  # noqa: F401  (the project-local PREFECT_HOME is set before Prefect loads its settings)
    from prefect.schedules import Cron, Interval

    if interval is not None:
        return Interval(datetime.timedelta(seconds=interval), timezone=timezone)
    try:
        return Cron(cron.strip(), timezone=timezone)
    except ValueError:
        raise ServeError(f"--cron {cron!r}: not a valid cron expression; expected 5 fields, minute hour "
                         "day-of-month month day-of-week, e.g. '0 3 * * *' (03:00 every day)") from None


def describe(cron: str | None, interval: float | None, timezone: str | None) -> str:
    if interval is not None:
        return f"every {interval:g} s"
    return f"on cron '{cron}' ({timezone or 'UTC'})"


# ------------------------------------------------------------------------------------------ server


def healthy(api_url: str, timeout: float = 5.0) -> str | None:
    """None when `{api_url}/health` answers true, else why not (one line)."""
    import httpx

    url = api_url.rstrip("/") + "/health"
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        return f"{url}: {type(e).__name__}: {e}" if str(e) else f"{url}: {type(e).__name__}"
    if r.status_code != 200:
        return f"{url}: HTTP {r.status_code}"
    try:
        ok = r.json() is True
    except ValueError:
        ok = False
    return None if ok else f"{url}: answered {r.text[:80]!r}, not a Prefect server's health check"


def configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment or the active Prefect profile, if any."""
    import pipeline.flows  # noqa: F401  (the project-local PREFECT_HOME, whose profile counts)
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def port_in_use(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex((host, port)) == 0


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.rstrip().splitlines()[-lines:]) or "(empty log)"


def _die_with_parent() -> Callable[[], None] | None:
    """preexec_fn for Linux: the child gets SIGTERM if this process dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalServer:
    """`prefect server start --host 127.0.0.1 --port PORT` as a child process, logging to
    `$PREFECT_HOME/server-PORT.log`. `start()` returns once `/api/health` answers; `stop()` ends
    it (SIGTERM to its process group, SIGKILL after STOP_TIMEOUT_S) and may be called any number
    of times; it also runs at exit. On Linux the child gets SIGTERM if this process dies."""

    def __init__(self, port: int = DEFAULT_PORT, home: Path | None = None):
        self.port = port
        self.home = Path(home or os.environ.get("PREFECT_HOME") or Path.cwd() / ".prefect")
        self.log_path = self.home / f"server-{port}.log"
        self.api_url = f"http://{HOST}:{port}/api"
        self.ui_url = f"http://{HOST}:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env["PREFECT_HOME"] = str(self.home)
        # The UI the server serves calls the API on the port it was given, not Prefect's default 4200.
        env["PREFECT_UI_API_URL"] = self.api_url
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(self.port)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True, preexec_fn=_die_with_parent())
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServeError(f"the Prefect server on port {self.port} exited with status {self.proc.returncode} "
                                 f"while starting; the last lines of {self.log_path}:\n{_log_tail(self.log_path)}")
            if healthy(self.api_url, timeout=2.0) is None:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServeError(f"the Prefect server on port {self.port} did not answer {self.api_url}/health within "
                                 f"{timeout:.0f} s; the last lines of {self.log_path}:\n{_log_tail(self.log_path)}")
            time.sleep(0.5)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own process group (start_new_session)
            proc.wait(timeout)
        except ProcessLookupError:
            proc.wait()
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def connect(port: int = DEFAULT_PORT, echo: Callable[[str], Any] = print,
            startup_timeout: float = STARTUP_TIMEOUT_S) -> tuple[str, str | None, LocalServer | None]:
    """(API URL, UI URL, the server child we started or None). A configured PREFECT_API_URL must
    answer its health check; otherwise a Prefect server already on 127.0.0.1:PORT is used, a free
    port gets a new one, and a port held by anything else is an error."""
    configured = configured_api_url()
    if configured:
        problem = healthy(configured)
        if problem is not None:
            raise ServeError(f"the Prefect server at PREFECT_API_URL={configured} is not reachable ({problem}); "
                             "start it, or unset PREFECT_API_URL (environment or Prefect profile) to let hataori serve start a local one")
        from prefect.settings import get_current_settings

        echo(f"using the Prefect server at {configured}")
        return configured, get_current_settings().ui_url, None
    local = f"http://{HOST}:{port}/api"
    if port_in_use(port):
        if healthy(local, timeout=3.0) is None:
            echo(f"using the Prefect server already running on {HOST}:{port}")
            return local, f"http://{HOST}:{port}", None
        raise ServeError(f"port {port} on {HOST} is in use by something that is not a Prefect server; "
                         "choose another with --port")
    server = LocalServer(port)
    echo(f"starting a Prefect server on {HOST}:{port} (log: {server.log_path}) ...")
    server.start(timeout=startup_timeout)
    return server.api_url, server.ui_url, server


# ------------------------------------------------------------------------------------------- serve


def command_line(config: Path, sets: list[str]) -> str:
    """What each run amounts to, for people (the deployment's description)."""
    return f"hataori run {Path(config).resolve()}" + "".join(f" --set {s}" for s in sets)


def flow_parameters(config: Path, sets: list[str]) -> dict[str, Any]:
    """What `hataori run CONFIG --set ...` passes to the flow; the config path made absolute."""
    return {"config_path": str(Path(config).resolve()), "sets": list(sets), "force": None, "progress": False}


def _exit_on_sigterm(signum, frame):  # while the server starts; the runner then takes over SIGTERM
    raise SystemExit(128 + signum)


def run_until_stopped(runner, server: LocalServer | None = None) -> None:
    """`runner.start()` until Ctrl-C or SIGTERM, or until `server` (our child) dies.

    SIGTERM (systemd's stop) cancels a run in progress (its state becomes Cancelled; a pretraining
    run resumes from its last checkpoint next time), then the runner pauses the schedule and
    returns. Prefect's own SIGTERM handler would instead `sys.exit` from inside the event loop,
    which skips the pause: the schedule stays active with nobody to run it, and the runs that pile
    up meanwhile all start at the next `serve`. A server child that exits is a ServeError (so
    that systemd's Restart=on-failure starts everything again)."""
    import asyncio

    died: list[str] = []

    async def main() -> None:
        loop, main_task = asyncio.get_running_loop(), asyncio.current_task()
        stopping: list[asyncio.Task] = []

        async def stop() -> None:
            try:
                await asyncio.wait_for(runner.astop(), STOP_TIMEOUT_S)  # cancel runs, end the polling loops
            except Exception:  # not started yet, or the server is gone: cancel the start itself
                main_task.cancel()

        def request_stop() -> None:
            if not stopping:
                stopping.append(loop.create_task(stop()))

        async def watch_server() -> None:
            while server is not None and server.proc is not None:
                if server.proc.poll() is not None:
                    died.append(f"the Prefect server on port {server.port} exited with status "
                                f"{server.proc.returncode}; the last lines of {server.log_path}:\n{_log_tail(server.log_path)}")
                    runner.pause_on_shutdown = False  # nothing to pause it on
                    main_task.cancel()
                    return
                await asyncio.sleep(2.0)

        runner.handle_sigterm = lambda *_: loop.call_soon_threadsafe(request_stop)  # installed by runner.start()
        watcher = loop.create_task(watch_server())
        try:
            await runner.start()
        finally:
            watcher.cancel()

    try:
        asyncio.run(main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    except Exception:
        if not died:
            raise
    if died:
        raise ServeError(died[0])


def serve(config: Path, sets: list[str], *, cron: str | None = None, interval: float | None = None,
          timezone: str | None = None, port: int = DEFAULT_PORT, name: str | None = None,
          echo: Callable[[str], Any] = print, startup_timeout: float = STARTUP_TIMEOUT_S) -> None:
    """Serve the pipeline flow for CONFIG on a schedule until interrupted. The config is validated
    first (ConfigError) and read again by every run, so edits apply from the next run on."""
    from pipeline.config import load_config

    cfg = load_config(config, sets)
    from pipeline.flows import pipeline_flow  # sets up PREFECT_HOME before Prefect reads its settings
    from prefect.deployments.runner import EntrypointType
    from prefect.runner import Runner
    from prefect.settings import PREFECT_API_URL, temporary_settings

    schedule = make_schedule(cron, interval, timezone)
    deployment = name or cfg.name
    command, parameters = command_line(config, sets), flow_parameters(config, sets)
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    server = None
    try:
        api_url, ui_url, server = connect(port, echo, startup_timeout)
        os.environ["PREFECT_API_URL"] = api_url  # for the subprocesses that run the flow
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            runner = Runner(name=f"hataori-serve-{deployment}", pause_on_shutdown=True, limit=RUN_LIMIT)
            runner.add_flow(pipeline_flow, name=deployment, schedules=[schedule], parameters=parameters,
                            description=command, entrypoint_type=EntrypointType.MODULE_PATH, tags=["hataori", cfg.name])
            echo(f"serving {FLOW_NAME}/{deployment} {describe(cron, interval, timezone)}: {command}")
            if ui_url:
                echo(f"UI: {ui_url}/deployments")
            # A command that works pasted into any other shell: it names the server it talks to.
            echo(f"run it now: PREFECT_API_URL={api_url} prefect deployment run '{FLOW_NAME}/{deployment}'")
            echo("stop with Ctrl-C or SIGTERM")
            run_until_stopped(runner, server)
    finally:
        if server is not None:
            echo(f"stopping the Prefect server on {HOST}:{server.port}")
            server.stop()
        signal.signal(signal.SIGTERM, previous)


# ------------------------------------------------------------------------------------------ deploy


def deploy(config: Path, sets: list[str], *, pool: str, cron: str | None = None, interval: float | None = None,
           timezone: str | None = None, name: str | None = None, workdir: Path | None = None,
           echo: Callable[[str], Any] = print) -> str:
    """Register the pipeline flow for CONFIG with the `process` work pool POOL (created if missing)
    on the server PREFECT_API_URL names; returns the deployment id. A worker runs each flow run
    with `python -m prefect.engine` in WORKDIR (default: this directory; relative paths in the
    config resolve against it, as for `hataori run`), importing `pipeline.flows`, so a worker needs
    hataori installed and CONFIG (and WORKDIR) at the same paths. No schedule: runs on demand."""
    from pipeline.config import load_config

    cfg = load_config(config, sets)
    check_schedule(cron, interval, timezone, required=False)
    from pipeline.flows import pipeline_flow  # sets up PREFECT_HOME before Prefect reads its settings
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    schedule = None if cron is None and interval is None else make_schedule(cron, interval, timezone)
    api_url = configured_api_url()
    if not api_url:
        raise ServeError("hataori deploy needs a Prefect server that outlives it: set PREFECT_API_URL "
                         "(e.g. http://127.0.0.1:4200/api, the server that `hataori serve` or `prefect server start` runs)")
    problem = healthy(api_url)
    if problem is not None:
        raise ServeError(f"the Prefect server at PREFECT_API_URL={api_url} is not reachable ({problem})")
    workdir = Path(workdir or Path.cwd()).resolve()
    if not workdir.is_dir():
        raise ServeError(f"--workdir {workdir}: not a directory")
    with get_client(sync_client=True) as client:
        try:
            found = client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process",
                                                   base_job_template=ProcessWorker.get_default_base_job_template()))
            echo(f"created the process work pool {pool!r}")
        else:
            if found.type != "process":
                raise ServeError(f"work pool {pool!r} is of type {found.type!r}; hataori deploy needs a 'process' pool "
                                 "(a worker that runs flows as local processes); choose another --pool name")
    deployment = name or cfg.name
    runner_deployment = pipeline_flow.to_deployment(
        name=deployment, work_pool_name=pool, schedules=[schedule] if schedule else None,
        parameters=flow_parameters(config, sets), description=command_line(config, sets), tags=["hataori", cfg.name],
        job_variables={"working_dir": str(workdir)}, entrypoint_type=EntrypointType.MODULE_PATH)
    deployment_id = runner_deployment.apply()
    when = describe(cron, interval, timezone) if schedule else "on demand"
    echo(f"deployed {FLOW_NAME}/{deployment} to work pool {pool!r} ({when}) on {api_url}; runs in {workdir}")
    echo(f"start a worker: prefect worker start --pool {pool}")
    echo(f"run it now:     PREFECT_API_URL={api_url} prefect deployment run '{FLOW_NAME}/{deployment}'")
    return str(deployment_id)

"""The report as the Prefect UI shows it, in a real browser: a local `prefect server` (with its UI),
a flow that publishes the report the way the pipeline does, and headless Chromium on the
artifact's page, where the loss plot must be an image that loaded (not a broken link), and the
stage figures a table. A screenshot is left in the test's directory for people to look at."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from browser import start_browser

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from start_browser(tmp_path_factory)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PUBLISH = """
import json, sys
from pathlib import Path
import pipeline.flows  # noqa: F401 (Prefect settings first)
from prefect import flow
from pipeline import flow_ui
from pipeline.stages.report import stats_table
from model.loop import write_loss_png

root = Path(sys.argv[1])
(root / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "loss": 5 - i / 40, **({"val_loss": 5.1 - i / 40} if i % 20 == 19 else {})}) + "\\n" for i in range(100)))
write_loss_png(root / "metrics.jsonl", root / "loss.png")
lines = ["# hataori run report: browser check", "", "## pretrain", ""] + stats_table({"steps": 100, "val_loss": 2.6251, "tokens_per_s": 123456.7})
lines += ["## Loss curve", "", "![loss](loss.png)", ""]
(root / "report.md").write_text("\\n".join(lines))

@flow(name="report-check")
def publish():
    flow_ui.publish_report("browser check", root / "report.md")

publish()
"""


def test_the_report_artifact_shows_its_plot_and_tables(tmp_path, browser):
    from pipeline.serve import LocalServer

    port = free_port()
    server = LocalServer(port, home=tmp_path / ".prefect")
    server.start()
    try:
        env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_HOME": str(tmp_path / ".prefect")}
        r = subprocess.run([sys.executable, "-c", PUBLISH, str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        # The UI opens an artifact from its key's page (a direct link to the artifact renders empty
        # when it is the first page loaded, in Prefect 3.8's UI).
        page = browser(f"{server.ui_url}/artifacts/key/hataori-browser-check-report")
        page.call("Emulation.setDeviceMetricsOverride", width=1200, height=1400, deviceScaleFactor=1, mobile=False)
        page.wait("[...document.querySelectorAll('a')].some(a => a.href.includes('/artifacts/artifact/'))", timeout=120)
        page.js("[...document.querySelectorAll('a')].find(a => a.href.includes('/artifacts/artifact/')).click()")
        page.wait("document.querySelectorAll('img').length > 0 && [...document.querySelectorAll('img')]"
                  ".some(i => i.src.startsWith('data:image/png') && i.complete && i.naturalWidth > 100)", timeout=120)
        cells = page.js("[...document.querySelectorAll('td')].map(td => td.textContent.trim())")
        assert "123,457" in cells and "2.625" in cells, cells
        shot = page.call("Page.captureScreenshot", format="png")["data"]
        (tmp_path / "report-in-prefect-ui.png").write_bytes(base64.b64decode(shot))
        print(f"screenshot: {tmp_path / 'report-in-prefect-ui.png'}")
    finally:
        server.stop()

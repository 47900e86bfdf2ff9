"""A server child that outlives a killed parent is a leak an unattended machine never recovers:
`stop_with_parent(pid)` starts a tiny watchdog that terminates `pid` once this process is gone,
however it ended (SIGKILL included). It waits on a pipe only this process holds: the pipe's end
closes when the process exits, and the watchdog wakes."""

from __future__ import annotations

import subprocess
import sys

_WATCHDOG = r"""
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the server itself
pid, marker = int(sys.argv[1]), sys.argv[2].encode()
sys.stdin.buffer.read()  # returns when the parent is gone
def ours():
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return marker in f.read()
    except OSError:
        return False
if ours():
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        time.sleep(0.1)
        if not ours():
            sys.exit(0)
    os.kill(pid, signal.SIGKILL)
"""


def stop_with_parent(pid: int, marker: str) -> subprocess.Popen | None:
    """Terminates process `pid` (if its command line still contains `marker`, so a reused pid is
    left alone) when this process exits. Linux only (it reads /proc); elsewhere returns None."""
    if not sys.platform.startswith("linux"):
        return None
    return subprocess.Popen([sys.executable, "-c", _WATCHDOG, str(pid), marker], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

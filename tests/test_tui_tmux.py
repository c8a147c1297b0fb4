"""End to end in a real terminal: ``msa tui`` under tmux, press r, see results, quit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _server(test: str) -> list[str]:
    """A private tmux server socket per test: other tmux users on the machine cannot
    disturb it, nor can the previous test's server, still shutting down after its
    kill-server when the next test started a session on the same socket (seen once in
    CI: `new-session` returned 1)."""
    return ["tmux", "-L", f"msa-test-{os.getpid()}-{test}"]


def _capture(tmux: list[str], name: str) -> str:
    return subprocess.run([*tmux, "capture-pane", "-p", "-t", name], capture_output=True,
                          text=True).stdout


def _wait_for(tmux: list[str], name: str, predicate, timeout: float = 60.0) -> str:
    deadline, screen = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        screen = _capture(tmux, name)
        if predicate(screen):
            return screen
        time.sleep(0.25)
    raise AssertionError(f"timed out; screen was:\n{screen}")


def test_tmux_run_and_quit(tmp_path):
    TMUX = _server("tui")
    name = f"msa-tui-{os.getpid()}"
    rc_file = tmp_path / "rc"
    msa = Path(sys.executable).with_name("msa")
    cmd = f"{msa if msa.exists() else 'msa'} tui --session-dir {tmp_path / 'sessions'}"
    env = {"TERM": "xterm-256color", "XDG_DATA_HOME": str(tmp_path / "data"),
           "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    exports = " ".join(f"{k}={v}" for k, v in env.items())
    shell = f"cd {tmp_path} && env {exports} {cmd}; echo $? > {rc_file}; sleep 30"
    subprocess.run([*TMUX, "new-session", "-d", "-s", name, "-x", "120", "-y", "40", shell],
                   check=True)
    try:
        _wait_for(TMUX, name, lambda s: "Run" in s and "Network & scaling" in s)
        subprocess.run([*TMUX, "send-keys", "-t", name, "r"], check=True)
        screen = _wait_for(TMUX, name, lambda s: "train disc." in s and "one-loop" in s)
        assert "Traceback" not in screen
        subprocess.run([*TMUX, "send-keys", "-t", name, "C-q"], check=True)
        deadline = time.monotonic() + 20
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert rc_file.read_text().strip() == "0"
        assert "Traceback" not in _capture(TMUX, name)
    finally:
        subprocess.run([*TMUX, "kill-server"], capture_output=True)


def test_tmux_solve_shows_live_status_then_the_table(tmp_path):
    """``msa solve`` in a terminal: a live status line (theory, stage, χ, iteration,
    residual) while a non-linear saddle solves, then the results table; none of it when
    stderr is not a terminal (the other CLI tests)."""
    TMUX = _server("solve")
    name = f"msa-solve-{os.getpid()}"
    cfg = tmp_path / "erf.toml"
    cfg.write_text('[data]\ntask = "hermite"\nd = 6\nP = 8\nP_test = 10\n\n[network]\n'
                   'activation = "erf"\nchi = 1.0\n')
    rc_file = tmp_path / "rc"
    msa = Path(sys.executable).with_name("msa")
    shell = (f"{msa if msa.exists() else 'msa'} solve {cfg} --theory one-loop; "
             f"echo $? > {rc_file}; sleep 30")
    subprocess.run([*TMUX, "new-session", "-d", "-s", name, "-x", "120", "-y", "30",
                    f"env TERM=xterm-256color {shell}"], check=True)
    try:
        live = _wait_for(TMUX, name, lambda s: "one-loop: " in s and "iteration" in s)
        assert "residual" in live and "χ = 1" in live
        deadline = time.monotonic() + 120
        while not rc_file.exists() and time.monotonic() < deadline:
            time.sleep(0.25)
        assert rc_file.read_text().strip() == "0"
        screen = _capture(TMUX, name)
        assert "theories" in screen and "iteration" not in screen   # the status is gone
        assert "Traceback" not in screen
    finally:
        subprocess.run([*TMUX, "kill-server"], capture_output=True)

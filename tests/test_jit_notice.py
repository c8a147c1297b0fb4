"""The one-line notice while numba compiles the engine's kernels (msa_engine/jit.py): once
per process, only for msa_engine's kernels, only on a cache miss; the CLI writes it to
stderr, the TUI to its log and a notification."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
import threading

import pytest

from msa_engine import cli, jit

from .tui_support import isolated, make_app, run_async  # noqa: F401


def _kernel(module: str):
    """A fresh (uncompiled) njit function that numba sees as defined in ``module``."""
    def f(x):
        return x + 1.0
    f.__module__ = module
    return jit.njit(cache=False)(f)


@pytest.fixture
def fresh(monkeypatch):
    """No notice given yet in this process; the reporter restored afterwards."""
    monkeypatch.setattr(jit, "_told", False)
    previous = jit.set_reporter(None)
    yield
    jit.set_reporter(previous)


def test_an_engine_kernel_compile_is_reported_once(fresh):
    got = []
    jit.set_reporter(got.append)
    assert _kernel("someone_else")(1.0) == 2.0          # not ours: nothing said
    assert got == []
    assert _kernel("msa_engine.fake_kernels")(1.0) == 2.0
    assert got == [jit.MESSAGE]
    assert _kernel("msa_engine.other_fake")(1.0) == 2.0  # once per process
    assert got == [jit.MESSAGE]


def test_no_reporter_no_notice_and_a_failing_reporter_breaks_nothing(fresh):
    assert _kernel("msa_engine.fake_kernels")(1.0) == 2.0   # nobody to tell: silent
    assert jit._told is False                                # ... and still untold

    def broken(_text):
        raise RuntimeError("a reporter that fails")
    jit.set_reporter(broken)
    assert _kernel("msa_engine.fake_kernels")(2.0) == 3.0


def test_a_cache_hit_says_nothing(tmp_path):
    """numba raises its compile event on a cache miss only: the second process, which
    loads the kernel from the disk cache, prints no notice."""
    (tmp_path / "msa_engine_fake_cached.py").write_text(textwrap.dedent("""
        from msa_engine.jit import njit

        @njit(cache=True)
        def plus_one(x):
            return x + 1.0
    """))
    script = textwrap.dedent("""
        import sys
        from msa_engine import jit
        jit.set_reporter(lambda text: print("NOTICE:", text))
        import msa_engine_fake_cached as m
        assert m.plus_one(1.0) == 2.0
    """)
    env = {"PYTHONPATH": str(tmp_path), "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PATH": "/usr/bin:/bin"}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=300) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert runs[0].stdout == f"NOTICE: {jit.MESSAGE}\n"
    assert runs[1].stdout == ""


def test_the_cli_writes_the_notice_to_stderr_and_restores_the_reporter(fresh, monkeypatch,
                                                                       capsys):
    ran = []

    def command(_args):
        ran.append(_kernel("msa_engine.fake_kernels")(1.0))
        return 0

    class Parser:
        def parse_args(self, argv):
            return argparse.Namespace(func=command)

    monkeypatch.setattr(cli, "build_parser", Parser)
    assert cli.main([]) == 0 and ran == [2.0]
    assert capsys.readouterr().err == f"msa: note: {jit.MESSAGE}\n"
    assert jit._reporter is None


@run_async
async def test_the_tui_shows_the_notice_from_a_worker_thread(isolated, fresh):
    app = make_app(isolated)
    async with app.run_test(size=(100, 30)) as pilot:
        reporter = jit._reporter
        assert reporter is not None
        worker = threading.Thread(target=lambda: _kernel("msa_engine.fake_kernels")(1.0))
        worker.start()
        worker.join()
        await pilot.pause()
        await pilot.press("2")        # the Log tab: a hidden RichLog defers its lines
        await pilot.pause()
        log = " ".join(" ".join(str(line.text) for line in app.query_one("#log").lines).split())
        assert jit.MESSAGE in log
        assert any(jit.MESSAGE in str(n.message) for n in app._notifications)
    assert jit._reporter is None          # the app gave the previous reporter back

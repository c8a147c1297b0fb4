"""The one-line notice while numba compiles the engine's kernels (msa_engine/jit.py): once
per process, only for msa_engine's kernels, only on a cache miss; the CLI writes it to
stderr, the TUI to its log and a notification."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
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
    """No notice given yet in this process, and no reporter (both restored afterwards)."""
    monkeypatch.setattr(jit, "_told", False)
    monkeypatch.setattr(jit, "_reporters", [])


def test_an_engine_kernel_compile_is_reported_once(fresh):
    got = []
    jit.push_reporter(got.append)
    assert _kernel("someone_else")(1.0) == 2.0          # not ours: nothing said
    assert _kernel("msa_engine_lookalike")(1.0) == 2.0
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
    jit.push_reporter(broken)
    assert _kernel("msa_engine.fake_kernels")(2.0) == 3.0


def test_a_cache_hit_says_nothing(tmp_path):
    """numba raises its compile event on a cache miss only: a real kernel, compiled in a
    first process with an empty cache (the notice), is loaded from the disk cache by a
    second one (no notice)."""
    script = textwrap.dedent("""
        import numpy as np
        from msa_engine import jit
        jit.push_reporter(lambda text: print("NOTICE:", text))
        from msa_engine import special
        h = np.linspace(-3.0, 3.0, 8)
        phi, g, k = np.empty(8), np.empty(8), np.empty(8, dtype=np.int64)
        special.erf_gauss_row(h, phi, g, k)
        st = special.erf_gauss_row.stats
        print("hits", sum(st.cache_hits.values()), "misses", sum(st.cache_misses.values()))
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=600) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert runs[0].stdout == f"NOTICE: {jit.MESSAGE}\nhits 0 misses 1\n"
    assert runs[1].stdout == "hits 1 misses 0\n"


def test_pool_workers_report_only_under_the_command_line(fresh):
    """A local pool's workers compile for themselves: under the CLI's reporter they write
    the notice to the shared stderr; under any other (the TUI's) they must not write."""
    from msa_engine.executors import LocalPoolExecutor, _pool_worker_init
    for reporter, forward in ((jit.stderr_note, True), (lambda text: None, False),
                              (None, False)):
        token = jit.push_reporter(reporter) if reporter else None
        pool = LocalPoolExecutor(1)._new_pool()
        try:
            assert pool._initializer is _pool_worker_init     # calls jit.pool_worker_init
            assert pool._initargs == (forward, None)
        finally:
            pool.shutdown()
            jit.remove_reporter(token)
    assert jit.current_reporter() is None
    jit.pool_worker_init(False)
    assert jit.current_reporter() is None
    jit.pool_worker_init(True)
    assert jit.current_reporter() is jit.stderr_note


def test_reporters_overlapping_in_any_order(fresh):
    """The latest reporter still pushed gets the notice, whatever order the others were
    taken back in (two TUI apps in one process, closed out of order)."""
    a, b = (lambda text: None), (lambda text: None)
    ta, tb = jit.push_reporter(a), jit.push_reporter(b)
    assert jit.current_reporter() is b
    jit.remove_reporter(ta)                 # the first one closes first
    assert jit.current_reporter() is b
    jit.remove_reporter(tb)
    assert jit.current_reporter() is None
    jit.remove_reporter(tb)                 # twice, or a token never pushed: harmless
    jit.remove_reporter(object())


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
    assert jit.current_reporter() is None


@run_async
async def test_the_tui_shows_the_notice_from_a_worker_thread(isolated, fresh):
    app = make_app(isolated)
    async with app.run_test(size=(100, 30)) as pilot:
        assert jit.current_reporter() is not None
        worker = threading.Thread(target=lambda: _kernel("msa_engine.fake_kernels")(1.0))
        worker.start()
        worker.join()
        await pilot.pause()
        await pilot.press("2")        # the Log tab: a hidden RichLog defers its lines
        await pilot.pause()
        log = " ".join(" ".join(str(line.text) for line in app.query_one("#log").lines).split())
        assert jit.MESSAGE in log
        assert any(jit.MESSAGE in str(n.message) for n in app._notifications)
    assert jit.current_reporter() is None          # the app took its reporter back


def test_a_kernel_recompiles_when_a_function_it_calls_changes_in_another_file(tmp_path):
    """numba keys a cached kernel on its own file only. A copy of the engine: a kernel of
    kernels_numba (``_log_uniform``) calls ``uniform`` of rng_numba; after rng_numba alone
    changes, the kernel must run the new code (numba's own key gave the cached old one),
    and an unchanged engine must still load its kernels from the cache."""
    import shutil
    from pathlib import Path

    import msa_engine
    src = Path(msa_engine.__file__).resolve().parent
    shutil.copytree(src, tmp_path / "msa_engine",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = textwrap.dedent("""
        import numpy as np
        from msa_engine.sampling import kernels_numba as kn, rng_numba as rn
        assert kn.__file__.startswith(%r)
        s = rn.seed_states(np.random.SeedSequence(1), 1)[0]
        v = kn._log_uniform(s)
        st = kn._log_uniform.stats
        print(repr(v), "misses", sum(st.cache_misses.values()))
    """ % str(tmp_path))
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(tmp_path)}

    def run():
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           env=env, timeout=600, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        value, _, misses = r.stdout.split()
        return float(value), int(misses)

    first = run()
    assert first[1] == 1 and first[0] < 0.0
    assert run() == (first[0], 0)                       # unchanged: a cache hit
    rng = tmp_path / "msa_engine" / "sampling" / "rng_numba.py"
    text = rng.read_text()
    old = "        return next_double(s[4 * LANES:4 * LANES + 4])\n"
    assert text.count(old) == 1
    rng.write_text(text.replace(old, "        return 0.25\n"))
    assert run() == (float(np.log(0.25)), 1)            # the change is compiled in

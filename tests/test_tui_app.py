"""Pilot tests of the workbench's flows (``App.run_test``)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import DataTable, Input, Static, TabbedContent

from msa_engine.sessions import save_session
from msa_tui import model
from msa_tui.app import MSAApp

from .tui_support import isolated, make_app, run_async, set_field, settle, tick_only  # noqa: F401


def errors_of(app):
    return [n for n in app._notifications if n.severity == "error"]


@run_async
async def test_set_parameters_and_run_theory(isolated):
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        await set_field(pilot, app, "f-network-N", "50")
        await set_field(pilot, app, "f-network-chi", "γ=1.5")
        tick_only(app, "nngp", "one-loop")
        await pilot.pause()
        gamma = str(app.query_one("#gamma-view", Static).render())
        assert "γ = 1.500" in gamma
        await pilot.press("r")
        await settle(pilot, app)
        names = [e["name"] for e in app.session.entries]
        assert names == ["nngp", "one-loop"]
        assert all(e["N"] == 50 and abs(e["chi"] - 50 ** 0.5) < 1e-9 for e in app.session.entries)
        assert app.query_one("#results", DataTable).row_count == 2
        assert app.query_one(TabbedContent).active == "tab-results"
        assert not errors_of(app)


@run_async
async def test_invalid_value_refused(isolated):
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await set_field(pilot, app, "f-network-kappa", "-0.1")
        err = app.query_one("#err-network-kappa", Static)
        assert err.display and "kappa must be > 0" in str(err.render())
        assert app.query_one("#f-network-kappa").has_class("bad")
        await pilot.press("escape")  # nothing to cancel: harmless
        app.set_focus(None)
        await pilot.press("r")
        await settle(pilot, app)
        assert app.session.entries == []
        assert not app.jobs
        assert any("cannot run" in (n.title or "") for n in errors_of(app))
        assert app.focused is app.query_one("#f-network-kappa", Input)
        # a data field, validated by make_data, and a simulation field
        await set_field(pilot, app, "f-data-P", "0")
        assert "data.P must be >= 1" in str(app.query_one("#err-data-P", Static).render())
        # steps count after the burn-in: a burn-in longer than them is a valid run (it
        # was refused); too few draws are not
        await set_field(pilot, app, "f-simulation-burn_in", "5000")
        assert not any(w.display for w in app.query("#err-simulation-burn_in"))
        await set_field(pilot, app, "f-simulation-thin", "10")
        await set_field(pilot, app, "f-simulation-steps", "39")
        assert "steps after burn-in must be >= 4 × thin = 40" in str(
            app.query_one("#err-simulation-steps", Static).render())
        await set_field(pilot, app, "f-simulation-steps", "40")
        assert not any(w.display for w in app.query("#err-simulation-steps"))
        # fixing the value clears the message
        await set_field(pilot, app, "f-network-kappa", "0.1")
        assert not app.query_one("#err-network-kappa", Static).display


async def start_long_simulation(pilot, app, steps="100000", thin="50"):
    """Start a simulation far too long to finish and wait for its first chunk."""
    await set_field(pilot, app, "f-simulation-steps", steps)
    await set_field(pilot, app, "f-simulation-thin", thin)
    app.set_focus(None)
    await pilot.press("s")
    deadline = time.monotonic() + 60
    while not app.live and time.monotonic() < deadline:
        await pilot.pause(0.05)
    assert app.live, "no sampler chunk arrived"
    assert "simulation" in app.jobs


@run_async
async def test_simulate_and_cancel(isolated):
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await start_long_simulation(pilot, app)
        await pilot.press("c")
        await settle(pilot, app)
        assert not app.jobs
        assert app.session.entries == []
        assert any("cancelled" in str(n.message) for n in app._notifications)
        assert "simulation cancelled" in str(app.query_one("#run-status", Static).render())


async def heartbeat(pilot, app, seconds: float) -> tuple[int, float]:
    """The UI heartbeat's ticks (``app._tick``, every 0.1 s) over ``seconds``, and the
    longest time between two of them, sampled every 20 ms from the event loop."""
    start = last_seen = app.ticks
    t0 = t_last = time.monotonic()
    gap = 0.0
    while time.monotonic() - t0 < seconds:
        await pilot.pause(0.02)
        now = time.monotonic()
        if app.ticks != last_seen:
            last_seen, t_last = app.ticks, now
        gap = max(gap, now - t_last)
    return app.ticks - start, gap


@run_async
async def test_sigterm_stops_the_jobs_and_quits(isolated):
    """A `kill` (SIGTERM) while a simulation ran: the command line's handler raised a
    KeyboardInterrupt that left the app drawn and the process alive.  Now the app stops
    its jobs and quits, as ctrl+q would without asking."""
    import os
    import signal
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await start_long_simulation(pilot, app)
        # the event loop handles it (else this test would kill the test run: checked first)
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 30
        while app.is_running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not app.is_running and app._quitting
    assert app.session.entries == []          # the cancelled run left nothing half-done


@run_async
async def test_timer_ticks_during_simulation(isolated):
    """numba kernels release the GIL: the UI's heartbeat keeps ticking while a kernel
    runs.  The chunks are made long (8 chains × 20 000 steps: ≈ 1–2 s a kernel call), so
    that a kernel holding the GIL would stop the heartbeat for a whole chunk — a gap of
    a second or more, checked with a fake chunk that holds it
    (test_heartbeat_check_sees_a_kernel_that_holds_the_gil).  With chunks of 200 steps
    (≈ 25 ms) it could not: the UI thread got the GIL between them, and the tick rate
    alone, on a loaded 2-core VM, once came out at 48% of nominal for nogil kernels."""
    app = make_app(isolated, {"simulation": {"chunk": 20000}})
    async with app.run_test(size=(80, 24)) as pilot:
        await start_long_simulation(pilot, app)
        await pilot.pause(0.3)           # past the burn-in's short chunks
        ticks, gap = await heartbeat(pilot, app, 1.5)
        assert "simulation" in app.jobs, "the simulation should still be running"
        assert gap < 0.6 and ticks >= 5, (ticks, gap)
        await pilot.press("c")
        await settle(pilot, app)


@run_async
async def test_heartbeat_check_sees_a_kernel_that_holds_the_gil(isolated, monkeypatch):
    """The check above can fail: chunks that hold the GIL for ≈ 1 s each, as a kernel
    compiled without ``nogil`` does (a busy loop in pure Python would not: the
    interpreter hands the GIL over every 5 ms), stop the heartbeat."""
    from numba import njit

    from msa_engine.sampling.marginal import MarginalSampler

    @njit(nogil=False)
    def spin(n):
        acc = 0.0
        for i in range(n):
            acc += (i % 7) * 1e-9
        return acc

    spin(10)                              # compiled before the app starts
    t0 = time.perf_counter()
    spin(10 ** 7)
    per_call = max(time.perf_counter() - t0, 1e-4) / 10 ** 7

    def advance_holding_the_gil(self, state, rng, nsteps, common, tail, chains=slice(None)):
        spin(int(1.0 / per_call))

    monkeypatch.setattr(MarginalSampler, "advance", advance_holding_the_gil)
    app = make_app(isolated, {"simulation": {"chunk": 20000}})
    async with app.run_test(size=(80, 24)) as pilot:
        await start_long_simulation(pilot, app)
        ticks, gap = await heartbeat(pilot, app, 1.5)
        assert not (gap < 0.6 and ticks >= 5), (ticks, gap)
        await pilot.press("c")
        await settle(pilot, app)


async def simulate_with(pilot, app, **fields):
    """Set the Simulation panel's ``fields`` (e.g. ``steps="400"``), press s and wait
    for the run to end."""
    for key, value in fields.items():
        await set_field(pilot, app, f"f-simulation-{key}", value)
    await pilot.press("s")
    await settle(pilot, app)


def shown_row(app, row: int) -> dict:
    """Row ``row`` of the Results table as shown, by :data:`model.COLUMN_KEYS`."""
    return dict(zip(model.COLUMN_KEYS, app.query_one("#results", DataTable).get_row_at(row)))


@run_async
async def test_simulation_result_stored(isolated):
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await simulate_with(pilot, app, steps="400", burn_in="100", chains="2")
        [entry] = app.session.entries
        assert entry["kind"] == "simulation" and entry["summary"]["train_discrepancy_se"] > 0
        row = shown_row(app, 0)
        assert row["kind"] == "sim" and row["train_se"] != "–" and row["test_se"] != "–"
        # the settings travel with the entry, so that `msa replay --rerun` repeats this run
        opts = entry["options"]
        assert (opts["steps"], opts["burn_in"], opts["chains"], opts["seed"]) == (400, 100, 2, 0)
        from msa_engine.analysis import rerun
        [rep] = rerun(app.session)["entries"]
        assert rep["bit_identical"]
        # a shorter run at the same point asks first (a quick look replaced a long run,
        # autosaved at once); "n" keeps the longer one
        await set_field(pilot, app, "f-simulation-steps", "200")
        app.set_focus(None)
        await pilot.press("s")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmScreen"
        question = str(app.screen.query_one(".question").render())
        assert "longer sim-marginal" in question and "2 chains × 400 steps" in question
        await pilot.press("n")
        await settle(pilot, app)
        assert not app.jobs and app.session.entries[0]["options"]["steps"] == 400
        # "y" runs it: it replaces the first, and says what it replaced
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot, app)
        [entry] = app.session.entries
        assert entry["options"]["steps"] == 200
        assert any("replaced the earlier sim-marginal" in str(n.message)
                   and "2 chains × 400 steps" in str(n.message) for n in app._notifications)


@run_async
async def test_a_simulation_that_never_mixed_is_flagged(isolated):
    """A step size of 5 accepts no proposal: the row's status says so next to its
    numbers (visible at 80 columns), the log line and a notification say why, and the
    detail line leads with it."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await simulate_with(pilot, app, steps="200", burn_in="0", chains="2", step_size="5")
        [entry] = app.session.entries
        assert entry["summary"]["converged"] is False
        row = shown_row(app, 0)
        assert row["status"] == "unconverged"
        log = "\n".join(str(line.text) for line in app.query_one("#log").lines)
        assert "⚠ sim-marginal: train" in log and "acceptance 0: the step size is too large" in log
        assert any("use a smaller step size" in str(n.message) for n in app._notifications)
        await pilot.press("3")
        await pilot.pause()
        detail = str(app.query_one("#detail", Static).render())
        assert detail.startswith("⚠ not converged (R̂_max")
        # the status column, and the test discrepancy's error bar, are on screen at 80
        table = app.query_one("#results", DataTable)
        widths = [c.get_render_width(table) for c in table.ordered_columns]
        shown = [c for c, w in zip(model.COLUMN_KEYS, np.cumsum(widths)) if w <= table.size.width]
        assert "status" in shown and shown[-1] == "test_se"


@run_async
async def test_theory_options_field(isolated):
    """The [theory] table as one form field: validated by the engine, its seed used."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        tick_only(app, "nngp")
        await set_field(pilot, app, "f-theory-options", "seed=7 chains=65")
        assert "multiple of groups" in str(app.query_one("#err-theory-options", Static).render())
        app.set_focus(None)
        await pilot.press("r")
        await settle(pilot, app)
        assert app.session.entries == [] and app.focused is app.query_one("#f-theory-options")
        # the default network is linear: Monte Carlo knobs change nothing, and it says so once
        await set_field(pilot, app, "f-theory-options", "seed=7 chains=64")
        await pilot.pause()
        await set_field(pilot, app, "f-theory-options", "seed=7 chains=64 ")
        await pilot.pause()
        notes = [n for n in app._notifications if "theory.chains" in n.message]
        assert len(notes) == 1 and notes[0].severity == "warning"
        await set_field(pilot, app, "f-theory-options", "seed=7")
        assert not app.query_one("#err-theory-options", Static).display
        app.set_focus(None)
        await pilot.press("r")
        await settle(pilot, app)
        [entry] = app.session.entries
        assert entry["seed"] == 7
        assert "ran with seed 7" in str(app.query_one("#detail", Static).render())
        assert model.session_config(app.session)["theory"] == {"seed": 7}


@run_async
async def test_sweep(isolated):
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        tick_only(app, "nngp", "tree")
        await set_field(pilot, app, "f-sweep-points", "3")
        await pilot.press("w")
        await settle(pilot, app)
        got = sorted((e["name"], round(e["chi"], 6)) for e in app.session.entries)
        assert got == [("nngp", 1.0), ("nngp", 10.0), ("nngp", 100.0),
                       ("tree", 1.0), ("tree", 10.0), ("tree", 100.0)]
        plot = app.figure("fig2")
        assert {s.label for s in plot.series} == {"nngp", "tree"} and plot.xlog
        await pilot.press("4")
        await pilot.pause()
        assert "Fig. 2" in str(app.query_one("#plot").render())
        # the same grid again: nothing to compute, and it says so (it said "sweep
        # finished" and left the bar spinning)
        app.set_focus(None)
        await pilot.press("w")
        await settle(pilot, app)
        assert len(app.session.entries) == 6
        assert "nothing to compute" in str(app.query_one("#run-status", Static).render())
        bar = app.query_one("#progress")
        assert bar.total == 1 and bar.progress == 1


@run_async
async def test_save_then_reopen(isolated):
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        tick_only(app, "nngp", "exact")
        await pilot.press("r")
        await settle(pilot, app)
        await pilot.press("ctrl+s")
        await pilot.pause()
        app.screen.query_one(Input).value = "mine"
        await pilot.press("enter")
        await pilot.pause()
        rows = [app.query_one("#results", DataTable).get_row_at(i) for i in range(2)]
    path = isolated / "mine.json"
    assert path.is_file()
    again = MSAApp(path, session_dir=isolated, autosave=False)
    async with again.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = again.query_one("#results", DataTable)
        assert [table.get_row_at(i) for i in range(table.row_count)] == rows
        assert again.query_one("#f-network-chi", Input).value == "mean-field"


def _saved_sessions(directory, chis: dict):
    """Save one session per ``name: chi``, each with nngp and tree results."""
    from msa_engine import solve
    from msa_engine.config import load_config
    for name, chi in chis.items():
        cfg = load_config(None).resolved
        cfg["network"]["chi"] = chi
        s = model.new_session(cfg)
        for theory in ("nngp", "tree"):
            s.add_result(solve(s.problem(), theory))
        save_session(s, directory / f"{name}.json")


@run_async
async def test_compare_two_sessions(isolated):
    _saved_sessions(isolated, {"a-standard": 1.0, "b-meanfield": 100.0})
    # b also holds a simulation that never mixed (a step size of 5 accepts nothing)
    import warnings
    from msa_engine import MSAWarning, simulate
    from msa_engine.sessions import load_session
    b = load_session(isolated / "b-meanfield.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MSAWarning)
        b.add_result(simulate(b.problem(), step_size=5.0, burn_in=0, steps=100, chains=2))
    save_session(b, isolated / "b-meanfield.json")
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("o")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "SessionBrowser"
        await pilot.press("space", "down", "space", "m")
        await pilot.pause()
        screen = app.screen
        assert screen.__class__.__name__ == "CompareScreen"
        tables = list(screen.query(DataTable))
        assert len(tables) == 2 and [t.row_count for t in tables] == [2, 3]
        assert str(tables[1].get_row_at(2)[0]) == "sim sim-marginal *"
        assert tables[1].border_subtitle == "* not converged: error bars unreliable"
        assert not tables[0].border_subtitle
        plot = screen.query_one("#compare-plot").plot
        labels = {s.label for s in plot.series}
        assert labels == {"a-standard: nngp", "a-standard: tree", "b-meanfield: nngp",
                          "b-meanfield: tree", "b-meanfield: sim-marginal (unconverged)"}
        # several sessions: the legend names curves and sessions, and says which session's
        # simulation has not converged
        assert "sim-marginal (unconverged in b-meanfield)" in [t for *_, t in plot.legend]
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.__class__.__name__ != "CompareScreen"


@run_async
async def test_browser_open_and_delete(isolated):
    _saved_sessions(isolated, {"keep": 1.0, "drop": 100.0})
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("o")
        await pilot.pause()
        await pilot.press("d")        # first row: drop.json (sorted)
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause()
        assert not (isolated / "drop.json").exists()
        await pilot.press("enter")   # opens keep.json
        await pilot.pause()
        await pilot.pause()
        assert app.session.path.name == "keep.json"
        assert app.query_one("#f-network-chi", Input).value == "standard"


@run_async
async def test_worker_error_notifies_and_app_survives(isolated, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(model, "run_theory", boom)
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("r")
        await settle(pilot, app)
        assert any("boom" in str(n.message) for n in errors_of(app))
        assert not app.jobs
        await pilot.press("3")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "tab-results"
        assert app.is_running


@run_async
async def test_a_fields_new_error_line_is_scrolled_into_view(isolated):
    """At 80×24, every text field given a value it refuses shows its error line on
    screen while it has the focus: the last field of the form (the simulation seed)
    had its line mounted below the visible rows."""
    app = make_app(isolated)
    hidden = []
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        for field in list(app.query(Input)):
            field.focus()
            await pilot.pause()
            before = field.value
            field.value = "zz"
            name = (field.id or "").removeprefix("f-")

            def shown():
                lines = [w for w in app.query(".field-error")
                         if w.display and w.id == f"err-{name}"]
                return bool(lines) and lines[0] in app.screen._compositor.visible_widgets

            # validation runs after the burst of edits, and the scroll after the mount:
            # on a loaded machine two pauses were not always enough (seen once in CI's
            # company), so wait up to 2 s for it
            for _ in range(40):
                await pilot.pause(0.05)
                if shown():
                    break
            if not shown():
                hidden.append(name)
            field.value = before
            await pilot.pause()
    assert not hidden


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@run_async
async def test_every_placeholder_fits_its_field(isolated, size):
    """A field's hint is read whole: the Monte Carlo field's was cut at 120 columns,
    where the form has two columns of panels."""
    app = make_app(isolated)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        from rich.cells import cell_len
        cut = [(f.id, cell_len(f.placeholder), f.content_region.width) for f in app.query(Input)
               if cell_len(f.placeholder) > f.content_region.width]
    assert not cut


@run_async
async def test_export_goes_beside_a_session_opened_by_its_path(isolated):
    """`e` on a session opened from a file outside the session folder writes its table
    beside that file, where the session saves and autosaves; the session folder gets
    nothing."""
    elsewhere = isolated.parent / "runs"
    elsewhere.mkdir()
    target = elsewhere / "mine.json"
    save_session(model.open_session(None), target)     # the bundled session, with results
    app = MSAApp(str(target), session_dir=isolated, autosave=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("e")
        await pilot.pause()
    [csv] = elsewhere.glob("*-results.csv")
    assert csv.read_text().count("\n") > 1                # a header and result rows
    assert not list(isolated.iterdir())
    # where it cannot be written beside the session (here a folder in its place), the
    # table goes to the session folder, and the notice says why
    csv.unlink()
    csv.mkdir()
    app = MSAApp(str(target), session_dir=isolated, autosave=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("e")
        await pilot.pause()
        notes = [str(n.message) for n in app._notifications]
    [moved] = isolated.glob("*-results.csv")
    assert moved.name == csv.name and any(str(moved) in n and str(csv) in n for n in notes)


@run_async
async def test_replay_and_export(isolated):
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        tick_only(app, "tree")
        await pilot.press("r")
        await settle(pilot, app)
        await pilot.press("e")
        await pilot.pause()
        csv_text = next(isolated.glob("*-results.csv")).read_text()
        # the CLI's table (msa export --format csv): its columns, full precision
        from msa_engine.export import RESULT_COLUMNS
        header, row = csv_text.splitlines()[:2]
        assert header == ",".join(RESULT_COLUMNS) and row.startswith("tree,theory")
        assert len(row.split(",")[4]) > 8          # every digit, not the screen's 4
        await pilot.press("y")
        await pilot.pause()
        screen = app.screen
        assert screen.__class__.__name__ == "ReplayScreen"
        await pilot.press("plus", "plus")
        assert screen.speed == 4
        await pilot.pause(0.5)
        assert 0 < screen.pos <= len(screen.records)
        await pilot.press("escape")


def test_engine_cli_does_not_import_textual():
    code = ("import sys, msa_engine.cli as c; c.build_parser(); "
            "assert not any(m.startswith(('textual', 'msa_tui')) for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


@run_async
async def test_error_lines_survive_rebuilt_data_fields_and_bad_sections_keep_settings(isolated):
    """A run with an invalid simulation field keeps the session's [simulation] table; a
    data field's error shows again after the task switched (its fields rebuilt)."""
    app = make_app(isolated, config_changes={"simulation": {"chains": 8, "steps": 16000}})
    async with app.run_test(size=(80, 24)) as pilot:
        before = dict(model.session_config(app.session)["simulation"])
        assert before["chains"] == 8
        await set_field(pilot, app, "f-simulation-steps", "-5")
        tick_only(app, "nngp")
        app.set_focus(None)
        await pilot.press("r")
        await settle(pilot, app)
        assert [e["name"] for e in app.session.entries] == ["nngp"]
        assert model.session_config(app.session)["simulation"] == before
        await set_field(pilot, app, "f-data-P", "0")
        assert "data.P must be >= 1" in str(app.query_one("#err-data-P", Static).render())
        for task in ("linear", "ising"):      # away and back: the data fields are rebuilt
            app.query_one("#f-data-task").value = task
            await pilot.pause()
            await pilot.pause()
        await set_field(pilot, app, "f-data-P", "0")
        await pilot.pause()
        err = app.query_one("#err-data-P", Static)
        assert err.display and "data.P must be >= 1" in str(err.render())
        # the toast names the field once ("data.P: data.P must be …" before)
        app.clear_notifications()
        app.set_focus(None)
        await pilot.press("r")
        await pilot.pause()
        [note] = [str(n.message) for n in app._notifications]
        assert note.startswith("data.P must be >= 1"), note


def _styles_of(app):
    """Every widget's classes and stylesheet rules, its parts' (component classes) too."""
    return [(type(n).__name__, n.id, sorted(n.classes), n.styles.base.get_rules(),
             {k: v.get_rules() for k, v in n._component_styles.items()})
            for n in app.screen.walk_children(with_self=True)]


@run_async
async def test_start_skips_the_redundant_restyle_and_loses_no_style(isolated, monkeypatch):
    """Issue 7: the first resume of the default screen does not restyle all its widgets
    (WorkbenchScreen), the form's widgets are built with the classes Textual would add
    after mounting (``widgets.compact``), and a full restyle afterwards changes no
    widget's styles: what was skipped was redundant."""
    from textual.app import App
    from textual.screen import Screen
    from textual.widgets import Button, Checkbox

    from msa_tui.widgets import compact
    restyled = []
    update = App.update_styles

    def counting(self, node, animate=True):
        restyled.append(node)
        return update(self, node, animate)

    monkeypatch.setattr(App, "update_styles", counting)
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not [n for n in restyled if isinstance(n, Screen)]
        form = app.query_one("#form")
        widgets = list(form.query("Input, Checkbox, Button"))
        assert len(widgets) > 25
        for w in widgets:
            assert w not in restyled, w
            assert w.compact and w.has_class("-textual-compact")
        assert all(i.has_class("-valid") == bool(i.value) for i in form.query(Input).results(Input))
        assert all(c.has_class("-on") == c.value for c in form.query(Checkbox).results(Checkbox))
        assert form.query(Button)
        before = _styles_of(app)
        app.update_styles(app.screen, animate=False)
        await pilot.pause()
        assert _styles_of(app) == before
        # compact() leaves a widget as compact=True would
        for make in (lambda **kw: Input("x", **kw), lambda **kw: Checkbox("x", True, **kw),
                     lambda **kw: Button("x", **kw)):
            assert compact(make()).classes == make(compact=True).classes
            assert compact(make()).compact


@run_async
async def test_validation_sets_only_changed_texts(isolated, monkeypatch):
    """Every keystroke re-validates the form; a Static's update lays the screen out
    again even for the same text, so unchanged texts are not set (issue 7)."""
    updated = []
    update = Static.update

    def counting(self, content="", **kw):
        updated.append(self.id)
        return update(self, content, **kw)

    monkeypatch.setattr(Static, "update", counting)
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        gamma = app.query_one("#gamma-view", Static)
        text = str(gamma.render())
        kappa, seed = "f-network-kappa", "f-simulation-seed"
        steps = [(kappa, "0.2", []),                                   # nothing shown changes
                 (kappa, "-1", ["err-network-kappa", "gamma-view"]),   # an error; no χ, γ
                 (seed, "5", []),                                      # the same error
                 (kappa, "0", ["err-network-kappa"]),                  # another error
                 (kappa, "0.3", ["err-network-kappa", "gamma-view"]),  # valid again
                 (seed, "6", [])]
        for field, value, expected in steps:
            updated.clear()
            await set_field(pilot, app, field, value)
            assert updated == expected, (field, value)
        assert str(gamma.render()) == text
        assert not app.query_one("#err-network-kappa", Static).display
        await set_field(pilot, app, "f-network-chi", "γ=1.5")
        assert updated[-1] == "gamma-view" and "γ = 1.500" in str(gamma.render())


def _layout_of(app):
    return {(type(w).__name__, w.id): w.region for w in app.screen.walk_children()
            if w.id and w.display}


@run_async
async def test_resized_terminal_lays_out_as_a_fresh_start(isolated):
    """WorkbenchScreen lets a Resize of the size it already has stop (a start brings
    three); a real resize, either way, still lays the screen out as a fresh start at
    that size would."""
    fresh = {}
    for size in ((80, 24), (120, 40)):
        app = make_app(isolated)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            fresh[size] = _layout_of(app)
    assert fresh[(80, 24)] != fresh[(120, 40)]
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        for size in ((80, 24), (120, 40), (80, 24)):
            await pilot.resize_terminal(*size)
            await settle(pilot, app)
            assert app.query_one("#form").has_class("-wide") == (size[0] >= 110)
            assert _layout_of(app) == fresh[size], size


@run_async
async def test_footer_rebuilt_only_when_its_keys_change(isolated):
    """Textual's Footer rebuilds its keys on every focus move; BindingsFooter only when
    the keys it shows change (issue 7): Tab between two inputs keeps the same key
    widgets, focus on a Choice brings back the single-letter keys an Input hides."""
    from textual.widgets._footer import FooterKey

    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()

        def keys():
            return [(k.key, k.description) for k in app.screen.query(FooterKey)]

        assert ("r", "Run") in keys() and ("question_mark", "Help") in keys()
        app.set_focus(app.query_one("#f-network-N"))
        await settle(pilot, app)
        widgets = list(app.screen.query(FooterKey))
        assert keys() == [("ctrl+s", "Save"), ("ctrl+p", "palette")]
        await pilot.press("tab")                       # to g_w, another input
        await settle(pilot, app)
        assert app.focused.id == "f-network-g_w"
        assert list(app.screen.query(FooterKey)) == widgets
        assert all(a is b for a, b in zip(app.screen.query(FooterKey), widgets))
        app.set_focus(app.query_one("#f-network-activation"))
        await settle(pilot, app)
        assert ("r", "Run") in keys()
        app.set_focus(None)
        await pilot.press("o")                         # the session browser's own footer
        await settle(pilot, app)
        assert ("d", "Delete") in keys() and ("escape", "Back") in keys()
        await pilot.press("escape")
        await settle(pilot, app)
        assert ("r", "Run") in keys()


@run_async
async def test_results_selection_follows_the_cursor_and_starts_on_the_last(isolated,
                                                                           monkeypatch):
    """The bundled session opens with its last result selected and shown, without the
    stale row-0 event of filling the table flipping it; ↑ and ↓ move the selection,
    the detail line and the plot's entry with the cursor."""
    from msa_engine.sessions import default_session_path

    plotted = []
    refresh_plot = MSAApp.refresh_plot
    monkeypatch.setattr(MSAApp, "refresh_plot",
                        lambda self: (plotted.append(self.selected), refresh_plot(self)))
    app = MSAApp(default_session_path(), session_dir=isolated, autosave=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot, app)
        n = len(app.session.entries)
        assert n > 3 and app.selected == n - 1
        assert set(plotted) == {n - 1}          # never flipped to row 0 (it was: 29, 0, 29)
        detail = app.query_one("#detail", Static)

        def shows(i):
            e = app.session.entries[i]
            return str(detail.render()).startswith(f"{e['kind']} {e['name']} ")

        assert shows(n - 1)
        await pilot.press("3")
        table = app.query_one("#results", DataTable)
        app.set_focus(table)
        await pilot.pause()
        # rows are grouped by name and sorted by N and χ within a name: the session's
        # last entry (sim-marginal at χ = 100) is still the last row
        order = model.display_order(app.session.entries)
        assert order[-1] == n - 1 and table.cursor_row == n - 1
        chis = [app.session.entries[i]["chi"] for i in order
                if app.session.entries[i]["name"] == "sim-marginal"]
        assert chis == sorted(chis) and len(chis) > 2
        for key, row in (("up", n - 2), ("up", n - 3), ("down", n - 2)):
            await pilot.press(key)
            await pilot.pause()
            want = order[row]
            assert app.selected == want and table.cursor_row == row and shows(want)
        assert app._selected_entry() is app.session.entries[order[n - 2]]


@run_async
async def test_choice_by_keyboard_and_mouse(isolated):
    """The form's one-line Choice (issue 7: one widget where Textual's Select is six):
    Enter opens its menu under it at the current value, ↓ Enter picks the next option
    and rebuilds the task's data fields, ← → step through the options, Escape and a
    click outside keep the value, a click on the field opens the menu; a value it does
    not offer is refused."""
    import pytest

    from msa_engine.tasks import TASKS
    from msa_tui.widgets import Choice, ChoiceMenu

    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        task = app.query_one("#f-data-task", Choice)
        start = task.value
        i = TASKS.index(start)
        app.set_focus(task)
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceMenu)
        menu = app.screen.query_one("OptionList")
        assert menu.highlighted == i
        assert menu.region.y == task.region.bottom and menu.region.x == task.region.x
        await pilot.press("down", "enter")
        await settle(pilot, app)
        nxt = TASKS[(i + 1) % len(TASKS)]
        assert not isinstance(app.screen, ChoiceMenu) and app.focused is task
        assert task.value == nxt and app.query_one("#form").read().data["task"] == nxt
        fields = {w.id.removeprefix("f-data-") for w in app.query("#data-fields Input")}
        assert fields == set(model.data_keys(nxt))
        await pilot.press("left")
        await settle(pilot, app)
        assert task.value == start
        await pilot.press("right", "right")
        await settle(pilot, app)
        assert task.value == TASKS[(i + 2) % len(TASKS)]
        await pilot.press("left", "left")
        await settle(pilot, app)
        await pilot.press("enter", "down", "escape")
        await pilot.pause()
        assert not isinstance(app.screen, ChoiceMenu) and task.value == start
        await pilot.click("#f-network-activation")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceMenu)
        await pilot.click(offset=(1, 1))              # outside the list
        await pilot.pause()
        assert not isinstance(app.screen, ChoiceMenu)
        assert app.query_one("#f-network-activation", Choice).value == "linear"
        with pytest.raises(ValueError, match="not one of"):
            task.value = "no-such-task"
        assert task.value == start
        # ↑ opens it too; a letter moves to the next option with it; Tab closes it
        activation = app.query_one("#f-network-activation", Choice)
        activation.focus()
        await pilot.press("up")
        await pilot.pause()
        assert isinstance(app.screen, ChoiceMenu)
        options = activation.options
        await pilot.press(options[-1][0])
        want = next(i for i, o in enumerate(options) if o[0] == options[-1][0])
        assert app.screen.query_one("OptionList").highlighted == want
        await pilot.press("tab")
        await pilot.pause()
        assert not isinstance(app.screen, ChoiceMenu) and activation.value == "linear"
        # a resize closes it (it is placed by where the field was)
        await pilot.press("enter")
        await pilot.pause()
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert not isinstance(app.screen, ChoiceMenu)
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        # on the screen's last row the menu opens over the field instead of under it
        method = app.query_one("#f-simulation-method", Choice)
        method.focus()
        await pilot.pause()
        form = app.query_one("#form")
        form.scroll_to(y=form.scroll_y + method.region.y - (app.size.height - 2),
                       animate=False)
        await pilot.pause()
        assert method.region.y == app.size.height - 2        # above the footer
        await pilot.press("enter")
        await pilot.pause()
        menu = app.screen.query_one("OptionList")
        assert menu.region.bottom == method.region.y and menu.region.x == method.region.x
        await pilot.press("escape")


@run_async
async def test_form_grid_keeps_labels_beside_fields_and_errors_below(isolated):
    """Each label sits on its field's row, left of it, at 80 and 120 columns; an error
    line appears under its field, as wide as it, and the rows after it move down by
    the line's height, also where the message wraps (no blank row: a cell spanning
    both columns got one); fixed, the rows move back."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        for size in ((80, 24), (120, 40)):
            await pilot.resize_terminal(*size)
            await pilot.pause()
            for field in app.query_one("#form").query(".field"):
                label = app.query_one("#label-" + field.id.removeprefix("f-"))
                assert label.region.y == field.region.y, (size, field.id)
                assert label.region.right <= field.region.x, (size, field.id)
            for name, after, bad in (("data-P", "data-P_test", "0"),
                                     ("theory-options", None, "x" * 150)):
                field = app.query_one(f"#f-{name}")
                nxt = app.query_one(f"#f-{after}") if after else None
                y_next = nxt.virtual_region.y if nxt else None
                good = field.value
                await set_field(pilot, app, f"f-{name}", bad)
                await pilot.pause()
                err = app.query_one(f"#err-{name}", Static)
                assert err.display and field.has_class("bad")
                assert err.virtual_region.y == field.virtual_region.bottom
                assert (err.virtual_region.x, err.virtual_region.width) == (
                    field.virtual_region.x, field.virtual_region.width)
                # as tall as its text: its last line is not blank
                last = err.render_lines(err.content_region.reset_offset)[-1]
                assert last.text.strip(), name
                if nxt:
                    assert nxt.virtual_region.y == err.virtual_region.bottom
                else:
                    assert err.virtual_region.height > 1        # the long one wraps
                    panel = app.query_one("#panel-theories")
                    assert err.region.bottom == panel.region.bottom - 1
                await set_field(pilot, app, f"f-{name}", good)
                await pilot.pause()
                assert not err.display and not field.has_class("bad")
                if nxt:
                    assert nxt.virtual_region.y == y_next


@run_async
async def test_stepping_through_tasks_keeps_typed_data_values(isolated):
    """← → on the task rebuild the data fields at every task passed: a value typed in a
    field that a task in between lacks comes back with its task, and a loaded session's
    data fields take its values and the defaults, not what the form held before."""
    from msa_tui.widgets import Choice, ParamForm

    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        task = app.query_one("#f-data-task", Choice)
        app.set_focus(task)
        start = task.value
        await set_field(pilot, app, "f-data-d", "7")
        await set_field(pilot, app, "f-data-P", "0")          # invalid: kept as typed
        mine = {k: f"0.{i + 3}1" for i, k in enumerate(model.data_keys(start))
                if k not in ("d", "P", "P_test", "seed")}
        for k, v in mine.items():
            await set_field(pilot, app, f"f-data-{k}", v)
        for _ in task.options:                                # all the way round
            await pilot.press("right")
            await settle(pilot, app)
        assert task.value == start
        form = app.query_one(ParamForm)
        data = form.read().data
        assert data["d"] == "7" and data["P"] == "0"
        assert all(data[k] == v for k, v in mine.items())
        # a session loaded: its values, the rest defaults
        other = next(t for t in task.options if t != start and "d" in model.data_keys(t))
        await form.load(model.FormState.from_config(
            {**model.session_config(app.session), "data": {"task": other, "d": "12"}}))
        await settle(pilot, app)
        data = form.read().data
        assert data["task"] == other and data["d"] == "12"
        assert all(data[k] == str(model.data_default(other, k))
                   for k in model.data_keys(other) if k != "d")


@run_async
async def test_a_changed_problem_does_not_take_a_running_jobs_result(isolated):
    """Editing the network while a simulation runs and pressing r moved the session to a
    new one, into which the old problem's simulation then filed its result."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await start_long_simulation(pilot, app)
        before = app.session
        await set_field(pilot, app, "f-network-g_a", "2.0")
        app.set_focus(None)
        await pilot.press("r")
        await pilot.pause()
        assert app.session is before and list(app.jobs) == ["simulation"]
        assert any("still runs on the current session" in str(n.message)
                   for n in app._notifications)
        await pilot.press("c")
        await settle(pilot, app)
        assert not app.jobs
        # with nothing running the new problem gets its own session
        tick_only(app, "nngp")
        await pilot.press("r")
        await settle(pilot, app)
        assert app.session is not before
        assert model.session_config(app.session)["network"]["g_a"] == 2.0


@run_async
async def test_save_as_asks_before_replacing_another_sessions_file(isolated):
    _saved_sessions(isolated, {"other": 1.0})
    other = isolated / "other.json"
    before = other.read_bytes()
    app = make_app(isolated)

    async def save_as(name):
        app.action_save_as()
        await pilot.pause()
        app.screen.query_one(Input).value = name
        await pilot.press("enter")
        await pilot.pause()
        return app.screen.__class__.__name__

    async with app.run_test(size=(80, 24)) as pilot:
        for answer in ("n", "y"):
            assert await save_as("other") == "ConfirmScreen"
            await pilot.press(answer)
            await pilot.pause()
            if answer == "n":
                assert other.read_bytes() == before and app.session.path is None
        assert other.read_bytes() != before
        assert app.session.path is not None and app.session.path.name == "other.json"
        # saving again under its own name asks nothing
        assert await save_as("other") == "WorkbenchScreen"


@run_async
async def test_starting_a_run_from_a_setup_field_shows_the_log_and_moves_the_focus(isolated):
    """The focus left on a Setup checkbox (hidden once the Log shows) made Textual show
    Setup again: the switch was undone and the next keys went into a field."""
    from textual.widgets import Checkbox
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        tick_only(app, "nngp", "rescaling")
        app.query_one("#th-nngp", Checkbox).focus()
        await pilot.pause()
        await pilot.press("r")
        await settle(pilot, app)
        assert app.query_one(TabbedContent).active == "tab-results"
        assert app.focused is app.query_one("#results", DataTable)
        await pilot.press("2")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "tab-run"
        assert app.focused is app.query_one("#log")
        await pilot.press("1")
        await pilot.pause()
        assert app.query_one(TabbedContent).active == "tab-setup"
        assert app.focused is None
        # in a text field the letters are the field's; escape leaves it for the run keys
        field = app.query_one("#f-network-N", Input)
        field.focus()
        await pilot.press("escape")
        await pilot.pause()
        assert app.focused is None and field.value == "100"
        await pilot.press("r")
        await settle(pilot, app)
        assert app.query_one(TabbedContent).active == "tab-results" and field.value == "100"


@run_async
async def test_workbench_keys_are_off_over_another_screen(isolated):
    """The session browser's footer offered r Run, s Simulate, … of the workbench
    behind it."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("o")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "SessionBrowser"
        active = app.screen.active_bindings
        for key in ("r", "s", "w", "ctrl+s", "o"):
            assert key not in active or not active[key].enabled, key
        await pilot.press("s", "r", "w")
        await pilot.pause()
        assert not app.jobs and not app.workers
        # nor does the command palette offer them there (it called the actions directly)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "Simulate" not in titles and "Run theories" not in titles
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.active_bindings["s"].enabled
        assert "Simulate" in [c.title for c in app.get_system_commands(app.screen)]


@run_async
async def test_compare_export_goes_to_the_session_folder(isolated):
    from msa_engine.sessions import bundled_sessions
    from msa_tui.screens import CompareScreen
    bundled = [p for p in bundled_sessions() if "pair" in Path(p).name]
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        app.push_screen(CompareScreen(bundled, isolated))
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
    written = sorted(p.name for p in isolated.glob("compare-*.csv"))
    assert written == ["compare-pair-mean-field-vs-pair-standard.csv"] or \
        written == ["compare-pair-standard-vs-pair-mean-field.csv"]
    assert not any(Path(p).parent.joinpath(written[0]).exists() for p in bundled)
    from msa_engine.export import RESULT_COLUMNS
    header = (isolated / written[0]).read_text().splitlines()[0]
    assert header == "session," + ",".join(RESULT_COLUMNS)


def test_chi_field_text():
    """`γ=` half-typed was taken as the standard scaling; `N` (as `msa sweep --chi` writes
    mean field) was refused."""
    from msa_engine import MSAError
    assert model.parse_chi("standard", 100) == 1.0
    assert model.parse_chi("mean-field", 100) == model.parse_chi("N", 100) == 100.0
    assert model.parse_chi("γ=1.5", 100) == pytest.approx(10.0)
    assert model.parse_chi("7", 100) == 7.0
    for text in ("γ=", "gamma", "gamma = "):
        with pytest.raises(MSAError, match="γ needs a value"):
            model.parse_chi(text, 100)



@run_async
async def test_a_run_that_ends_while_a_field_is_edited_leaves_the_focus_there(isolated):
    """The switch to Results at a run's end took the focus from the field being typed in,
    and the next letter acted as a workbench key (`s` started a simulation)."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        # several seconds: a run of 20 000 steps (≈ 0.5 s) could end inside one of Pilot's
        # pauses, which wait for the process's CPU to go idle (a CI failure)
        await set_field(pilot, app, "f-simulation-steps", "80000")
        await set_field(pilot, app, "f-simulation-thin", "80")
        await set_field(pilot, app, "f-simulation-chains", "2")
        app.set_focus(None)
        await pilot.press("s")
        assert "simulation" in app.jobs           # still running: the user edits meanwhile
        field = app.query_one("#f-network-N", Input)
        app.query_one(TabbedContent).active = "tab-setup"
        field.focus()
        await pilot.pause()
        assert "simulation" in app.jobs
        await settle(pilot, app)
        assert len(app.session.entries) == 1 and not app.jobs
        assert app.focused is field and app.query_one(TabbedContent).active == "tab-setup"
        await pilot.press("s")
        await pilot.pause()
        assert not app.jobs and field.value.endswith("s")


@run_async
async def test_log_lines_wrap_in_the_wide_layout(isolated):
    """Beside the live trace (≥ 100 columns) the log is ~58 columns wide; RichLog's
    default min_width of 78 rendered lines at 78 and cut them."""
    from textual.widgets import RichLog
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        log = app.query_one("#log", RichLog)
        log.write("── theories nngp, rescaling, tree, one-loop at χ=1, N=100 " + "x" * 80)
        await pilot.pause()
        width = log.scrollable_content_region.width
        assert width < 78
        assert max(strip.cell_length for strip in log.lines) <= width


@run_async
async def test_an_opened_session_brings_its_sweep_and_theories(isolated):
    """The Sweep panel kept the previous session's grid (and `exact` ticked for an erf
    network); `w` then ran another grid without the session's simulations and
    overwrote its sweep record."""
    from textual.widgets import Checkbox
    root = Path(__file__).resolve().parents[1] / "sessions"
    app = MSAApp(root / "ising-linear-sweep.json", session_dir=isolated, autosave=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.query_one("#f-sweep-chi_max", Input).value == "mean-field"
        assert app.query_one("#f-sweep-points", Input).value == "5"
        assert app.query_one("#sweep-simulate", Checkbox).value
        v = app.revalidate()
        assert v.sweep["chis"] == [1.0, 3.0, 10.0, 30.0, "N"]     # the recorded grid
        await set_field(pilot, app, "f-sweep-points", "4")
        chis = app.revalidate().sweep["chis"]
        assert len(chis) == 4 and chis[1] == pytest.approx(100 ** (1 / 3))
        app.open_path(root / "hermite-erf-sweep.json")
        await settle(pilot, app)
        assert not app.query_one("#th-exact", Checkbox).value
        assert app.query_one("#th-tree", Checkbox).value
        assert app.query_one("#f-sweep-points", Input).value == "3"
        assert app.revalidate().sweep["chis"] == [1.0, 10.0, "N"]


@run_async
async def test_the_live_trace_of_a_sweep_follows_the_point_being_computed(isolated):
    """It accumulated the whole sweep: the theory points' residuals joined up, and, with
    theory records in it, a simulation's R̂ never showed."""
    from textual.widgets import Checkbox
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        tick_only(app, "nngp", "tree")
        await set_field(pilot, app, "f-sweep-points", "2")
        for key, value in (("steps", "200"), ("burn_in", "50"), ("chains", "2")):
            await set_field(pilot, app, f"f-simulation-{key}", value)
        app.query_one("#sweep-simulate", Checkbox).value = True
        await pilot.pause()
        app.set_focus(None)
        await pilot.press("w")
        await settle(pilot, app)
        assert len(app.session.find("simulation")) == 2
        # the last point computed was a simulation: the trace holds its chunks alone
        assert app.live and all(model.is_chunk(model.record_dict(r)) for r in app.live)
        labels = {s.label for s in figures_of(app.live).series}
        assert any("R̂" in label for label in labels), labels
        # 200 steps of 2 chains do not converge: each point says so in the log
        log = "\n".join(str(line.text) for line in app.query_one("#log").lines)
        sims = app.session.find("simulation")
        assert all(model.entry_status(e) == "unconverged" for e in sims)
        for e in sims:
            assert f"⚠ sim-marginal N=100 χ={e['chi']:.4g}: not converged (" in log, log


def figures_of(records):
    from msa_engine import figures
    return figures.convergence(records, "Live trace")


def test_a_sweeps_bar_moves_within_a_simulation_point(isolated):
    """The sweep's callback turns a simulation point's chunks into fractions of a point
    on the bar; only a completed point refreshes the results (and logs its label)."""
    import threading
    from types import SimpleNamespace

    from msa_engine.sweep import SweepProgress
    from msa_tui.app import Progress, Record

    app = make_app(isolated)
    posted = []
    app.post_message = posted.append
    callback = app._callback("sweep", threading.Event())
    callback(SweepProgress(0, 4, "starting"))
    callback(SimpleNamespace(stage="simulate", steps_done=50, steps_total=200))
    callback(SweepProgress(1, 4, "sim N=100 χ=1"))
    callback(SweepProgress(2, 4, "sim N=100 χ=3", 0.0, "not converged (ESS_min 4 < 100)"))
    bars = [(m.done, m.total, m.point, m.warning) for m in posted if isinstance(m, Progress)]
    assert bars == [(0.0, 4, False, None), (0.25, 4, False, None), (1.0, 4, True, None),
                    (2.0, 4, True, "not converged (ESS_min 4 < 100)")]
    assert sum(isinstance(m, Record) for m in posted) == 1       # the chunk, for the log
    # a simulation job's chunks still drive the bar by steps (on_record), not by points
    posted.clear()
    app._callback("simulation", threading.Event())(
        SimpleNamespace(stage="simulate", steps_done=50, steps_total=200))
    assert [type(m).__name__ for m in posted] == ["Record"]


@run_async
async def test_log_lines_written_while_the_log_is_hidden_wrap_at_its_width(isolated):
    """Lines written while the user was on Setup (the Log tab hidden, no width) were
    wrapped at RichLog's min_width: 20-column pieces for good."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("2")
        await pilot.pause()
        await pilot.press("1")
        await pilot.pause()
        log = app.query_one("#log")
        line = "── theories nngp, rescaling, tree, one-loop, exact at χ=1, N=100"
        log.write(line)
        await pilot.pause()
        await pilot.press("2")
        await pilot.pause()
        await pilot.pause()
        width = log.scrollable_content_region.width
        assert width > 60
        texts = [strip.text.rstrip() for strip in log.lines]
        assert line in texts, texts[-4:]


@run_async
async def test_replay_lines_wrap_beside_the_plot_at_80_columns(isolated):
    """The replay's log beside its plot is narrower than RichLog's default min_width of 78:
    every line was cut at 'residual', its numbers never shown."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        tick_only(app, "one-loop")
        await pilot.press("r")
        await settle(pilot, app)
        await pilot.press("3")
        await pilot.pause()
        app.selected = 0
        app.action_replay()
        for _ in range(30):
            await pilot.pause(0.05)
        log = app.screen.query_one("#replay-log")
        width = log.scrollable_content_region.width
        assert log.lines and width < 78
        assert max(strip.cell_length for strip in log.lines) <= width


@run_async
async def test_the_bundled_example_never_autosaves_over_a_users_copy(isolated):
    """`msa tui` opens the bundled example; its autosave wrote sessions/<example>.json,
    replacing the copy a user had saved there in an earlier run (34 results lost)."""
    from msa_engine.sessions import default_session_path, load_session
    stem = Path(default_session_path()).stem
    mine = isolated / f"{stem}.json"
    users = model.open_session(None)
    users.doc["notes"] = "my earlier work"
    save_session(users, mine)
    before = mine.read_bytes()
    app = MSAApp(None, session_dir=isolated, autosave=True)
    async with app.run_test(size=(80, 24)) as pilot:
        notes = [str(n.message) for n in app._notifications]
        assert any(f"{stem}.json" in n and "o opens" in n for n in notes), notes
        tick_only(app, "nngp")
        await pilot.press("r")
        await settle(pilot, app)
    assert mine.read_bytes() == before
    copy = isolated / f"{stem}-2.json"
    assert copy.exists() and load_session(copy).doc.get("notes") != "my earlier work"
    assert Path(app.session.path) == copy


@run_async
async def test_escape_in_a_field_and_ctrl_q_do_not_throw_a_running_job_away(isolated):
    """Escape in a text field cancelled the running simulation (the user only meant to
    leave the field), and ctrl+q quit at once, the run lost without a question."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        # a million steps: Pilot's pauses below take seconds each while it runs
        await start_long_simulation(pilot, app, "1000000", "500")
        field = app.query_one("#f-network-g_w", Input)
        field.focus()
        await pilot.press("escape")
        await pilot.pause()
        assert app.focused is None and "simulation" in app.jobs
        assert not app.jobs["simulation"].is_set()
        await pilot.press("ctrl+q")
        await pilot.pause()
        assert app.screen.__class__.__name__ == "ConfirmScreen" and app.is_running
        question = str(app.screen.query_one(".question").render())
        assert "simulation still running" in question and "saved" in question
        await pilot.press("n")
        await pilot.pause()
        assert app.is_running and "simulation" in app.jobs
        await pilot.press("escape")                    # outside a field: cancels
        await settle(pilot, app)
        assert not app.jobs
        await pilot.press("ctrl+q")                    # nothing running: quits at once
        await pilot.pause()
        assert not app.is_running


@run_async
async def test_quitting_during_a_sweep_saves_its_finished_points(isolated):
    """ctrl+q, then y, during a sweep: the jobs are stopped, what they finished is saved
    (the TUI's sweep does not autosave by itself), then the workbench quits."""
    from msa_engine.sessions import load_session
    from textual.widgets import Checkbox
    app = make_app(isolated, autosave=True)
    async with app.run_test(size=(80, 24)) as pilot:
        tick_only(app, "nngp")
        await set_field(pilot, app, "f-sweep-points", "3")
        for key, value in (("steps", "200000"), ("burn_in", "50"), ("chains", "2"),
                           ("thin", "100")):
            await set_field(pilot, app, f"f-simulation-{key}", value)
        app.query_one("#sweep-simulate", Checkbox).value = True
        app.set_focus(None)
        await pilot.press("w")
        for _ in range(200):                           # the nngp chain is done
            await pilot.pause(0.05)
            if app.session.find("theory", "nngp") and len(app.session.find()) >= 3:
                break
        assert "sweep" in app.jobs
        await pilot.press("ctrl+q")
        await pilot.pause()
        await pilot.press("y")
        for _ in range(200):
            await pilot.pause(0.05)
            if not app.is_running:
                break
        assert not app.is_running
    [saved] = isolated.glob("*.json")
    assert len(load_session(saved).find("theory", "nngp")) == 3


@run_async
async def test_after_a_run_the_results_table_has_the_focus(isolated):
    """The Results tab came up after a run with nothing focused: ↑/↓ did nothing (and ←
    switched tabs) until the user found the table with Tab."""
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        tick_only(app, "nngp", "exact")
        app.set_focus(None)
        await pilot.press("r")
        await settle(pilot, app)
        assert app.query_one(TabbedContent).active == "tab-results"
        table = app.query_one("#results", DataTable)
        assert app.focused is table
        before = app.selected
        await pilot.press("up")
        await pilot.pause()
        assert app.selected == before - 1


@run_async
async def test_a_checkbox_shows_its_state_without_colour(isolated):
    """Ticked and unticked checkboxes both drew ▐X▌, told apart by colour alone."""
    from textual.widgets import Checkbox
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        box = app.query_one("#sweep-simulate", Checkbox)
        marks = {}
        for value in (False, True):
            box.value = value
            await pilot.pause()
            marks[value] = box.render().plain[:3]
        assert marks == {False: "▐ ▌", True: "▐X▌"}, marks


@run_async
async def test_a_sweep_to_mean_field_ends_at_each_widths_N(isolated):
    """With widths N = 50 the mean-field end was the form's N = 100: χ ran up to 2N."""
    app = make_app(isolated)
    async with app.run_test(size=(120, 40)) as pilot:
        tick_only(app, "nngp")
        await set_field(pilot, app, "f-sweep-points", "3")
        await set_field(pilot, app, "f-sweep-widths", "50")
        app.set_focus(None)
        await pilot.press("w")
        await settle(pilot, app)
        got = sorted((e["N"], round(e["chi"], 6)) for e in app.session.entries)
        assert got == [(50, 1.0), (50, round(50 ** 0.5, 6)), (50, 50.0)]


@run_async
async def test_an_unreadable_session_says_why_in_the_browser_and_a_comparison(isolated):
    """The browser cut the reason at 60 characters; comparing with an unreadable file left
    an empty, untitled box."""
    from msa_tui.screens import CompareScreen
    _saved_sessions(isolated, {"good": 1.0})
    (isolated / "broken.json").write_text('{"schema": "msa-workbench-session", "entr')
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("o")
        await pilot.pause()
        browser = app.screen
        i = [p.name for p in browser.paths].index("broken.json")
        browser.query_one(DataTable).move_cursor(row=i)
        await pilot.pause()
        detail = str(browser.query_one("#browser-detail", Static).render())
        assert detail.startswith("broken.json: unreadable:") and len(detail) > 70, detail
        await pilot.press("escape")
        await pilot.pause()
        app.push_screen(CompareScreen([isolated / "good.json", isolated / "broken.json"],
                                      isolated))
        await pilot.pause()
        table = app.screen.query_one("#cmp-1", DataTable)
        assert table.border_title == "broken: cannot open" and table.row_count == 1


@run_async
async def test_two_jobs_at_once_keep_their_log_lines_apart(isolated):
    """A solve run beside a simulation: the two jobs' records interleaved in the log with
    nothing to tell them apart, both fed the live trace (residuals mixed with R̂) and
    the progress bar, and the solve's end left a status line that ignored the running
    simulation.  Records are tagged while two jobs run; the trace and the bar follow the
    latest job, then the one still running."""
    from textual.widgets import RichLog
    app = make_app(isolated)
    async with app.run_test(size=(80, 24)) as pilot:
        await start_long_simulation(pilot, app, "1000000", "500")
        tick_only(app, "nngp", "tree")
        await pilot.press("r")
        # (asyncio.sleep, not pilot.pause: a pause waits for the process's CPU to go idle,
        # seconds each while the simulation runs)
        for _ in range(600):                        # the solve ends; the simulation runs on
            await asyncio.sleep(0.05)
            if "theories" not in app.jobs:
                break
        assert "theories" not in app.jobs and "simulation" in app.jobs
        text = "\n".join(strip.text for strip in app.query_one("#log", RichLog).lines)
        assert "theory │ " in text
        assert app._live_job == "simulation"
        status = str(app.query_one("#run-status", Static).render())
        assert status.startswith("running (c cancels): simulation")
        for _ in range(600):                        # the trace holds simulation chunks only
            await asyncio.sleep(0.05)
            if app.live:
                break
        assert app.live and all(model.is_chunk(model.record_dict(r)) for r in app.live)
        await pilot.press("c")
        await settle(pilot, app)
        assert not app.jobs
